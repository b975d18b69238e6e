//! `vmic build` end to end on the shipped fixtures and on generated trees.

mod common;

use std::process::Command;

use common::*;

fn build_fixtures(out: &std::path::Path) -> std::process::Output {
    vmic([
        "build",
        path_str(&fixtures().join("images")),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(out),
        "--base-url",
        "https://images.example.org/demo",
    ])
}

#[test]
fn fixtures_build_into_a_complete_publication() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    expect_ok(&build_fixtures(&out));
    for f in [
        "catalog.json",
        "catalog.json.minisig",
        "index.html",
        "SHA256SUMS",
        "SHA256SUMS.minisig",
        "style.css",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let cat = read_json(&out.join("catalog.json"));
    assert_eq!(cat["format"], "vmic.catalog/2");
    assert_eq!(cat["serial"], 1);
    assert_eq!(cat["endorser"]["name"], "vmic demo endorser");
    assert_eq!(cat["endorser"]["vo"], "demo.vo.example.org");
    let images = cat["images"].as_array().unwrap();
    let by_id = |id: &str| {
        images
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    // Formats come from magic bytes, not names.
    assert_eq!(by_id("centos-stream-9")["format"], "qcow2");
    assert_eq!(by_id("debian-12")["format"], "vmdk");
    assert_eq!(by_id("rescue")["format"], "iso");
    assert_eq!(by_id("scratch")["format"], "raw");
    assert_eq!(by_id("tools-firmware")["path"], "images/tools/firmware.bin");
    let centos = by_id("centos-stream-9");
    assert_eq!(centos["version"], "20261101.0");
    assert_eq!(centos["min_memory_mb"], 1024);
    assert_eq!(centos["os"], "centos");
    assert_eq!(centos["tags"], serde_json::json!(["cloud-init", "minimal"]));
    assert_eq!(
        centos["urls"][0],
        "https://images.example.org/demo/images/centos-stream-9.qcow2"
    );
    // Without a sidecar the version is derived from the content.
    let scratch = by_id("scratch");
    assert_eq!(
        scratch["version"].as_str().unwrap(),
        &scratch["sha256"].as_str().unwrap()[..12]
    );
    assert_eq!(cat["revoked"][0]["id"], "centos-7");
    assert!(
        cat["revoked"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("end of life")
    );
    // Format 2: each entry names its chunk index, which holds the digests.
    let index = &centos["chunk_index"];
    assert_eq!(centos["chunking"], "fixed");
    assert!(centos.get("chunks").is_none());
    let index_file = out.join(format!("chunks/{}.json", index["sha256"].as_str().unwrap()));
    let index_bytes = std::fs::read(&index_file).unwrap();
    assert_eq!(index["size"], index_bytes.len());
    let index_json: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index_json["format"], "vmic.chunks/1");
    assert_eq!(index_json["size"], centos["size"]);
    // Images are present in the publication with the declared bytes.
    expect_ok(&verify(&out, &[]));
}

#[test]
fn sha256sum_and_stock_minisign_accept_the_output() {
    require_tool("minisign");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    expect_ok(&build_fixtures(&out));
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let mv = Command::new("minisign")
        .args(["-V", "-m", "catalog.json", "-p", path_str(&demo_pub())])
        .current_dir(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&mv.stdout);
    assert!(
        mv.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&mv.stderr)
    );
    assert!(text.contains("serial:1"), "{text}");
}

#[test]
fn index_html_shows_catalog_and_escapes_markup() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    expect_ok(&build_fixtures(&out));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        !html.contains("<script>alert"),
        "title markup was not escaped"
    );
    assert!(
        html.contains("&lt;script&gt;alert"),
        "escaped title missing"
    );
    let cat = read_json(&out.join("catalog.json"));
    assert!(html.contains(cat["endorser"]["key_id"].as_str().unwrap()));
    for image in cat["images"].as_array().unwrap() {
        assert!(html.contains(image["sha256"].as_str().unwrap()));
    }
    assert!(html.contains("minisign -Vm catalog.json"));
    assert!(html.contains("end of life"));
    for external in ["http://", "https://"] {
        for attr in ["src=\"", "href=\""] {
            let bad = format!("{attr}{external}");
            // Only image mirror URLs may be absolute links; nothing is loaded from outside.
            if attr == "src=\"" {
                assert!(!html.contains(&bad), "external resource {bad}");
            }
        }
    }
    assert!(!html.contains("<link rel=\"stylesheet\" href=\"http"));
}

#[test]
fn rebuild_increments_serial_and_chains_previous_hash() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 70_000)]);
    expect_ok(&build(tmp.path(), &[]));
    let first = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    expect_ok(&build(tmp.path(), &[]));
    let second = read_json(&tmp.path().join("out/catalog.json"));
    assert_eq!(second["serial"], 2);
    assert_eq!(
        second["previous_sha256"].as_str().unwrap(),
        vmic_format::digest::Sha256Digest::of(&first).to_hex()
    );
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

#[test]
fn unchanged_rebuild_rehashes_nothing_and_changed_file_is_rehashed() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 70_000), ("c.img", 10)]);
    let first = build(tmp.path(), &["--json"]);
    expect_ok(&first);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["hashed"], 3);
    assert!(build_cache(tmp.path()).is_file());
    let again: serde_json::Value =
        serde_json::from_slice(&build(tmp.path(), &["--json"]).stdout).unwrap();
    assert_eq!(again["hashed"], 0, "{again}");
    assert_eq!(again["reused_from_cache"], 3);
    std::fs::write(tmp.path().join("images/c.img"), b"changed!").unwrap();
    let third: serde_json::Value =
        serde_json::from_slice(&build(tmp.path(), &["--json"]).stdout).unwrap();
    assert_eq!(third["hashed"], 1, "{third}");
    let forced: serde_json::Value =
        serde_json::from_slice(&build(tmp.path(), &["--json", "--rehash"]).stdout).unwrap();
    assert_eq!(forced["hashed"], 3);
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

#[test]
fn corrupt_digest_cache_is_ignored_with_a_warning() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 20_000)]);
    expect_ok(&build(tmp.path(), &[]));
    std::fs::write(build_cache(tmp.path()), b"{not json").unwrap();
    let o = build(tmp.path(), &["--json"]);
    expect_ok(&o);
    assert!(stderr(&o).contains("digest cache"), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hashed"], 2);
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

#[test]
fn removed_image_disappears_from_publication() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 20_000)]);
    expect_ok(&build(tmp.path(), &[]));
    std::fs::remove_file(tmp.path().join("images/b.img")).unwrap();
    expect_ok(&build(tmp.path(), &[]));
    assert!(!tmp.path().join("out/images/b.img").exists());
    let cat = read_json(&tmp.path().join("out/catalog.json"));
    assert_eq!(cat["images"].as_array().unwrap().len(), 1);
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

#[test]
fn no_images_publishes_only_metadata() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &["--no-images"]));
    assert!(!tmp.path().join("out/images").exists());
    expect_ok(&verify(&tmp.path().join("out"), &["--catalog-only"]));
    expect_fail(&verify(&tmp.path().join("out"), &[]), 1, &["missing"]);
}

#[test]
fn expires_option_sets_validity() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &["--expires", "12h"]));
    let cat = read_json(&tmp.path().join("out/catalog.json"));
    let issued: jiff::Timestamp = cat["issued"].as_str().unwrap().parse().unwrap();
    let expires: jiff::Timestamp = cat["expires"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.as_second() - issued.as_second(), 12 * 3600);
    expect_fail(
        &build(tmp.path(), &["--expires", "12 hours"]),
        2,
        &["invalid duration"],
    );
}

// ---- bad input: message, exit code, nothing half-written ----

fn build_bad(case: &str) -> (tempfile::TempDir, std::process::Output) {
    let tmp = tempfile::tempdir().unwrap();
    let o = vmic([
        "build",
        path_str(&fixtures().join("bad").join(case)),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(&tmp.path().join("out")),
    ]);
    (tmp, o)
}

#[test]
fn malformed_inputs_are_refused_naming_file_and_line() {
    let cases: &[(&str, &[&str])] = &[
        ("empty", &["no images found"]),
        ("catalog-toml-syntax", &["catalog.toml", "line 3"]),
        (
            "catalog-toml-unknown-key",
            &["catalog.toml", "line 5", "expire"],
        ),
        (
            "sidecar-unknown-key",
            &["disk.img.toml", "line 3", "min_memroy_mb"],
        ),
        ("sidecar-wrong-type", &["disk.img.toml", "line 2"]),
        ("sidecar-orphan", &["other.img.toml", "has no image"]),
        ("duplicate-id", &["same@1", "listed twice"]),
        ("bad-id", &["disk.img.toml", "../../etc/passwd"]),
        ("revoke-published", &["both published and revoked"]),
    ];
    for (case, needles) in cases {
        let (tmp, o) = build_bad(case);
        expect_fail(&o, 2, needles);
        assert!(
            !tmp.path().join("out").exists(),
            "{case}: output directory was left behind"
        );
    }
}

#[test]
fn failed_rebuild_keeps_the_previous_publication() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &[]));
    let before = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    std::fs::write(tmp.path().join("images/a.raw.toml"), "idd = \"x\"\n").unwrap();
    expect_fail(&build(tmp.path(), &[]), 2, &["a.raw.toml", "idd"]);
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        before
    );
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

#[test]
fn missing_images_dir_and_nested_out_dir_are_refused() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    let o = vmic([
        "build",
        path_str(&tmp.path().join("nope")),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(&tmp.path().join("out")),
    ]);
    expect_fail(&o, 2, &["nope"]);
    let inside = tmp.path().join("images/sub/out");
    let o = vmic([
        "build",
        path_str(&tmp.path().join("images")),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(&inside),
    ]);
    expect_fail(&o, 2, &["inside the images directory"]);
    assert!(!inside.exists() && !tmp.path().join("images/sub").exists());
    // The reverse nesting would make the stale-image cleanup delete sources.
    let o = vmic([
        "build",
        path_str(&tmp.path().join("images")),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(tmp.path()),
    ]);
    expect_fail(&o, 2, &["inside the output directory"]);
    assert!(tmp.path().join("images/a.raw").exists());
}

#[test]
fn unreadable_and_special_files_are_refused() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    std::os::unix::fs::symlink(
        "/nonexistent/target",
        tmp.path().join("images/dangling.img"),
    )
    .unwrap();
    expect_fail(&build(tmp.path(), &[]), 2, &["dangling.img"]);
    std::fs::remove_file(tmp.path().join("images/dangling.img")).unwrap();
    let fifo = tmp.path().join("images/pipe.img");
    mkfifo(&fifo);
    expect_fail(
        &build(tmp.path(), &[]),
        2,
        &["pipe.img", "not a regular file"],
    );
    std::fs::remove_file(&fifo).unwrap();
    // Permission bits do not stop root, so only check them as another user.
    if unsafe { libc::geteuid() } != 0 {
        let p = tmp.path().join("images/a.raw");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        expect_fail(&build(tmp.path(), &[]), 2, &["a.raw", "ermission denied"]);
    }
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn wrong_or_missing_key_is_refused() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    let truncated = tmp.path().join("trunc.key");
    let text = std::fs::read_to_string(demo_key()).unwrap();
    std::fs::write(&truncated, &text[..text.len() - 40]).unwrap();
    let o = build_with_key(tmp.path(), &truncated);
    expect_fail(&o, 2, &["trunc.key", "corrupt or truncated"]);
    let garbage = tmp.path().join("garbage.key");
    std::fs::write(&garbage, "untrusted comment: x\nnot base64 at all!\n").unwrap();
    let o = build_with_key(tmp.path(), &garbage);
    expect_fail(&o, 2, &["garbage.key"]);
    // A key whose checksum no longer matches (one flipped byte in the secret).
    let mut bytes = base64_decode(text.lines().nth(1).unwrap());
    bytes[100] ^= 1;
    let flipped = tmp.path().join("flipped.key");
    std::fs::write(
        &flipped,
        format!("untrusted comment: x\n{}\n", base64_encode(&bytes)),
    )
    .unwrap();
    let o = build_with_key(tmp.path(), &flipped);
    expect_fail(&o, 2, &["flipped.key", "corrupt"]);
    assert!(!tmp.path().join("out").exists());
}

/// `vmic build DIR/images --key KEY --out DIR/out`.
fn build_with_key(dir: &std::path::Path, key: &std::path::Path) -> std::process::Output {
    vmic([
        "build",
        path_str(&dir.join("images")),
        "--key",
        path_str(key),
        "--out",
        path_str(&dir.join("out")),
    ])
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn jobs_zero_is_a_usage_error() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_fail(&build(tmp.path(), &["--jobs", "0"]), 2, &["--jobs"]);
}

#[test]
fn image_changing_while_hashed_fails_with_retryable_error() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = image_tree(&[("growing.raw", 32 << 20)]);
    let path = tmp.path().join("images/growing.raw");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"x").unwrap();
            }
        })
    };
    let o = build(tmp.path(), &[]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    expect_fail(&o, 3, &["growing.raw", "changed"]);
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn digest_cache_from_another_images_dir_is_ignored() {
    let one = image_tree(&[("a.raw", 4096)]);
    let two = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(one.path(), &[]));
    expect_ok(&build(two.path(), &[]));
    std::fs::copy(build_cache(one.path()), build_cache(two.path())).unwrap();
    let o = build(two.path(), &["--json"]);
    expect_ok(&o);
    assert!(
        stderr(&o).contains("another images directory"),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hashed"], 1);
}

/// Whoever can write the web root replaces an image and writes its new hash
/// into SHA256SUMS: the stock-tools recipe of the README (`minisign -Vm
/// SHA256SUMS`, then `sha256sum -c`) must catch it.
#[test]
fn a_tampered_image_with_rewritten_sha256sums_fails_the_stock_tools_recipe() {
    require_tool("minisign");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    expect_ok(&build_fixtures(&out));
    let stock_verify = || {
        Command::new("minisign")
            .args(["-V", "-m", "SHA256SUMS", "-p", path_str(&demo_pub())])
            .current_dir(&out)
            .output()
            .unwrap()
    };
    let ok = stock_verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("file:SHA256SUMS"));
    // Tamper: new bytes for one image, its new hash in SHA256SUMS.
    let victim = out.join("images/scratch.raw");
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, b"evil").unwrap();
    let evil_hash = vmic_format::digest::Sha256Digest::of(b"evil").to_hex();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let sums: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("images/scratch.raw") {
                format!("{evil_hash}  images/scratch.raw\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(out.join("SHA256SUMS"), sums).unwrap();
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum alone is fooled, as expected"
    );
    assert!(
        !stock_verify().status.success(),
        "minisign must refuse the rewritten SHA256SUMS"
    );
}

/// An image that is a symlink is published as the file it points to, so the
/// publication verifies; it is never published as a link.
#[test]
fn a_symlinked_image_is_published_as_the_file_it_points_to() {
    let tmp = image_tree(&[("real.raw", 10_000)]);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(
        tmp.path().join("images/real.raw"),
        elsewhere.join("real.raw"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../elsewhere/real.raw", tmp.path().join("images/link.raw"))
        .unwrap();
    expect_ok(&build(tmp.path(), &[]));
    let published = tmp.path().join("out/images/link.raw");
    assert!(std::fs::symlink_metadata(&published).unwrap().is_file());
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

/// Someone who can write the web root replaces OUT_DIR/images with a link
/// to another directory: the build refuses before writing anything.
#[test]
fn a_planted_images_symlink_in_the_output_is_refused() {
    let tmp = image_tree(&[("a.raw", 1000)]);
    expect_ok(&build(tmp.path(), &[]));
    let target = tmp.path().join("victim");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"mine").unwrap();
    let images = tmp.path().join("out/images");
    std::fs::remove_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&target, &images).unwrap();
    let before = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    expect_fail(&build(tmp.path(), &[]), 2, &["symbolic link", "images"]);
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        before
    );
}

/// An id@version names one set of bytes: a routine rebuild after the bytes
/// changed (by accident, or by someone writing the images directory) must
/// not silently sign them under the version sites already imported.
#[test]
fn changed_bytes_under_a_published_version_are_not_signed_silently() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    std::fs::write(tmp.path().join("images/a.raw.toml"), "version = \"1\"\n").unwrap();
    expect_ok(&build(tmp.path(), &[]));
    let before = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    std::fs::write(tmp.path().join("images/a.raw"), pattern(4096, 99)).unwrap();
    expect_fail(
        &build(tmp.path(), &[]),
        2,
        &["a@1", "already published", "--allow-rewrite"],
    );
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        before
    );
    let o = build(tmp.path(), &["--allow-rewrite"]);
    expect_ok(&o);
    assert!(stderr(&o).contains("REWRITE: a@1"), "{}", stderr(&o));
    // A new version is the normal way.
    std::fs::write(tmp.path().join("images/a.raw"), pattern(4096, 100)).unwrap();
    std::fs::write(tmp.path().join("images/a.raw.toml"), "version = \"2\"\n").unwrap();
    expect_ok(&build(tmp.path(), &[]));
}

/// The digest cache of builds into `dir/out`, in the test's state root.
fn build_cache(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("out").canonicalize().unwrap();
    let id = vmic_format::digest::Sha256Digest::of(out.as_os_str().as_encoded_bytes()).to_hex();
    state_home()
        .join("vmic/build")
        .join(&id[..16])
        .join("cache.json")
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = common::harness::files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

/// Everything in OUT_DIR gets uploaded: the digest cache (inodes, devices,
/// nanosecond times) and the build lock (a PID) must not be there.
#[test]
fn internal_state_leak_the_publication_holds_no_cache_or_lock() {
    let tmp = image_tree(&[("a.raw", 4096), ("sub/b.img", 5000)]);
    expect_ok(&build(tmp.path(), &[]));
    let published = files_under(&tmp.path().join("out"));
    let hidden: Vec<&String> = published
        .iter()
        .filter(|n| n.split('/').any(|part| part.starts_with('.')))
        .collect();
    assert!(hidden.is_empty(), "{published:?}");
    assert!(published.contains(&"catalog.json".to_string()));
    assert!(published.contains(&"images/sub/b.img".to_string()));
    assert!(build_cache(tmp.path()).is_file());
}

/// A publication made by an older version has the cache and lock in
/// OUT_DIR: the next build takes the cache over (nothing re-hashed) and
/// removes both from the publication, saying so.
#[test]
fn internal_state_leak_files_left_by_older_versions_are_moved_out() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 5000)]);
    expect_ok(&build(tmp.path(), &[]));
    let out = tmp.path().join("out");
    std::fs::rename(build_cache(tmp.path()), out.join(".vmic-cache.json")).unwrap();
    std::fs::write(out.join(".vmic-build.lock"), "1234\n").unwrap();
    let o = build(tmp.path(), &["--json"]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hashed"], 0, "{report}");
    assert!(!out.join(".vmic-cache.json").exists());
    assert!(!out.join(".vmic-build.lock").exists());
    assert!(stderr(&o).contains(".vmic-cache.json"), "{}", stderr(&o));
    assert!(build_cache(tmp.path()).is_file());
}

/// Images are copied into the web root by default: a write there reaches
/// neither the source nor the next signature, and the next build puts the
/// source's bytes back and says so.
#[test]
fn web_root_write_cannot_change_what_gets_signed() {
    use std::os::unix::fs::MetadataExt;
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &[]));
    let source = tmp.path().join("images/a.raw");
    let published = tmp.path().join("out/images/a.raw");
    let original = std::fs::read(&source).unwrap();
    assert_ne!(
        std::fs::metadata(&source).unwrap().ino(),
        std::fs::metadata(&published).unwrap().ino()
    );
    let catalog = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    // Overwrite in place, keeping size and modification time.
    let mtime = std::fs::metadata(&published).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&published)
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"EVIL", 0).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_eq!(std::fs::read(&source).unwrap(), original);
    let o = build(tmp.path(), &[]);
    expect_ok(&o);
    assert!(
        stderr(&o).contains("changed in the publication"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&published).unwrap(), original);
    // Same bytes, same version: the catalog lists the same digest.
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/catalog.json")).unwrap())
            .unwrap();
    let before: serde_json::Value = serde_json::from_slice(&catalog).unwrap();
    assert_eq!(again["images"][0]["sha256"], before["images"][0]["sha256"]);
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

/// `--link-images` shares the inode (no extra space); a write through the
/// web root then changes the source, and the next routine build refuses to
/// sign those bytes under the published version.
#[test]
fn web_root_write_through_hard_links_is_refused_at_the_next_build() {
    use std::os::unix::fs::MetadataExt;
    let tmp = image_tree(&[("a.raw", 4096)]);
    std::fs::write(tmp.path().join("images/a.raw.toml"), "version = \"1\"\n").unwrap();
    expect_ok(&build(tmp.path(), &["--link-images"]));
    let source = tmp.path().join("images/a.raw");
    let published = tmp.path().join("out/images/a.raw");
    assert_eq!(
        std::fs::metadata(&source).unwrap().ino(),
        std::fs::metadata(&published).unwrap().ino()
    );
    let catalog = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&published)
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"EVIL", 0).unwrap();
    drop(file);
    expect_fail(
        &build(tmp.path(), &["--link-images"]),
        2,
        &["a@1", "already published", "--allow-rewrite"],
    );
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        catalog
    );
}

/// Moving from hard links (or an older version's default) to copies
/// replaces every link with an independent copy.
#[test]
fn copy_mode_replaces_hard_links_left_by_an_earlier_build() {
    use std::os::unix::fs::MetadataExt;
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &["--link-images"]));
    expect_ok(&build(tmp.path(), &[]));
    let source = std::fs::metadata(tmp.path().join("images/a.raw")).unwrap();
    let published = std::fs::metadata(tmp.path().join("out/images/a.raw")).unwrap();
    assert_ne!(source.ino(), published.ino());
    assert_eq!(source.nlink(), 1);
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

/// The build lock lives in the build state directory; a symlink planted
/// there as the lock is not followed (its target would get a PID), and a
/// FIFO does not block the build.
#[test]
fn a_symlink_or_fifo_planted_as_the_build_lock_is_refused() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &[]));
    let lock = build_cache(tmp.path()).with_file_name("build.lock");
    let victim = tmp.path().join("victim.conf");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let catalog = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    expect_fail(&build(tmp.path(), &[]), 1, &["lock file", "symbolic link"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    std::fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    expect_fail(
        &build(tmp.path(), &[]),
        1,
        &["lock file", "not a regular file"],
    );
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        catalog
    );
}

fn resign(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "resign".to_string(),
        dir.join("out").display().to_string(),
        "--key".into(),
        demo_key().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    vmic(args)
}

/// `vmic resign` extends validity without re-hashing: the same images, the
/// next serial, a new expiry, the chain kept, every stock check passing.
#[test]
fn resign_extends_validity_with_the_next_serial_and_the_same_content() {
    let tmp = image_tree(&[("a.raw", 4096), ("b.img", 70_000)]);
    expect_ok(&build(tmp.path(), &["--expires", "1h"]));
    let out = tmp.path().join("out");
    let before = std::fs::read(out.join("catalog.json")).unwrap();
    let o = resign(tmp.path(), &["--expires", "90d", "--json"]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            report["previous_serial"].as_u64(),
            report["serial"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let old: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let new: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(new["images"], old["images"]);
    assert_eq!(new["revoked"], old["revoked"]);
    assert_eq!(
        new["previous_sha256"],
        vmic_format::digest::Sha256Digest::of(&before)
            .to_hex()
            .as_str()
    );
    let expires: jiff::Timestamp = new["expires"].as_str().unwrap().parse().unwrap();
    assert!(expires > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 89));
    expect_ok(&verify(&out, &[]));
    // The next build carries on from the re-signed catalog.
    let o = build(tmp.path(), &["--json"]);
    expect_ok(&o);
    let built: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(built["serial"], 3);
}

/// A catalog changed in the web root must not get a fresh signature: resign
/// verifies the current catalog with the key before signing it again.
#[test]
fn resign_refuses_a_catalog_tampered_in_the_web_root() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &[]));
    let path = tmp.path().join("out/catalog.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["images"][0]["urls"] = serde_json::json!(["https://evil.example.org/a.raw"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let tampered = std::fs::read(&path).unwrap();
    expect_fail(
        &resign(tmp.path(), &[]),
        1,
        &["catalog.json", "refusing to re-sign"],
    );
    assert_eq!(std::fs::read(&path).unwrap(), tampered);
    // Nor does another key re-sign what the demo key signed.
    expect_ok(&build(tmp.path(), &[]));
    let other = tmp.path().join("other.key");
    expect_ok(&vmic(["keygen", "-W", "-q", "--out", path_str(&other)]));
    let signed = std::fs::read(&path).unwrap();
    expect_fail(
        &vmic([
            "resign",
            path_str(&tmp.path().join("out")),
            "--key",
            path_str(&other),
        ]),
        1,
        &["refusing to re-sign"],
    );
    assert_eq!(std::fs::read(&path).unwrap(), signed);
}

/// `kill -9` in the middle of a build (here while it hashes a new image):
/// the publication is still the previous one, whole and verifiable, the
/// lock does not outlive the process, and the next build completes.
#[test]
fn kill_9_during_a_build_leaves_the_previous_publication_whole() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    expect_ok(&build(tmp.path(), &[]));
    let catalog = std::fs::read(tmp.path().join("out/catalog.json")).unwrap();
    // A sparse 1 GiB image: instant to make, and on one worker far longer
    // to hash than the 100 ms the build is given (if it finished, the
    // catalog below would have changed and the test would fail).
    std::fs::File::create(tmp.path().join("images/big.raw"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let mut child = vmic_command()
        .args([
            "build",
            path_str(&tmp.path().join("images")),
            "--key",
            path_str(&demo_key()),
            "--out",
            path_str(&tmp.path().join("out")),
            "--jobs",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read(tmp.path().join("out/catalog.json")).unwrap(),
        catalog
    );
    expect_ok(&verify(&tmp.path().join("out"), &[]));
    // The next build is not stopped by the dead one's lock.
    std::fs::remove_file(tmp.path().join("images/big.raw")).unwrap();
    std::fs::write(tmp.path().join("images/b.raw"), pattern(5000, 8)).unwrap();
    let o = build(tmp.path(), &["--json"]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (report["images"].as_u64(), report["serial"].as_u64()),
        (Some(2), Some(2))
    );
    expect_ok(&verify(&tmp.path().join("out"), &[]));
}

/// `OUT_DIR` is a web root others may write: a symlink planted where a
/// rotation statement would be is refused, not followed, when building.
#[test]
fn a_symlink_planted_as_a_rotation_statement_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    expect_ok(&build_fixtures(&out));
    let elsewhere = tmp.path().join("elsewhere.json");
    std::fs::write(&elsewhere, b"{}").unwrap();
    std::fs::create_dir_all(out.join("keys")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("keys/rotate-FAF749876507E955.json")).unwrap();
    let o = build_fixtures(&out);
    expect_fail(&o, 1, &["rotate-FAF749876507E955.json", "symbolic link"]);
}
