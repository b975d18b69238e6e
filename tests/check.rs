//! `vmic check FILE...`: golden-image attestation (the OpenStack trusted
//! images seed). Exit 0 only if every file is byte-identical to an
//! approved, currently valid image, of the site or of a catalog given on
//! the command line (here served by nginx); otherwise the verdict says what
//! is wrong: unknown, revoked, size differs, which chunks differ.

mod common;

#[path = "common/nginx.rs"]
mod nginx;

use std::path::{Path, PathBuf};

use common::harness::Harness;
use common::*;

/// A site that imported `a.img` (3 chunks of 64 KiB and a bit) and
/// `b.img`, then saw `b` revoked.
fn site() -> Harness {
    let h = Harness::new(&[("a.img", 200_000), ("b.img", 70_000)]);
    expect_ok(&build(h.tmp.path(), &["--chunk-size", "64K"]));
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    expect_ok(&h.run(&["sync"]));
    h
}

/// A copy of `images/NAME` under `as_name` in a user's downloads.
fn download(h: &Harness, name: &str, as_name: &str) -> PathBuf {
    let dir = h.path("Downloads");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(as_name);
    std::fs::copy(h.path("images").join(name), &copy).unwrap();
    copy
}

fn verdicts(o: &std::process::Output) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
        .as_array()
        .unwrap()
        .clone()
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_approved_image_under_another_name_checks_and_is_named() {
    let h = site();
    let copy = download(&h, "a.img", "golden.qcow2");
    let o = h.run(&["check", path_str(&copy)]);
    expect_ok(&o);
    assert!(stdout(&o).contains("is demo/a@"), "{}", stdout(&o));
    let o = h.run(&["check", path_str(&copy), "--json"]);
    let v = verdicts(&o);
    assert_eq!(v[0]["finding"], "approved");
    assert_eq!(v[0]["image"]["id"], "a");
    assert_eq!(v[0]["image"]["size"], 200_000);
}

#[test]
fn a_tampered_image_fails_naming_the_chunks_that_differ() {
    let h = site();
    let copy = download(&h, "a.img", "a.img");
    flip(&copy, 70_000);
    let o = h.run(&["check", path_str(&copy)]);
    expect_fail(
        &o,
        1,
        &[
            "same size as demo/a@",
            "1 chunk(s) differ",
            "chunk 1 (bytes 65536..131072)",
        ],
    );
    let v = verdicts(&h.run(&["check", path_str(&copy), "--json"]));
    assert_eq!(v[0]["finding"], "chunks-differ");
    assert_eq!(v[0]["problems"][0]["index"], 1);
}

#[test]
fn a_revoked_image_truncated_copy_and_unknown_file_each_fail_with_their_reason() {
    let h = site();
    std::fs::write(
        h.path("images/catalog.toml"),
        "[[revoke]]\nid = \"b\"\nreason = \"CVE-2026-0001 in the kernel\"\n",
    )
    .unwrap();
    std::fs::remove_file(h.path("images/b.img")).unwrap();
    let b = h.path("Downloads/b.img");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    let store_b = h
        .store_files()
        .into_iter()
        .find(|f| f.contains("/b@"))
        .unwrap();
    std::fs::copy(h.path("site/store").join(store_b), &b).unwrap();
    expect_ok(&build(h.tmp.path(), &["--chunk-size", "64K"]));
    expect_ok(&h.run(&["sync"]));
    let truncated = download(&h, "a.img", "a.img");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..150_000]).unwrap();
    let unknown = h.path("Downloads/mine.img");
    std::fs::write(&unknown, vec![7u8; 12_345]).unwrap();
    let good = download(&h, "a.img", "good.img");
    let files = [&b, &truncated, &unknown, &good].map(|p| path_str(p).to_string());
    let mut args = vec!["check", "--json"];
    args.extend(files.iter().map(String::as_str));
    let o = h.run(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = verdicts(&o);
    assert_eq!(v[0]["finding"], "not-valid");
    assert!(
        v[0]["reason"].as_str().unwrap().contains("revoked"),
        "{}",
        v[0]
    );
    assert!(
        v[0]["reason"].as_str().unwrap().contains("CVE-2026-0001"),
        "{}",
        v[0]
    );
    assert_eq!(v[1]["finding"], "size-differs");
    assert_eq!(v[2]["finding"], "unknown");
    assert_eq!(v[3]["finding"], "approved");
    assert_eq!(v[3]["ok"], true);
}

/// A user who downloaded one image from a publication's page checks it
/// against the catalog on the web server, without a site.
#[test]
fn a_downloaded_image_checks_against_a_catalog_url_on_nginx() {
    let h = Harness::new(&[("a.img", 200_000)]);
    h.publish();
    let server = nginx::Nginx::serve(&h.path("out"));
    let copy = download(&h, "a.img", "a.img");
    let pubkey = demo_pub();
    let url = server.url();
    let args = [
        "check",
        path_str(&copy),
        "--catalog",
        url.as_str(),
        "--pubkey",
        path_str(&pubkey),
    ];
    let o = vmic(args);
    expect_ok(&o);
    assert!(stdout(&o).contains("signed sha256"), "{}", stdout(&o));
    flip(&copy, 10);
    expect_fail(&vmic(args), 1, &["chunk(s) differ"]);
    // A catalog signed by another key proves nothing.
    let other = h.path("other.pub");
    std::fs::write(
        &other,
        vmic_format::minisign::SecretKey::generate()
            .unwrap()
            .public_key()
            .to_file_string(),
    )
    .unwrap();
    let o = vmic([
        "check",
        path_str(&copy),
        "--catalog",
        url.as_str(),
        "--pubkey",
        path_str(&other),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// Raw disks often share a size: a file is read once, and matched in
/// memory against every image of its size.
#[test]
fn among_images_of_one_size_the_right_one_is_named() {
    let h = Harness::new(&[("x.img", 100_000), ("y.img", 100_000), ("z.img", 100_000)]);
    expect_ok(&build(h.tmp.path(), &["--chunk-size", "16K"]));
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    expect_ok(&h.run(&["sync"]));
    let copy = download(&h, "y.img", "disk.raw");
    let v = verdicts(&h.run(&["check", "--json", path_str(&copy)]));
    assert_eq!(v[0]["finding"], "approved", "{}", v[0]);
    assert_eq!(v[0]["image"]["id"], "y");
    flip(&copy, 99_999);
    let v = verdicts(&h.run(&["check", "--json", path_str(&copy)]));
    assert_eq!(v[0]["finding"], "chunks-differ", "{}", v[0]);
}
