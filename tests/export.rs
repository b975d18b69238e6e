//! `vmic export`: a vmic publication read by the tools that already exist.
//! The simplestreams export is mirrored by the real `sstream-mirror`
//! (python-simplestreams; .ci/run installs it), which checks every item's
//! sha256; the HEPiX image list is S/MIME-signed and verified by the real
//! `openssl smime -verify`, and its SHA-512s match `sha512sum`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn published() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    expect_ok(&vmic([
        "build",
        path_str(&fixtures().join("images")),
        "--key",
        path_str(&demo_key()),
        "--out",
        path_str(&out),
        "--base-url",
        "https://images.example.org/demo",
    ]));
    tmp
}

fn sstream_mirror(source: &Path, dest: &Path) -> std::process::Output {
    require_tool("sstream-mirror");
    Command::new("sstream-mirror")
        .args(["--no-verify", "--path", "streams/v1/index.json"])
        .arg(source)
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn sstream_mirror_mirrors_a_simplestreams_export_and_checks_every_item() {
    let tmp = published();
    let publication = tmp.path().join("pub");
    expect_ok(&vmic([
        "export",
        "simplestreams",
        path_str(&publication),
        "--pubkey",
        path_str(&demo_pub()),
    ]));
    let index = read_json(&publication.join("streams/v1/index.json"));
    assert_eq!(index["format"], "index:1.0");
    let content_id = "vmic.FAF749876507E955:images";
    assert_eq!(index["index"][content_id]["format"], "products:1.0");
    let products = read_json(&publication.join(format!("streams/v1/{content_id}.json")));
    let centos = &products["products"][format!("{content_id}:centos-stream-9")];
    assert_eq!(centos["os"], "centos");
    let item = &centos["versions"]["20261101.0"]["items"]["qcow2"];
    assert_eq!(item["path"], "images/centos-stream-9.qcow2");
    let mirror = tmp.path().join("mirror");
    let o = sstream_mirror(&publication, &mirror);
    assert!(o.status.success(), "{}", stderr(&o));
    for image in [
        "centos-stream-9.qcow2",
        "debian-12.vmdk",
        "scratch.raw",
        "tools/firmware.bin",
    ] {
        assert_eq!(
            std::fs::read(mirror.join("images").join(image)).unwrap(),
            std::fs::read(publication.join("images").join(image)).unwrap(),
            "{image}"
        );
    }
    // The export's checksums are the catalog's: a tampered image fails the
    // real consumer.
    let scratch = publication.join("images/scratch.raw");
    let mut bytes = std::fs::read(&scratch).unwrap();
    bytes[100] ^= 1;
    std::fs::remove_file(&scratch).unwrap();
    std::fs::write(&scratch, bytes).unwrap();
    let o = sstream_mirror(&publication, &tmp.path().join("mirror2"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Invalid sha256 Checksum"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_smime_signed_hepix_list_verifies_with_openssl_and_carries_sha512() {
    require_tool("openssl");
    let tmp = published();
    let dir = tmp.path();
    let req = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/DC=org/DC=example/CN=Demo Endorser"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(req.status.success(), "{}", stderr(&req));
    let list = dir.join("image.list");
    let export = |out: &Path| {
        vmic([
            "export",
            "hepix",
            path_str(out),
            "--publication",
            path_str(&dir.join("pub")),
            "--pubkey",
            path_str(&demo_pub()),
            "--dn",
            "/DC=org/DC=example/CN=Demo Endorser",
            "--ca",
            "/DC=org/DC=example/CN=Demo CA",
            "--smime-cert",
            path_str(&dir.join("cert.pem")),
            "--smime-key",
            path_str(&dir.join("key.pem")),
        ])
    };
    expect_ok(&export(&list));
    let verified = Command::new("openssl")
        .args(["smime", "-verify", "-in"])
        .arg(&list)
        .arg("-CAfile")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let doc: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    let imagelist = &doc["hv:imagelist"];
    assert_eq!(
        imagelist["hv:endorser"]["hv:x509"]["hv:dn"],
        "/DC=org/DC=example/CN=Demo Endorser"
    );
    assert_eq!(imagelist["hv:version"], "1");
    let images = imagelist["hv:images"].as_array().unwrap();
    assert_eq!(images.len(), 5);
    let centos = images
        .iter()
        .map(|i| &i["hv:image"])
        .find(|i| i["hv:version"] == "20261101.0")
        .unwrap();
    let sha512 = Command::new("sha512sum")
        .arg(dir.join("pub/images/centos-stream-9.qcow2"))
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&sha512.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(centos["sl:checksum:sha512"], expected.as_str());
    assert_eq!(
        centos["hv:uri"],
        "https://images.example.org/demo/images/centos-stream-9.qcow2"
    );
    assert_eq!(centos["hv:size"], 196_616);
    // A second export names every image by the same dc:identifier.
    let again = dir.join("again.json");
    expect_ok(&vmic([
        "export",
        "hepix",
        path_str(&again),
        "--publication",
        path_str(&dir.join("pub")),
        "--pubkey",
        path_str(&demo_pub()),
    ]));
    let plain = read_json(&again);
    assert_eq!(
        plain["hv:imagelist"]["hv:images"][0]["hv:image"]["dc:identifier"],
        images[0]["hv:image"]["dc:identifier"]
    );
}

#[test]
fn an_export_of_a_tampered_publication_is_refused() {
    let tmp = published();
    let publication = tmp.path().join("pub");
    let scratch = publication.join("images/scratch.raw");
    let mut bytes = std::fs::read(&scratch).unwrap();
    bytes[7] ^= 1;
    std::fs::remove_file(&scratch).unwrap();
    std::fs::write(&scratch, bytes).unwrap();
    let o = vmic([
        "export",
        "hepix",
        path_str(&tmp.path().join("list.json")),
        "--publication",
        path_str(&publication),
        "--pubkey",
        path_str(&demo_pub()),
    ]);
    expect_fail(&o, 1, &["scratch", "chunk 0", "not exported"]);
    assert!(!tmp.path().join("list.json").exists());
    let mut catalog = std::fs::read(publication.join("catalog.json")).unwrap();
    catalog[20] ^= 1;
    std::fs::write(publication.join("catalog.json"), catalog).unwrap();
    std::fs::remove_dir_all(publication.join("catalogs")).unwrap();
    let o = vmic([
        "export",
        "simplestreams",
        path_str(&publication),
        "--pubkey",
        path_str(&demo_pub()),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!publication.join("streams").exists());
}
