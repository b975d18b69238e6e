//! Images that reach into the host (OSSA-2024-001 / CVE-2024-32498 and
//! the older qcow2 backing-file leaks): a qcow2 with a backing file or an
//! external data file, a VMDK whose descriptor names a flat extent. Made by
//! the real `qemu-img` (qemu-utils; .ci/run installs it). `vmic build`
//! refuses to publish them unless the image's sidecar allows it; a site
//! refuses to import them even when a trusted endorser signed them, unless
//! its policy allows it; and the format read from the bytes must be the one
//! the signed catalog claims.

mod common;

use std::path::Path;

use common::harness::Harness;
use common::*;

/// A harness whose images are a plain qcow2 plus the files `make` adds.
fn world(make: impl FnOnce(&Path)) -> Harness {
    let h = Harness::new(&[]);
    let images = h.path("images");
    qemu_img(&images, &["-f", "qcow2", "plain.qcow2", "1M"]);
    make(&images);
    h
}

fn backing_file(images: &Path) {
    qemu_img(
        images,
        &[
            "-f",
            "qcow2",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
            "backed.qcow2",
            "1M",
        ],
    );
}

fn allow_in_sidecar(images: &Path, image: &str) {
    std::fs::write(
        images.join(format!("{image}.toml")),
        "allow_external_references = true\n",
    )
    .unwrap();
}

fn imported(h: &Harness) -> Vec<String> {
    h.states()
        .into_iter()
        .filter(|(_, state)| state == "imported")
        .map(|(label, _)| label)
        .collect()
}

#[test]
fn build_refuses_a_qcow2_with_a_backing_file_naming_field_and_path() {
    let h = world(backing_file);
    let o = build(h.tmp.path(), &[]);
    expect_fail(
        &o,
        2,
        &[
            "backed.qcow2",
            "qcow2 backing_file",
            "/etc/passwd",
            "allow_external_references",
        ],
    );
    assert!(!h.path("out/catalog.json").exists(), "nothing published");
}

#[test]
fn build_refuses_a_qcow2_data_file_and_a_vmdk_flat_extent() {
    let h = world(|images| {
        qemu_img(
            images,
            &[
                "-f",
                "qcow2",
                "-o",
                "data_file=/tmp/vmic-host-disk.raw",
                "data.qcow2",
                "1M",
            ],
        );
        qemu_img(
            images,
            &[
                "-f",
                "vmdk",
                "-o",
                "subformat=monolithicFlat",
                "flat.vmdk",
                "1M",
            ],
        );
    });
    let _ = std::fs::remove_file("/tmp/vmic-host-disk.raw");
    let o = build(h.tmp.path(), &[]);
    expect_fail(
        &o,
        2,
        &[
            "data.qcow2",
            "qcow2 data_file",
            "/tmp/vmic-host-disk.raw",
            "flat.vmdk",
            "vmdk extent",
            "flat-flat.vmdk",
        ],
    );
}

#[test]
fn self_contained_qcow2_and_vmdk_images_publish_and_import() {
    let h = world(|images| {
        qemu_img(images, &["-f", "vmdk", "sparse.vmdk", "1M"]);
        qemu_img(
            images,
            &[
                "-f",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                "stream.vmdk",
                "1M",
            ],
        );
    });
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    expect_ok(&h.run(&["sync"]));
    assert_eq!(imported(&h).len(), 3, "{:?}", h.states());
}

/// The endorser allowed it in the sidecar and signed it; the site still
/// refuses it (quarantine, with the reason and exit 1) until its own policy
/// allows such images.
#[test]
fn a_signed_qcow2_with_a_backing_file_is_quarantined_at_sync_unless_policy_allows() {
    let h = world(backing_file);
    allow_in_sidecar(&h.path("images"), "backed.qcow2");
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    let o = h.run(&["sync"]);
    expect_fail(
        &o,
        1,
        &[
            "backed",
            "qcow2 backing_file",
            "/etc/passwd",
            "points outside itself",
        ],
    );
    assert_eq!(
        imported(&h).len(),
        1,
        "only the plain image: {:?}",
        h.states()
    );
    assert!(!h.store_files().iter().any(|f| f.contains("backed")));
    let log = stdout(&h.run(&["log"]));
    assert!(
        log.contains("quarantined") && log.contains("/etc/passwd"),
        "{log}"
    );
    h.set_config(
        "allow_external_references = false",
        "allow_external_references = true",
    );
    expect_ok(&h.run(&["approve", "backed"]));
    expect_ok(&h.run(&["sync"]));
    assert_eq!(imported(&h).len(), 2, "{:?}", h.states());
}

#[test]
fn a_signed_vmdk_naming_a_flat_extent_is_quarantined_at_sync() {
    let h = world(|images| {
        qemu_img(
            images,
            &[
                "-f",
                "vmdk",
                "-o",
                "subformat=monolithicFlat",
                "flat.vmdk",
                "1M",
            ],
        );
        // Only the descriptor is published; its extent names a host file.
        std::fs::remove_file(images.join("flat-flat.vmdk")).unwrap();
        let descriptor = std::fs::read_to_string(images.join("flat.vmdk")).unwrap();
        std::fs::write(
            images.join("flat.vmdk"),
            descriptor.replace("\"flat-flat.vmdk\"", "\"/etc/shadow\""),
        )
        .unwrap();
    });
    allow_in_sidecar(&h.path("images"), "flat.vmdk");
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    let o = h.run(&["sync"]);
    expect_fail(&o, 1, &["flat", "vmdk extent", "/etc/shadow"]);
    assert_eq!(imported(&h).len(), 1, "{:?}", h.states());
}

/// The claimed format names the store file, feeds the hook's
/// `VMIC_IMAGE_FORMAT` and `format` deny rules: a signed catalog claiming
/// `raw` for a qcow2 (to slip past a `format = "qcow2"` rule, say) is
/// refused at import.
#[test]
fn a_signed_catalog_claiming_another_format_than_the_bytes_is_quarantined() {
    let h = world(|_| {});
    h.publish();
    let out = h.path("out");
    let mut catalog = read_json(&out.join("catalog.json"));
    catalog["images"][0]["format"] = "raw".into();
    write_signed(
        &out,
        &serde_json::to_vec_pretty(&catalog).unwrap(),
        "hand-made test catalog",
    );
    expect_ok(&h.trust_with(path_str(&out), &[]));
    let o = h.run(&["sync"]);
    expect_fail(
        &o,
        1,
        &[
            "plain",
            "the catalog says format raw, but the bytes are qcow2",
        ],
    );
    assert!(imported(&h).is_empty(), "{:?}", h.states());
    assert!(h.store_files().is_empty());
}
