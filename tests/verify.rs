//! `vmic verify`: tampering, forgery, expiry and hostile-but-signed catalogs.

mod common;

use std::path::Path;

use common::*;

/// A published tree with one multi-chunk image (64 KiB chunks) and one small.
fn published() -> tempfile::TempDir {
    let tmp = image_tree(&[("big.raw", 10 * 65536 + 123), ("small.img", 1000)]);
    expect_ok(&build(tmp.path(), &["--chunk-size", "64K"]));
    tmp
}

fn out(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("out")
}

fn catalog_value(tmp: &tempfile::TempDir) -> serde_json::Value {
    read_json(&out(tmp).join("catalog.json"))
}

fn write_value(out: &Path, value: &serde_json::Value) {
    write_signed(
        out,
        &serde_json::to_vec_pretty(value).unwrap(),
        "hand-made test catalog",
    );
}

#[test]
fn intact_publication_verifies_by_dir_file_and_url() {
    let tmp = published();
    let o = verify(&out(&tmp), &[]);
    expect_ok(&o);
    assert!(stdout(&o).contains("all 2 images verified"));
    expect_ok(&verify(&out(&tmp).join("catalog.json"), &[]));
    let url = format!("file://{}", out(&tmp).display());
    expect_ok(&vmic(["verify", &url, "--pubkey", path_str(&demo_pub())]));
}

#[test]
fn json_report_is_one_document() {
    let tmp = published();
    let o = verify(&out(&tmp), &["--json"]);
    expect_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["serial"], 1);
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn catalog_with_one_byte_changed_is_refused() {
    let tmp = published();
    let path = out(&tmp).join("catalog.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[at] = b'2';
    std::fs::write(&path, &bytes).unwrap();
    // The plain entry point is checked even though the generation its
    // signature names is intact.
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &["catalog.json", "is not the catalog its signature names"],
    );
    // Also with --json: still exit 1, error in the document.
    let o = verify(&out(&tmp), &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn signature_from_another_key_names_both_keys() {
    let tmp = published();
    let other = vmic_format::minisign::SecretKey::generate().unwrap();
    let bytes = std::fs::read(out(&tmp).join("catalog.json")).unwrap();
    let sig = other.sign(&bytes, "x", "y");
    std::fs::write(out(&tmp).join("catalog.json.minisig"), sig.to_file_string()).unwrap();
    let demo_id = demo_secret().key_id.to_string();
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &[&other.key_id.to_string(), &demo_id],
    );
}

#[test]
fn truncated_or_missing_signature_is_refused() {
    let tmp = published();
    let sig_path = out(&tmp).join("catalog.json.minisig");
    let text = std::fs::read_to_string(&sig_path).unwrap();
    for cut in [text.len() / 2, text.lines().next().unwrap().len() + 1, 10] {
        std::fs::write(&sig_path, &text[..cut]).unwrap();
        expect_fail(&verify(&out(&tmp), &[]), 1, &["signature"]);
    }
    std::fs::remove_file(&sig_path).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 1, &["no signature"]);
}

#[test]
fn altered_trusted_comment_is_refused() {
    let tmp = published();
    let sig_path = out(&tmp).join("catalog.json.minisig");
    let text = std::fs::read_to_string(&sig_path).unwrap();
    std::fs::write(&sig_path, text.replace("serial:1", "serial:9")).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 1, &["trusted comment", "altered"]);
}

#[test]
fn trusted_comment_must_agree_with_catalog() {
    let tmp = published();
    let bytes = std::fs::read(out(&tmp).join("catalog.json")).unwrap();
    write_signed(&out(&tmp), &bytes, "serial:7");
    expect_fail(&verify(&out(&tmp), &[]), 1, &["serial 7"]);
}

fn corrupt_image(tmp: &tempfile::TempDir, edit: impl FnOnce(&mut Vec<u8>)) {
    // Images are hard links to the sources: replace the published file.
    let p = out(tmp).join("images/big.raw");
    let mut bytes = std::fs::read(&p).unwrap();
    edit(&mut bytes);
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
}

#[test]
fn flipped_byte_is_reported_with_chunk_range_and_digests() {
    let tmp = published();
    corrupt_image(&tmp, |b| b[3 * 65536 + 5] ^= 0x40);
    let o = verify(&out(&tmp), &[]);
    expect_fail(
        &o,
        1,
        &["big@", "chunk 3 (bytes 196608..262144)", "expected"],
    );
    assert!(
        stdout(&o).contains("ok      small@"),
        "good image should still be listed"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&verify(&out(&tmp), &["--json"]).stdout).unwrap();
    let big = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "big")
        .unwrap();
    assert_eq!(big["problems"][0]["problem"], "chunk_mismatch");
    assert_eq!(big["problems"][0]["index"], 3);
    assert_eq!(big["problems"][0]["start"], 196608);
}

#[test]
fn truncated_extended_and_missing_images_are_reported() {
    let tmp = published();
    corrupt_image(&tmp, |b| b.truncate(b.len() - 200_000));
    expect_fail(&verify(&out(&tmp), &[]), 1, &["size is", "truncated"]);

    let tmp = published();
    corrupt_image(&tmp, |b| b.extend_from_slice(b"appended"));
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &["size is 655483 bytes, expected 655483"
            .replace("655483 bytes", "655491 bytes")
            .as_str()],
    );

    let tmp = published();
    std::fs::remove_file(out(&tmp).join("images/small.img")).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 1, &["small@", "missing"]);
}

#[test]
fn expired_catalog_is_refused_unless_loudly_allowed() {
    let tmp = published();
    let mut v = catalog_value(&tmp);
    v["issued"] = "2020-01-01T00:00:00Z".into();
    v["expires"] = "2020-01-31T00:00:00Z".into();
    write_value(&out(&tmp), &v);
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &["expired at 2020-01-31T00:00:00Z"],
    );
    let o = verify(&out(&tmp), &["--allow-expired"]);
    expect_ok(&o);
    assert!(stderr(&o).contains("CATALOG EXPIRED"), "{}", stderr(&o));
    let j: serde_json::Value =
        serde_json::from_slice(&verify(&out(&tmp), &["--allow-expired", "--json"]).stdout).unwrap();
    assert_eq!(j["expired"], true);
}

#[test]
fn correctly_signed_hostile_catalogs_are_refused() {
    // A file outside the publication that a hostile path would point at.
    let tmp = published();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, b"do not read").unwrap();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "'..'",
            Box::new(|v| v["images"][0]["path"] = "../secret.txt".into()),
        ),
        (
            "is absolute",
            Box::new(|v| v["images"][0]["path"] = "/etc/passwd".into()),
        ),
        (
            "NUL",
            Box::new(|v| v["images"][0]["path"] = "images/a\u{0}b".into()),
        ),
        (
            "backslash",
            Box::new(|v| v["images"][0]["path"] = "images\\..\\..\\x".into()),
        ),
        (
            "listed twice",
            Box::new(|v| {
                let mut dup = v["images"][0].clone();
                dup["path"] = "images/other".into();
                v["images"].as_array_mut().unwrap().push(dup);
            }),
        ),
        (
            "absurd",
            Box::new(|v| v["images"][0]["size"] = serde_json::json!(1u64 << 62)),
        ),
        (
            "major version 3",
            Box::new(|v| v["format"] = "vmic.catalog/3".into()),
        ),
        (
            "not a vmic catalog",
            Box::new(|v| v["format"] = "something-else".into()),
        ),
        (
            "may contain only",
            Box::new(|v| v["images"][0]["id"] = "../../x".into()),
        ),
        // Version 1, inline chunks: one digest short.
        (
            "chunk digests",
            Box::new(|v| {
                v["format"] = "vmic.catalog/1".into();
                let image = v["images"][0].as_object_mut().unwrap();
                image.remove("chunk_index");
                image.insert("chunks".into(), serde_json::json!([]));
            }),
        ),
        // Version 2: a chunk index longer than its chunks could need (a
        // reader would otherwise be made to read it), both forms at once,
        // inline chunks in a version 2 catalog, an unknown field shape.
        (
            "the most",
            Box::new(|v| v["images"][0]["chunk_index"]["size"] = serde_json::json!(1u64 << 40)),
        ),
        (
            "both",
            Box::new(|v| v["images"][0]["chunks"] = serde_json::json!([])),
        ),
        (
            "names a chunk_index",
            Box::new(|v| {
                let image = v["images"][0].as_object_mut().unwrap();
                let (size, chunk) = (
                    image["size"].as_u64().unwrap(),
                    image["chunk_size"].as_u64().unwrap(),
                );
                let some = image["sha256"].clone();
                image.remove("chunk_index");
                image.insert(
                    "chunks".into(),
                    serde_json::json!(vec![some; size.div_ceil(chunk) as usize]),
                );
            }),
        ),
        (
            "neither chunks nor a chunk_index",
            Box::new(|v| {
                v["images"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("chunk_index");
            }),
        ),
        // A serial SQLite could not store exactly would defeat rollback memory.
        (
            "outside 1..=9223372036854775807",
            Box::new(|v| v["serial"] = serde_json::json!(1u64 << 63)),
        ),
        (
            "not a vmic catalog",
            Box::new(|v| v["format"] = "vmic.catalog/+1".into()),
        ),
        (
            "not a vmic catalog",
            Box::new(|v| v["format"] = "vmic.catalog/01".into()),
        ),
        (
            "RFC 3339",
            Box::new(|v| v["expires"] = "2999-01-01T00:00:00+05:00".into()),
        ),
        // Terminal and hook-variable injection through metadata.
        (
            "control character U+001B",
            Box::new(|v| v["images"][0]["title"] = "x\u{1b}]0;owned\u{7}".into()),
        ),
        (
            "control character U+000A",
            Box::new(
                |v| v["revoked"] = serde_json::json!([{"id": "z", "reason": "a\nVMIC_EVENT=import", "revoked_at": "2026-01-01T00:00:00Z"}]),
            ),
        ),
        (
            "not an http(s) URL",
            Box::new(|v| v["images"][0]["urls"] = serde_json::json!(["file:///etc/passwd"])),
        ),
    ];
    let original = catalog_value(&tmp);
    for (needle, mutate) in cases {
        let mut v = original.clone();
        mutate(&mut v);
        write_value(&out(&tmp), &v);
        expect_fail(&verify(&out(&tmp), &[]), 1, &[needle]);
    }
    for (needle, bytes) in [
        ("invalid", b"{\"format\": \"vmic.catalog/1\", ".to_vec()),
        ("invalid", b"[1,2,3]".to_vec()),
        ("invalid", vec![0xff, 0xfe, 0x00]),
    ] {
        write_signed(&out(&tmp), &bytes, "x");
        expect_fail(&verify(&out(&tmp), &[]), 1, &[needle]);
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"do not read");
}

#[test]
fn symlink_planted_in_publication_is_not_followed() {
    let tmp = published();
    let outside = tmp.path().join("outside.raw");
    std::fs::copy(out(&tmp).join("images/small.img"), &outside).unwrap();
    std::fs::remove_file(out(&tmp).join("images/small.img")).unwrap();
    std::os::unix::fs::symlink(&outside, out(&tmp).join("images/small.img")).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 1, &["small@", "outside"]);
}

#[test]
fn oversized_catalog_is_refused() {
    let tmp = published();
    expect_fail(
        &verify(&out(&tmp), &["--max-catalog-size", "100"]),
        1,
        &["larger than the 100-byte limit"],
    );
}

#[test]
fn jobs_option_controls_the_worker_pool() {
    let tmp = image_tree(&[("big.raw", 64 * 65536)]);
    expect_ok(&build(tmp.path(), &["--chunk-size", "64K"]));
    let one: serde_json::Value =
        serde_json::from_slice(&verify(&out(&tmp), &["--json", "--jobs", "1"]).stdout).unwrap();
    assert_eq!(one["hashing"]["jobs"], 1);
    assert_eq!(one["hashing"]["threads_used"], 1);
    // Never more threads than asked for; and more than one at work, which is
    // a matter of scheduling: on a machine busy with other work one worker
    // can take every chunk, so a few attempts are allowed.
    let mut used_per_run = Vec::new();
    for _ in 0..5 {
        let four: serde_json::Value =
            serde_json::from_slice(&verify(&out(&tmp), &["--json", "--jobs", "4"]).stdout).unwrap();
        assert_eq!(four["hashing"]["jobs"], 4);
        let used = four["hashing"]["threads_used"].as_u64().unwrap();
        assert!(used <= 4, "64 chunks on 4 workers used {used} threads");
        used_per_run.push(used);
        if used >= 2 {
            break;
        }
    }
    assert!(
        used_per_run.iter().any(|&u| u >= 2),
        "64 chunks on 4 workers never used more than one thread: {used_per_run:?}"
    );
    expect_fail(&verify(&out(&tmp), &["--jobs", "0"]), 2, &["--jobs"]);
}

#[test]
fn missing_source_and_bad_pubkey_are_input_errors() {
    let tmp = published();
    expect_fail(&verify(&tmp.path().join("nowhere"), &[]), 2, &["nowhere"]);
    let bad = tmp.path().join("bad.pub");
    std::fs::write(&bad, "untrusted comment: x\nRWQ=\n").unwrap();
    let o = vmic(["verify", path_str(&out(&tmp)), "--pubkey", path_str(&bad)]);
    expect_fail(&o, 2, &["bad.pub"]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = published();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vmic"))
        .args(["verify", "--json", "--pubkey"])
        .arg(demo_pub())
        .arg(out(&tmp))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before vmic prints anything (`| head -0`).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        o.status
    );
}

/// Text a signed catalog carries reaches the terminal escaped: a bidi
/// override in the endorser's name cannot reorder what the operator reads.
#[test]
fn catalog_text_reaches_the_terminal_escaped() {
    let tmp = published();
    let mut v = catalog_value(&tmp);
    v["endorser"]["name"] = "Good \u{202e}gnp.exe".into();
    write_value(&out(&tmp), &v);
    let o = verify(&out(&tmp), &[]);
    expect_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("Good \\u{202e}gnp.exe"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
}

#[test]
fn a_tampered_generation_is_refused() {
    let tmp = published();
    let named = generation(&out(&tmp));
    let mut bytes = std::fs::read(&named).unwrap();
    let at = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[at] = b'2';
    std::fs::write(&named, &bytes).unwrap();
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &["catalogs/", "does not match the signed data"],
    );
}

/// Catalog format 2: the chunk index is authenticated by the digest its
/// signed entry names. An edited index, a missing one, and one replaced by
/// a planted symlink are each reported for that image, which is not
/// checked against anything else.
#[test]
fn a_tampered_or_missing_chunk_index_is_reported_for_its_image() {
    let tmp = published();
    let v = catalog_value(&tmp);
    let index_of = |n: usize| {
        out(&tmp).join(format!(
            "chunks/{}.json",
            v["images"][n]["chunk_index"]["sha256"].as_str().unwrap()
        ))
    };
    let first = index_of(0);
    let original = std::fs::read(&first).unwrap();
    let mut edited = original.clone();
    let n = edited.len() - 5;
    edited[n] ^= 1;
    std::fs::write(&first, &edited).unwrap();
    let label = format!(
        "{}@{}",
        v["images"][0]["id"].as_str().unwrap(),
        v["images"][0]["version"].as_str().unwrap()
    );
    expect_fail(
        &verify(&out(&tmp), &[]),
        1,
        &[&label, "chunk index", "SHA-256"],
    );
    std::fs::remove_file(&first).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 3, &[&label, "chunk index"]);
    let elsewhere = tmp.path().join("planted.json");
    std::fs::write(&elsewhere, &original).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &first).unwrap();
    expect_fail(&verify(&out(&tmp), &[]), 1, &[&label, "refusing to follow"]);
    std::fs::remove_file(&first).unwrap();
    std::fs::write(&first, &original).unwrap();
    expect_ok(&verify(&out(&tmp), &[]));
}
