//! `vmic audit DIR...` (the "detecting user-installed VMs" seed): a
//! hypervisor directory made with the real `qemu-img` holds an approved
//! image under another name, a revoked one, an unknown one, an overlay of an
//! approved base, an overlay of an unknown base, an overlay reaching out of
//! the directory, a truncated copy and a symlink loop. Each is classified
//! correctly, `--quarantine` moves exactly the right ones (with a log entry
//! and a hook event each), and a rescan of the unchanged directory reads
//! nothing.

mod common;

use std::path::Path;

use common::harness::Harness;
use common::*;

/// A site that imported `base.qcow2` and `data.img`, and saw `old.img`
/// revoked; and `hv/`, a hypervisor's image directory.
fn world() -> Harness {
    let h = Harness::new(&[("data.img", 100_000), ("old.img", 50_000)]);
    let images = h.path("images");
    qemu_img(&images, &["-f", "qcow2", "base.qcow2", "1M"]);
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    let hook_log = h.path("hooks.log");
    let hook = h.path("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$VMIC_EVENT $VMIC_IMAGE_PATH\" >> {}\n",
            hook_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    h.hook_command(&hook);
    expect_ok(&h.run(&["sync"]));
    let hv = h.path("hv");
    std::fs::create_dir_all(&hv).unwrap();
    std::fs::copy(images.join("base.qcow2"), hv.join("vm1-disk.qcow2")).unwrap();
    std::fs::copy(images.join("old.img"), hv.join("legacy.img")).unwrap();
    // The endorser revokes old.img.
    std::fs::remove_file(images.join("old.img")).unwrap();
    std::fs::write(
        images.join("catalog.toml"),
        "[[revoke]]\nid = \"old\"\nreason = \"CVE-2026-1234\"\n",
    )
    .unwrap();
    h.publish();
    expect_ok(&h.run(&["sync"]));
    std::fs::write(hv.join("rogue.raw"), vec![9u8; 65_536]).unwrap();
    qemu_img(
        &hv,
        &[
            "-f",
            "qcow2",
            "-b",
            "vm1-disk.qcow2",
            "-F",
            "qcow2",
            "instance.qcow2",
        ],
    );
    qemu_img(&hv, &["-f", "qcow2", "rogue-base.qcow2", "2M"]);
    qemu_img(
        &hv,
        &[
            "-f",
            "qcow2",
            "-b",
            "rogue-base.qcow2",
            "-F",
            "qcow2",
            "rogue-instance.qcow2",
        ],
    );
    qemu_img(
        &hv,
        &[
            "-f",
            "qcow2",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
            "escape.qcow2",
            "1M",
        ],
    );
    let base = std::fs::read(images.join("base.qcow2")).unwrap();
    std::fs::write(hv.join("truncated.qcow2"), &base[..base.len() - 512]).unwrap();
    std::os::unix::fs::symlink("loop2", hv.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", hv.join("loop2")).unwrap();
    h
}

/// name → class, from `vmic audit --json`.
fn classes(o: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)));
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let name = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, e["class"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_file_of_a_hypervisor_directory_is_classified_and_rogues_are_quarantined() {
    let h = world();
    let hv = h.path("hv");
    let o = h.run(&["audit", path_str(&hv), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let found = classes(&o);
    let expected = [
        ("vm1-disk.qcow2", "approved"),
        ("legacy.img", "revoked"),
        ("rogue.raw", "unknown"),
        ("instance.qcow2", "derived"),
        ("rogue-base.qcow2", "unknown"),
        ("rogue-instance.qcow2", "derived-from-rogue"),
        ("escape.qcow2", "derived-from-rogue"),
        ("truncated.qcow2", "unknown"),
        ("loop1", "link"),
        ("loop2", "link"),
    ];
    for (name, class) in expected {
        assert_eq!(
            found.get(name).map(String::as_str),
            Some(class),
            "{name}: {found:?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:?}");
    let text = stdout(&h.run(&["audit", path_str(&hv), "--json"]));
    assert!(
        text.contains("CVE-2026-1234"),
        "the revocation's reason: {text}"
    );
    assert!(text.contains("outside the scanned directories"), "{text}");

    let quarantine = h.path("hv-quarantine");
    let o = h.run(&[
        "audit",
        path_str(&hv),
        "--quarantine",
        path_str(&quarantine),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let mut left: Vec<String> = std::fs::read_dir(&hv)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["instance.qcow2", "loop1", "loop2", "vm1-disk.qcow2"]);
    let moved = std::fs::read_dir(&quarantine).unwrap().count();
    assert_eq!(moved, 6);
    let log = stdout(&h.run(&["log", "--event", "rogue"]));
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(stdout(&h.run(&["log", "--event", "revoked-in-use"])).contains("legacy.img"));
    let hooks = std::fs::read_to_string(h.path("hooks.log")).unwrap();
    assert_eq!(hooks.matches("rogue ").count(), 5, "{hooks}");
    assert_eq!(hooks.matches("revoked-in-use ").count(), 1, "{hooks}");
    // What is left is clean: exit 0.
    expect_ok(&h.run(&["audit", path_str(&hv)]));
}

#[test]
fn an_unchanged_directory_rescans_from_the_cache_and_a_changed_file_is_read_again() {
    let h = world();
    let hv = h.path("hv");
    let report = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let first = report(&h.run(&["audit", path_str(&hv), "--json"]));
    assert!(first["hashed"].as_u64().unwrap() >= 2, "{first}");
    let second = report(&h.run(&["audit", path_str(&hv), "--json"]));
    assert_eq!(second["hashed"], 0, "{second}");
    assert_eq!(second["cached"], first["hashed"], "{second}");
    assert_eq!(second["entries"], first["entries"]);
    // Same size, other bytes: the stamp changed, so it is read again.
    let disk = hv.join("vm1-disk.qcow2");
    let mut bytes = std::fs::read(&disk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&disk, &bytes).unwrap();
    let third = h.run(&["audit", path_str(&hv), "--json"]);
    let found = classes(&third);
    assert_eq!(found["vm1-disk.qcow2"], "unknown");
    assert_eq!(found["instance.qcow2"], "derived-from-rogue");
    assert_eq!(report(&third)["hashed"], 1);
}
