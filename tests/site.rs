//! The site side driven as an operator would, from a plain directory (the
//! air-gapped path): trust, sync, approve, withdraw, hooks, rollback, expiry.

mod common;

use std::process::Output;

use common::harness::Harness;
use common::*;

/// The shared harness plus a hook that records every event's environment.
struct World {
    h: Harness,
}

impl std::ops::Deref for World {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl World {
    fn new(images: &[(&str, usize)]) -> World {
        let w = World {
            h: Harness::new(images),
        };
        w.use_hook(
            "hook.sh",
            &format!(
                "env | grep ^VMIC_ | sort | tr '\\n' ' ' >> {log}\necho >> {log}\n",
                log = w.path("hook.log").display()
            ),
        );
        w
    }

    /// Write `body` as the executable shell script `name` and make it the
    /// site's hook command.
    fn use_hook(&self, name: &str, body: &str) {
        let hook = self.path(name);
        std::fs::write(&hook, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        self.hook_command(&hook);
    }

    /// Trust the publication directory `out/`.
    fn trust(&self, extra: &[&str]) {
        expect_ok(&self.trust_with(path_str(&self.path("out")), extra));
    }

    fn site(&self, args: &[&str]) -> Output {
        self.run(args)
    }

    fn sync(&self) -> Output {
        self.run(&["sync"])
    }

    /// `(version, state)` of every version of `id`.
    fn state_of(&self, id: &str) -> Vec<(String, String)> {
        self.images()
            .iter()
            .filter(|i| i["id"] == id)
            .map(|i| {
                (
                    i["version"].as_str().unwrap().to_string(),
                    i["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn hook_log(&self) -> String {
        std::fs::read_to_string(self.path("hook.log")).unwrap_or_default()
    }

    fn sidecar(&self, image: &str, text: &str) {
        std::fs::write(self.path(&format!("images/{image}.toml")), text).unwrap();
    }

    fn catalog_toml(&self, text: &str) {
        std::fs::write(self.path("images/catalog.toml"), text).unwrap();
    }
}

#[test]
fn first_sync_imports_and_fires_hooks_with_metadata() {
    let w = World::new(&[("alma.qcow2", 70_000), ("tiny.img", 1000)]);
    w.sidecar(
        "alma.qcow2",
        "id = \"alma\"\nversion = \"9.4\"\nos = \"almalinux\"\narch = \"x86_64\"\n",
    );
    w.publish();
    w.trust(&[]);
    let dry = w.site(&["sync", "--dry-run"]);
    expect_ok(&dry);
    assert!(
        stdout(&dry).contains("+ import   alma@9.4"),
        "{}",
        stdout(&dry)
    );
    assert!(w.store_files().is_empty(), "dry run changed the store");
    expect_ok(&w.sync());
    assert_eq!(w.state_of("alma"), vec![("9.4".into(), "imported".into())]);
    let files = w.store_files();
    assert_eq!(files.len(), 2, "{files:?}");
    let stored = std::fs::read(w.path("site/store").join(&files[0])).unwrap();
    let original = std::fs::read(w.path("images/alma.qcow2")).unwrap();
    assert_eq!(stored, original);
    let log = w.hook_log();
    let line = log
        .lines()
        .find(|l| l.contains("VMIC_IMAGE_ID=alma "))
        .expect("import hook for alma");
    for needle in [
        "VMIC_EVENT=import",
        "VMIC_ENDORSER=demo",
        "VMIC_IMAGE_VERSION=9.4",
        "VMIC_IMAGE_OS=almalinux",
        "VMIC_IMAGE_ARCH=x86_64",
        "VMIC_IMAGE_SIZE=70000",
        "VMIC_IMAGE_FORMAT=unknown",
        "/site/store/demo/alma@9.4.img",
    ] {
        assert!(line.contains(needle), "{needle} missing in {line}");
    }
    let sha = vmic_format::digest::Sha256Digest::of(&original).to_hex();
    assert!(line.contains(&format!("VMIC_IMAGE_SHA256={sha}")));
    // A second sync with nothing new changes nothing and fires nothing.
    let before = w.hook_log();
    let audit_len = |w: &World| {
        let o = w.site(&["log", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let entries_before = audit_len(&w);
    expect_ok(&w.sync());
    assert_eq!(w.hook_log(), before);
    assert_eq!(
        audit_len(&w),
        entries_before,
        "an idle sync wrote to the audit log"
    );
    let log = w.site(&["log", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "trust-added",
        "catalog-accepted",
        "approved",
        "imported",
        "hook-ok",
    ] {
        assert!(actions.contains(&a), "{a} not in audit log {actions:?}");
    }
}

#[test]
fn new_version_is_imported_and_old_withdrawn() {
    let w = World::new(&[("web.img", 5000)]);
    w.sidecar("web.img", "id = \"web\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    std::fs::write(w.path("images/web.img"), pattern(6000, 99)).unwrap();
    w.sidecar("web.img", "id = \"web\"\nversion = \"2\"\n");
    w.publish();
    let o = w.sync();
    expect_ok(&o);
    let mut states = w.state_of("web");
    states.sort();
    assert_eq!(
        states,
        vec![
            ("1".into(), "revoked".into()),
            ("2".into(), "imported".into())
        ]
    );
    assert_eq!(w.store_files(), vec!["demo/web@2.img".to_string()]);
    let log = w.hook_log();
    assert!(
        log.lines().any(|l| l.contains("VMIC_EVENT=revoke")
            && l.contains("VMIC_IMAGE_VERSION=1")
            && l.contains("replaced by web@2")),
        "{log}"
    );
}

#[test]
fn revoked_image_is_withdrawn_with_reason() {
    let w = World::new(&[("a.img", 5000), ("b.img", 7000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    std::fs::remove_file(w.path("images/b.img")).unwrap();
    w.catalog_toml("[[revoke]]\nid = \"b\"\nreason = \"CVE-2026-0001 in sshd\"\n");
    w.publish();
    expect_ok(&w.sync());
    assert_eq!(w.state_of("b")[0].1, "revoked");
    assert!(!w.store_files().iter().any(|f| f.starts_with("demo/b@")));
    let log = w.hook_log();
    assert!(
        log.lines().any(|l| l.contains("VMIC_EVENT=revoke")
            && l.contains("VMIC_IMAGE_ID=b ")
            && l.contains("CVE-2026-0001")),
        "{log}"
    );
}

#[test]
fn tampered_image_is_quarantined_then_imported_once_fixed() {
    let w = World::new(&[("a.img", 300_000)]);
    w.publish();
    w.trust(&[]);
    let published = w.path("out/images/a.img");
    let good = std::fs::read(&published).unwrap();
    let mut bad = good.clone();
    bad[150_000] ^= 0xff;
    std::fs::remove_file(&published).unwrap();
    std::fs::write(&published, &bad).unwrap();
    let o = w.sync();
    expect_fail(&o, 1, &["QUARANTINED", "chunk 0"]);
    assert!(
        w.store_files().is_empty(),
        "tampered bytes reached the store"
    );
    assert_eq!(w.state_of("a")[0].1, "quarantined");
    assert_eq!(
        std::fs::read_dir(w.path("site/quarantine/demo"))
            .unwrap()
            .count(),
        1
    );
    assert!(w.hook_log().contains("VMIC_EVENT=quarantine"));
    std::fs::write(&published, &good).unwrap();
    // The next attempt waits (policy.quarantine_backoff); approving it
    // again is the operator's way to retry now.
    let o = w.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("next attempt after"), "{}", stderr(&o));
    assert_eq!(w.state_of("a")[0].1, "quarantined");
    expect_ok(&w.run(&["approve", "a"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
    assert_eq!(w.store_files().len(), 1);
}

/// A mirror that keeps serving bad bytes is not downloaded from again at
/// every sync: the wait doubles per failure (here from 2 s), and only one
/// quarantined copy is kept.
#[test]
fn repeated_bad_downloads_back_off_and_keep_one_copy() {
    let w = World::new(&[("a.img", 300_000)]);
    w.publish();
    w.trust(&[]);
    w.set_config("quarantine_backoff = \"1h\"", "quarantine_backoff = \"2s\"");
    let published = w.path("out/images/a.img");
    let mut bad = std::fs::read(&published).unwrap();
    bad[0] ^= 0xff;
    std::fs::write(&published, &bad).unwrap();
    expect_fail(&w.sync(), 1, &["QUARANTINED", "next attempt after"]);
    let skipped = w.sync();
    expect_ok(&skipped);
    assert!(
        stderr(&skipped).contains("quarantined after 1 failed download(s)"),
        "{}",
        stderr(&skipped)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    expect_fail(&w.sync(), 1, &["QUARANTINED"]);
    // The second failure waits 4 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let skipped = w.sync();
    expect_ok(&skipped);
    assert!(
        stderr(&skipped).contains("quarantined after 2 failed download(s)"),
        "{}",
        stderr(&skipped)
    );
    let copies = std::fs::read_dir(w.path("site/quarantine/demo"))
        .unwrap()
        .count();
    assert_eq!(copies, 1);
    let log = w.run(&["log"]);
    assert!(
        stdout(&log).contains("site/quarantine/demo"),
        "{}",
        stdout(&log)
    );
}

#[test]
fn a_truncated_local_image_is_quarantined_then_imported_once_whole() {
    let w = World::new(&[("a.img", 300_000)]);
    w.publish();
    w.trust(&[]);
    let published = w.path("out/images/a.img");
    let good = std::fs::read(&published).unwrap();
    std::fs::remove_file(&published).unwrap();
    std::fs::write(&published, &good[..200_000]).unwrap();
    let o = w.sync();
    expect_fail(
        &o,
        1,
        &["QUARANTINED", "is 200000 bytes, not the declared 300000"],
    );
    assert!(w.store_files().is_empty());
    assert_eq!(w.state_of("a")[0].1, "quarantined");
    std::fs::write(&published, &good).unwrap();
    expect_ok(&w.run(&["approve", "a"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
}

#[test]
fn replayed_older_catalog_is_refused_and_state_kept() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    let old_cat = std::fs::read(w.path("out/catalog.json")).unwrap();
    let old_sig = std::fs::read(w.path("out/catalog.json.minisig")).unwrap();
    w.trust(&[]);
    w.publish(); // serial 2
    expect_ok(&w.sync());
    let before = w.images();
    std::fs::write(w.path("out/catalog.json"), old_cat).unwrap();
    std::fs::write(w.path("out/catalog.json.minisig"), old_sig).unwrap();
    expect_fail(
        &w.sync(),
        1,
        &["serial 1 is older than serial 2", "rollback"],
    );
    let after = w.images();
    assert_eq!(
        before
            .iter()
            .map(|i| (&i["id"], &i["state"]))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|i| (&i["id"], &i["state"]))
            .collect::<Vec<_>>()
    );
    assert_eq!(w.store_files().len(), 1);
    // An old catalog that has also expired is a rollback, not an expiry:
    // it must not make the site withdraw what the newer catalog lists.
    let mut v = read_json(&w.path("out/catalog.json"));
    v["issued"] = "2020-01-01T00:00:00Z".into();
    v["expires"] = "2020-02-01T00:00:00Z".into();
    write_signed(&w.path("out"), &serde_json::to_vec_pretty(&v).unwrap(), "x");
    expect_fail(&w.sync(), 1, &["rollback"]);
    assert_eq!(w.images()[0]["state"], "imported");
    assert_eq!(w.store_files().len(), 1);
}

#[test]
fn same_serial_with_other_content_is_refused() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let mut v = read_json(&w.path("out/catalog.json"));
    v["endorser"]["contact"] = "evil@example.org".into();
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    write_signed(&w.path("out"), &bytes, "x");
    expect_fail(&w.sync(), 1, &["serial 1 has different content"]);
}

#[test]
fn expired_catalog_is_refused_and_images_withdrawn() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let mut v = read_json(&w.path("out/catalog.json"));
    v["serial"] = 5.into();
    v["issued"] = "2020-01-01T00:00:00Z".into();
    v["expires"] = "2020-02-01T00:00:00Z".into();
    write_signed(&w.path("out"), &serde_json::to_vec_pretty(&v).unwrap(), "x");
    expect_fail(&w.sync(), 1, &["expired at 2020-02-01T00:00:00Z"]);
    assert_eq!(w.state_of("a")[0].1, "expired");
    assert!(w.store_files().is_empty());
    assert!(w.hook_log().contains("VMIC_EVENT=expire"));
    // The loud override imports again, and still refuses older serials.
    let o = w.site(&["sync", "--allow-expired"]);
    expect_ok(&o);
    assert!(stderr(&o).contains("CATALOG EXPIRED"));
    assert_eq!(w.state_of("a")[0].1, "imported");
}

#[test]
fn catalog_from_another_key_is_refused() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let other = vmic_format::minisign::SecretKey::generate().unwrap();
    let bytes = std::fs::read(w.path("out/catalog.json")).unwrap();
    std::fs::write(
        w.path("out/catalog.json.minisig"),
        other.sign(&bytes, "x", "y").to_file_string(),
    )
    .unwrap();
    expect_fail(&w.sync(), 1, &[&other.key_id.to_string()]);
    assert!(w.images().is_empty());
}

#[test]
fn oversized_catalog_is_refused() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    w.set_config("max_catalog_size = 268435456", "max_catalog_size = 200");
    expect_fail(&w.sync(), 1, &["larger than the 200-byte limit"]);
    assert!(w.images().is_empty());
}

#[test]
fn hostile_signed_catalog_writes_nothing_outside_the_site() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let original = read_json(&w.path("out/catalog.json"));
    for (field, value) in [
        ("id", "../../escape"),
        ("version", "1/../../x"),
        ("path", "../../../../tmp/x"),
    ] {
        let mut v = original.clone();
        v["images"][0][field] = value.into();
        write_signed(&w.path("out"), &serde_json::to_vec_pretty(&v).unwrap(), "x");
        expect_fail(&w.sync(), 1, &["catalog.json is invalid"]);
    }
    assert!(w.images().is_empty());
    assert!(!w.path("escape").exists() && !w.path("site/escape").exists());
    assert!(w.store_files().is_empty());
}

#[test]
fn removing_trust_withdraws_everything() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    assert_eq!(w.store_files().len(), 2);
    expect_ok(&w.site(&["trust", "remove", "demo"]));
    assert!(w.store_files().is_empty());
    assert!(w.images().iter().all(|i| i["state"] == "revoked"));
    assert_eq!(w.hook_log().matches("VMIC_EVENT=revoke").count(), 2);
    let list: serde_json::Value =
        serde_json::from_slice(&w.site(&["trust", "list", "--json"]).stdout).unwrap();
    assert!(list.as_array().unwrap().is_empty());
    expect_fail(
        &w.site(&["trust", "remove", "demo"]),
        2,
        &["not a trusted endorser"],
    );
}

#[test]
fn manual_approval_and_rejection() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "pending");
    assert!(w.store_files().is_empty());
    expect_ok(&w.site(&["approve", "a"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
    assert_eq!(w.state_of("b")[0].1, "pending");
    expect_ok(&w.site(&["reject", "b"]));
    expect_ok(&w.site(&["reject", "a"]));
    assert!(w.store_files().is_empty());
    assert!(w.hook_log().contains("VMIC_EVENT=reject"));
    // A manual rejection sticks across syncs.
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "rejected");
    expect_fail(&w.site(&["approve", "nosuch"]), 2, &["no image nosuch"]);
    expect_fail(&w.site(&["approve", "../x"]), 2, &["may contain only"]);
}

#[test]
fn deny_rules_reject_by_metadata() {
    let w = World::new(&[("win.img", 5000), ("big.img", 9000)]);
    w.sidecar("win.img", "os = \"windows\"\n");
    w.publish();
    w.set_config(
        "# [[policy.deny]]\n# os = \"windows\"",
        "[[policy.deny]]\nos = \"windows\"\n[[policy.deny]]\nmax_size = 8000",
    );
    w.trust(&[]);
    expect_ok(&w.sync());
    let win = w.images().into_iter().find(|i| i["id"] == "win").unwrap();
    assert_eq!(win["state"], "rejected");
    assert!(win["reason"].as_str().unwrap().contains("os = windows"));
    let big = w.images().into_iter().find(|i| i["id"] == "big").unwrap();
    assert_eq!(big["state"], "rejected");
    assert!(w.store_files().is_empty());
    assert_eq!(w.hook_log().matches("VMIC_EVENT=reject").count(), 2);
    // The same decision on the next sync is not recorded or announced again.
    expect_ok(&w.sync());
    assert_eq!(w.hook_log().matches("VMIC_EVENT=reject").count(), 2);
    // Lifting the size rule lets the big image in.
    w.set_config("[[policy.deny]]\nmax_size = 8000", "");
    expect_ok(&w.sync());
    let big = w.images().into_iter().find(|i| i["id"] == "big").unwrap();
    assert_eq!(big["state"], "imported");
}

#[test]
fn reverify_quarantines_tampering_at_rest() {
    let w = World::new(&[("a.img", 100_000), ("b.img", 1000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let file = w.path("site/store").join(
        w.store_files()
            .into_iter()
            .find(|f| f.contains("/a@"))
            .unwrap(),
    );
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let o = w.site(&["reverify"]);
    expect_fail(&o, 1, &["a@", "tampered at rest"]);
    assert_eq!(w.state_of("a")[0].1, "quarantined");
    assert_eq!(w.state_of("b")[0].1, "imported");
    // The next sync fetches the good bytes again.
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
}

#[test]
fn failed_hook_is_resent_by_the_next_sync() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let flag = w.path("hook-ok");
    w.use_hook(
        "flaky.sh",
        &format!(
            "[ -e {} ] || exit 7\necho \"$VMIC_EVENT $VMIC_IMAGE_ID\" >> {}\n",
            flag.display(),
            w.path("flaky.log").display()
        ),
    );
    let o = w.sync();
    expect_fail(&o, 3, &["hook failed"]);
    assert_eq!(w.state_of("a")[0].1, "imported");
    std::fs::write(&flag, b"").unwrap();
    expect_ok(&w.sync());
    assert_eq!(
        std::fs::read_to_string(w.path("flaky.log")).unwrap(),
        "import a\n"
    );
}

#[test]
fn concurrent_run_is_refused_cleanly() {
    use std::os::fd::AsRawFd;
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path("site/.lock"))
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // The holder recorded its pid: the message names it and its command.
    std::fs::write(w.path("site/.lock"), std::process::id().to_string()).unwrap();
    let me = format!("by process {} (", std::process::id());
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_str().unwrap();
    expect_fail(&w.sync(), 3, &["another vmic", "is running", &me, exe_name]);
    drop(lock);
    expect_ok(&w.sync());
}

#[test]
fn crash_leftovers_are_reconciled() {
    let w = World::new(&[("a.img", 50_000)]);
    w.publish();
    w.trust(&[]);
    // A planted or orphaned file in the store, and a partial download.
    std::fs::create_dir_all(w.path("site/store/demo")).unwrap();
    std::fs::write(w.path("site/store/demo/planted.img"), b"not verified").unwrap();
    std::fs::create_dir_all(w.path("site/tmp/demo")).unwrap();
    let part = std::fs::read(w.path("images/a.img")).unwrap();
    std::fs::write(w.path("site/tmp/demo/a@x.part"), &part[..1000]).unwrap();
    let o = w.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("planted.img"), "{}", stderr(&o));
    let files = w.store_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("demo/a@"));
    assert!(
        !w.path("site/tmp/demo/a@x.part").exists(),
        "stale partial download kept"
    );
}

#[test]
fn site_commands_need_an_initialised_site() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vmic(["--site", path_str(&tmp.path().join("none")), "sync"]);
    expect_fail(&o, 2, &["not a vmic site", "site init"]);
    let o = vmic(["--site", path_str(tmp.path()), "site", "init"]);
    expect_ok(&o);
    let o = vmic(["--site", path_str(tmp.path()), "site", "init"]);
    expect_fail(&o, 2, &["already a vmic site"]);
    let o = vmic([
        "--site",
        path_str(tmp.path()),
        "trust",
        "add",
        "x y",
        "--pubkey",
        path_str(&demo_pub()),
        "--url",
        "/nonexistent",
    ]);
    expect_fail(&o, 2, &["endorser name"]);
    let o = vmic([
        "--site",
        path_str(tmp.path()),
        "trust",
        "add",
        "x",
        "--pubkey",
        path_str(&demo_pub()),
        "--url",
        "gopher://x",
    ]);
    expect_fail(&o, 2, &["only http://"]);
}

#[test]
fn one_broken_endorser_does_not_stop_the_others() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    // A second endorser (a key of its own: one key is one endorser) whose
    // source does not exist.
    let key = w.path("broken.key.pub");
    expect_ok(&vmic([
        "keygen",
        "-W",
        "-q",
        "--out",
        path_str(&w.path("broken.key")),
    ]));
    let missing = w.path("nowhere");
    std::fs::create_dir_all(&missing).unwrap();
    expect_ok(&w.site(&[
        "trust",
        "add",
        "broken",
        "--pubkey",
        path_str(&key),
        "--url",
        path_str(&missing),
    ]));
    std::fs::remove_dir(&missing).unwrap();
    let o = w.site(&["sync", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let by_name = |n: &str| {
        report["endorsers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("demo")["ok"], true);
    assert_eq!(by_name("broken")["ok"], false);
    assert!(
        by_name("broken")["error"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(w.state_of("a")[0].1, "imported");
    let log: serde_json::Value =
        serde_json::from_slice(&w.site(&["log", "--json"]).stdout).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "sync-failed" && e["endorser"] == "broken")
    );
    // A verification failure elsewhere outranks it.
    // (A signature over other bytes.)
    let forged = demo_secret().sign(b"other bytes", "serial:9", "forged");
    std::fs::write(w.path("out/catalog.json.minisig"), forged.to_file_string()).unwrap();
    assert_eq!(w.sync().status.code(), Some(1));
}

#[test]
fn read_only_commands_work_while_another_command_holds_the_lock() {
    use std::os::fd::AsRawFd;
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path("site/.lock"))
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // Writers still wait for the lock...
    expect_fail(
        &w.site(&["approve", "a"]),
        3,
        &["another vmic", "is running"],
    );
    // ...readers do not.
    let images = w.site(&["images", "--json"]);
    expect_ok(&images);
    let rows: serde_json::Value = serde_json::from_slice(&images.stdout).unwrap();
    assert_eq!(rows[0]["state"], "imported", "{rows}");
    assert!(
        rows[0].get("entry").is_none(),
        "internal columns stay internal"
    );
    expect_ok(&w.site(&["log"]));
    let trusted = w.site(&["trust", "list", "--json"]);
    expect_ok(&trusted);
    assert!(stdout(&trusted).contains("\"approve\": \"auto\""));
    drop(lock);
}

/// A `state.db` written by the release before the workspace split (see
/// fixtures/state-db-v1/README.md) opens, reads back into the typed model,
/// and accepts changes.
#[test]
fn state_db_from_the_first_release_opens_and_works() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    for sub in ["store", "quarantine", "tmp"] {
        std::fs::create_dir_all(site.join(sub)).unwrap();
    }
    let old = fixtures().join("state-db-v1");
    for file in ["state.db", "site.toml"] {
        std::fs::copy(old.join(file), site.join(file)).unwrap();
    }
    let run = |args: &[&str]| {
        let mut all = vec!["--site", path_str(&site)];
        all.extend(args);
        vmic(all)
    };
    let o = run(&["images", "--json"]);
    expect_ok(&o);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}@{} {} {}",
                r["endorser"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
                r["version"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
                r["decided_by"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            "demo/centos-stream-9@20261101.0 imported policy",
            "demo/debian-12@12.8 imported policy",
            "demo/rescue@1.0 rejected manual",
            "demo/scratch@bf08b8a7f68d imported policy",
            "demo/tools-firmware@c59d3c0480cc imported policy",
            "lab/other@9f1dcbc35c35 pending policy",
            "lab/tiny@1 rejected policy",
        ]
    );
    let o = run(&["trust", "list", "--json"]);
    expect_ok(&o);
    let trusted: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(trusted[1]["name"], "lab");
    assert_eq!(trusted[1]["approve"], "manual");
    assert!(stdout(&run(&["log"])).contains("catalog-accepted"));
    // Writes work too: the operator approves the pending image.
    let o = run(&["approve", "other"]);
    expect_ok(&o);
    let o = run(&["images", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let other = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "other")
        .unwrap();
    assert_eq!(other["state"], "approved");
    assert_eq!(other["decided_by"], "manual");
    // The entries of the first release carry no hash: counted, not chained;
    // the approval after the upgrade starts the chain.
    let o = run(&["log", "--verify"]);
    expect_ok(&o);
    assert!(stdout(&o).contains("1 chained"), "{}", stdout(&o));
    assert!(
        !stdout(&o).contains(" 0 from before the chain"),
        "{}",
        stdout(&o)
    );
}

/// A second trusted endorser (a hostile one, or just a careless one)
/// publishes an image under the same id and version: the operator's
/// approval of "a" must not reach it.
#[test]
fn approval_of_an_id_cannot_reach_another_endorsers_image_of_that_name() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&vmic([
        "keygen",
        "-W",
        "-q",
        "--out",
        path_str(&w.path("evil.key")),
    ]));
    let o = vmic([
        "build",
        path_str(&w.path("images")),
        "--key",
        path_str(&w.path("evil.key")),
        "--out",
        path_str(&w.path("evil-out")),
    ]);
    expect_ok(&o);
    expect_ok(&w.site(&[
        "trust",
        "add",
        "evil",
        "--pubkey",
        path_str(&w.path("evil.key.pub")),
        "--url",
        path_str(&w.path("evil-out")),
        "--approve",
        "manual",
    ]));
    expect_ok(&w.sync());
    let o = w.site(&["approve", "a"]);
    expect_fail(&o, 2, &["several endorsers (demo, evil)", "demo/a"]);
    let pending = |who: &str| {
        w.images()
            .iter()
            .filter(|i| i["endorser"] == who)
            .map(|i| i["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(pending("demo"), ["pending"]);
    assert_eq!(pending("evil"), ["pending"]);
    let o = w.site(&["approve", "demo/a"]);
    expect_ok(&o);
    assert!(stdout(&o).starts_with("approved demo/a@"), "{}", stdout(&o));
    assert_eq!(pending("demo"), ["approved"]);
    assert_eq!(pending("evil"), ["pending"]);
    // Repeating it is safe: nothing to do, exit 0.
    let o = w.site(&["approve", "a", "--endorser", "demo"]);
    expect_ok(&o);
    assert!(stdout(&o).contains("already approved"), "{}", stdout(&o));
    expect_ok(&w.sync());
    assert_eq!(pending("demo"), ["imported"]);
    assert_eq!(pending("evil"), ["pending"]);
}

/// Someone who can write the site directory plants `.lock` as a link to a
/// file of theirs (or of root's): vmic must not write its PID through it.
#[test]
fn a_symlink_planted_as_the_lock_file_is_not_followed() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let victim = w.path("victim.conf");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::remove_file(w.path("site/.lock")).unwrap();
    std::os::unix::fs::symlink(&victim, w.path("site/.lock")).unwrap();
    expect_fail(&w.sync(), 1, &["lock file", "symbolic link"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(w.store_files().is_empty());
    // A FIFO as lock file is refused at once instead of blocking.
    std::fs::remove_file(w.path("site/.lock")).unwrap();
    mkfifo(&w.path("site/.lock"));
    let o = w.sync();
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(".lock"), "{}", stderr(&o));
}

/// `on_expired = "keep"` is the operator's choice: an expired catalog
/// imports nothing new, the images stay, the run warns (text, JSON, log) and
/// exits 0 instead of failing every cron run.
#[test]
fn expired_catalog_under_keep_policy_warns_and_exits_zero() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    w.set_config("on_expired = \"withdraw\"", "on_expired = \"keep\"");
    let mut v = read_json(&w.path("out/catalog.json"));
    v["serial"] = 5.into();
    v["issued"] = "2020-01-01T00:00:00Z".into();
    v["expires"] = "2020-02-01T00:00:00Z".into();
    // The expired catalog also drops b: nothing may change on its word.
    v["images"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["id"] == "a");
    write_signed(&w.path("out"), &serde_json::to_vec_pretty(&v).unwrap(), "x");
    let o = w.site(&["sync", "--json"]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["exit_code"], 0);
    let warnings = report["endorsers"][0]["warnings"].to_string();
    assert!(warnings.contains("on_expired"), "{warnings}");
    assert_eq!(w.state_of("a")[0].1, "imported");
    assert_eq!(w.state_of("b")[0].1, "imported");
    assert_eq!(w.store_files().len(), 2);
    assert!(stdout(&w.site(&["log"])).contains("expired-kept"));
    let o = w.sync();
    expect_ok(&o);
    assert!(stderr(&o).contains("kept by site policy"), "{}", stderr(&o));
}

fn write_hook(w: &World, script: &str) {
    std::fs::write(w.path("hook.sh"), format!("#!/bin/sh\n{script}\n")).unwrap();
}

/// Whether the process whose pid is in `pid_file` still runs (a zombie
/// waiting for a reaper that this container may not have counts as dead).
fn alive(pid_file: &std::path::Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // The state is the field after the parenthesised command name.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// A hook that writes a megabyte to stderr must not die of SIGPIPE (and so
/// be re-sent forever): stderr is read to its end, 64 KiB of it kept.
#[test]
fn a_chatty_hook_is_not_killed_by_its_own_stderr() {
    let w = World::new(&[("a.img", 5000)]);
    // The writer's status is the hook's: SIGPIPE would make it fail.
    write_hook(&w, "head -c 1048576 /dev/zero | tr '\\0' x >&2");
    w.publish();
    w.trust(&[]);
    let o = w.site(&["sync", "--json"]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hooks"]["failed"], 0, "{report}");
    assert_eq!(report["hooks"]["delivered"], 1, "{report}");
}

/// A published, trusted world whose hook runs `script` (given the path of
/// a file to write a background pid into) under `timeout`.
fn world_with_hook(
    timeout: &str,
    script: impl Fn(&std::path::Path) -> String,
) -> (World, std::path::PathBuf) {
    let w = World::new(&[("a.img", 5000)]);
    w.set_config("timeout = \"60s\"", &format!("timeout = \"{timeout}\""));
    let pid_file = w.path("bg.pid");
    write_hook(&w, &script(&pid_file));
    w.publish();
    w.trust(&[]);
    (w, pid_file)
}

/// The sync came back long before the background `sleep 300` would have
/// ended, and that child is gone.
fn assert_ended_early(started: std::time::Instant, pid_file: &std::path::Path) {
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!alive(pid_file), "the hook's background child survived");
}

/// A hook that leaves a child in the background and hangs is killed with
/// that child at the timeout; the sync goes on and reports it (exit 3).
#[test]
fn a_hanging_hook_is_killed_with_its_background_children() {
    let (w, pid_file) = world_with_hook("1s", |pid| {
        format!("sleep 300 & echo $! > {}\nsleep 300", pid.display())
    });
    let started = std::time::Instant::now();
    expect_fail(&w.sync(), 3, &["hook failed", "timed out"]);
    assert_ended_early(started, &pid_file);
}

/// A hook that exits 0 but leaves a child holding its stderr must not stall
/// the sync until that child ends.
#[test]
fn a_background_child_holding_stderr_does_not_stall_the_sync() {
    let (w, pid_file) = world_with_hook("2s", |pid| {
        format!("sleep 300 >&2 &\necho $! > {}\nexit 0", pid.display())
    });
    let started = std::time::Instant::now();
    expect_ok(&w.sync());
    assert_ended_early(started, &pid_file);
}

/// Use case: a manual site, a new version published. Until the operator has
/// approved it and it is imported, the old version stays in the store.
#[test]
fn a_manual_site_keeps_the_old_version_until_the_new_one_is_imported() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&w.sync());
    expect_ok(&w.site(&["approve", "a@1"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "imported".into())]);
    std::fs::write(w.path("images/a.img"), pattern(6000, 9)).unwrap();
    w.sidecar("a.img", "id = \"a\"\nversion = \"2\"\n");
    w.publish();
    expect_ok(&w.sync());
    assert_eq!(
        w.state_of("a"),
        [
            ("1".into(), "imported".into()),
            ("2".into(), "pending".into())
        ],
        "no gap: a@1 stays while a@2 waits"
    );
    assert_eq!(w.store_files().len(), 1);
    expect_ok(&w.site(&["approve", "a@2"]));
    expect_ok(&w.sync());
    assert_eq!(
        w.state_of("a"),
        [
            ("1".into(), "revoked".into()),
            ("2".into(), "imported".into())
        ]
    );
    assert_eq!(w.store_files().len(), 1);
}

/// A deny rule added after an image was imported takes it out of use at
/// the next sync, with the rule as the reason and a `reject` event.
#[test]
fn a_deny_rule_added_later_withdraws_an_imported_image() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\narch = \"i686\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "imported".into())]);
    w.set_config(
        "# [[policy.deny]]\n# os = \"windows\"",
        "[[policy.deny]]\narch = \"i686\"",
    );
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "rejected".into())]);
    assert!(w.store_files().is_empty());
    let image = &w.images()[0];
    assert!(
        image["reason"].as_str().unwrap().contains("arch = i686"),
        "{image}"
    );
    assert_eq!(
        w.hook_log().matches("VMIC_EVENT=reject").count(),
        1,
        "{}",
        w.hook_log()
    );
}

/// The operator rejected a@1; the endorser then signs other bytes under the
/// same id@version. The rejection stands.
#[test]
fn an_operators_rejection_sticks_when_the_endorser_rewrites_the_bytes() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    expect_ok(&w.site(&["reject", "a"]));
    std::fs::write(w.path("images/a.img"), pattern(5000, 77)).unwrap();
    expect_ok(&build(w.path("").as_path(), &["--allow-rewrite"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "rejected".into())]);
    assert!(w.store_files().is_empty());
}

/// Freeze by replay: after the accepted catalog expires, a mirror keeps
/// serving an older (still unexpired) catalog. The rollback is refused and
/// the expired catalog's images are withdrawn all the same.
#[test]
fn freeze_by_replaying_an_older_catalog_does_not_keep_expired_images_alive() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    let old = w.path("old-out");
    std::fs::create_dir(&old).unwrap();
    for f in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(w.path("out").join(f), old.join(f)).unwrap();
    }
    expect_ok(&build(w.path("").as_path(), &["--expires", "2s"]));
    w.trust(&[]);
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for f in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(old.join(f), w.path("out").join(f)).unwrap();
    }
    expect_fail(&w.sync(), 1, &["older than serial 2", "rollback"]);
    assert_eq!(w.state_of("a")[0].1, "expired");
    assert!(w.store_files().is_empty());
    assert!(w.hook_log().contains("VMIC_EVENT=expire"));
}

/// Key ids are chosen by whoever makes the key: a second endorser whose key
/// claims a trusted endorser's id (to share, and poison, its rollback
/// memory, or to pass for it in messages) is refused at `trust add`.
#[test]
fn a_key_claiming_a_trusted_keys_id_is_refused() {
    use base64::Engine;
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&vmic([
        "keygen",
        "-W",
        "-q",
        "--out",
        path_str(&w.path("evil.key")),
    ]));
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_line = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).unwrap();
        b64.decode(text.lines().nth(1).unwrap()).unwrap()
    };
    let demo = key_line(&demo_pub());
    let mut evil = key_line(&w.path("evil.key.pub"));
    evil[2..10].copy_from_slice(&demo[2..10]);
    let forged = w.path("forged.pub");
    std::fs::write(
        &forged,
        format!("untrusted comment: forged\n{}\n", b64.encode(&evil)),
    )
    .unwrap();
    let o = w.site(&[
        "trust",
        "add",
        "evil",
        "--pubkey",
        path_str(&forged),
        "--url",
        path_str(&w.path("out")),
    ]);
    expect_fail(
        &o,
        1,
        &["already used by the different key of endorser demo"],
    );
    let o = w.site(&[
        "trust",
        "add",
        "alias",
        "--pubkey",
        path_str(&demo_pub()),
        "--url",
        path_str(&w.path("out")),
    ]);
    expect_fail(&o, 2, &["already trusted as endorser demo"]);
    let o = w.site(&["trust", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// `trust remove` says what happened to each image: imported ones are
/// withdrawn from the store, the others (here: pending) only dropped.
#[test]
fn trust_remove_tells_withdrawn_from_dropped() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.sidecar("b.img", "id = \"b\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&w.sync());
    expect_ok(&w.site(&["approve", "a"]));
    expect_ok(&w.sync());
    let o = w.site(&["trust", "remove", "demo"]);
    expect_ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("1 image(s) withdrawn from the store, 1 other(s) dropped"),
        "{text}"
    );
    assert!(
        text.contains("withdrawn a@1") && text.contains("dropped b@1"),
        "{text}"
    );
    assert_eq!(w.hook_log().matches("VMIC_EVENT=revoke").count(), 1);
}

/// A FIFO planted as a source's catalog would block the read forever with
/// the site lock held; it is refused at once, and the site keeps working.
#[test]
fn fifo_planted_as_a_catalog_is_refused_at_once() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    // Planted where readers look: the generation the signature names, and
    // the plain entry point (which `verify` checks too).
    let named = generation(&w.path("out"));
    std::fs::remove_file(&named).unwrap();
    mkfifo(&named);
    std::fs::remove_file(w.path("out/catalog.json")).unwrap();
    mkfifo(&w.path("out/catalog.json"));
    let site = w.path("site").display().to_string();
    let o = vmic_within(20, ["--site", site.as_str(), "sync"]);
    expect_fail(&o, 1, &["catalogs/", "not a regular file", "FIFO"]);
    assert!(w.states().is_empty());
    let o = vmic_within(
        20,
        [
            "verify",
            w.path("out").to_str().unwrap(),
            "--pubkey",
            demo_pub().to_str().unwrap(),
        ],
    );
    expect_fail(&o, 1, &["FIFO"]);
    // The lock was released: a repaired source syncs.
    std::fs::remove_file(w.path("out/catalog.json")).unwrap();
    std::fs::remove_file(&named).unwrap();
    w.publish();
    expect_ok(&w.sync());
    assert_eq!(w.store_files().len(), 1);
}

/// A FIFO planted as an image: quarantined at once, not waited on.
#[test]
fn fifo_planted_as_an_image_is_quarantined_at_once() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    std::fs::remove_file(w.path("out/images/a.img")).unwrap();
    mkfifo(&w.path("out/images/a.img"));
    let site = w.path("site").display().to_string();
    let o = vmic_within(20, ["--site", site.as_str(), "sync"]);
    expect_fail(&o, 1, &["a.img", "FIFO"]);
    assert!(w.store_files().is_empty());
}

/// A catalog in a source directory that is a symbolic link (to a file
/// the source's owner does not control) is not followed.
#[test]
fn symlink_planted_as_a_catalog_is_not_followed() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    // Planted as the generation the signature names (what sync reads).
    let named = generation(&w.path("out"));
    let elsewhere = w.path("elsewhere.json");
    std::fs::rename(&named, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &named).unwrap();
    expect_fail(&w.sync(), 1, &["catalogs/", "refusing to follow"]);
    assert!(w.states().is_empty());
    // Nor one pointing inside the source: catalogs are plain files there.
    std::fs::rename(&elsewhere, w.path("out/real.json")).unwrap();
    std::fs::remove_file(&named).unwrap();
    std::os::unix::fs::symlink("../real.json", &named).unwrap();
    expect_fail(&w.sync(), 1, &["catalogs/", "symbolic link"]);
    assert!(w.states().is_empty());
}

/// Deny rules can name any catalog field (here the id, with a wildcard);
/// approving a denied image needs `--override`, which the log records.
#[test]
fn approving_a_denied_image_needs_override_and_is_logged() {
    let w = World::new(&[("centos-7.img", 5000), ("debian.img", 6000)]);
    w.publish();
    let site_toml = w.path("site/site.toml");
    let mut text = std::fs::read_to_string(&site_toml).unwrap();
    text = text.replacen(
        "[hooks]",
        "[[policy.deny]]\nid = \"CENTOS-*\"\n\n[hooks]",
        1,
    );
    std::fs::write(&site_toml, text).unwrap();
    w.trust(&[]);
    expect_ok(&w.sync());
    assert_eq!(w.state_of("centos-7")[0].1, "rejected");
    assert_eq!(w.state_of("debian")[0].1, "imported");
    expect_fail(
        &w.run(&["approve", "centos-7"]),
        2,
        &[
            "demo/centos-7@",
            "denied by site policy (id = CENTOS-*)",
            "--override",
        ],
    );
    assert_eq!(w.state_of("centos-7")[0].1, "rejected");
    expect_fail(
        &w.run(&["reject", "debian", "--override"]),
        2,
        &["--override"],
    );
    expect_ok(&w.run(&["approve", "centos-7", "--override"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("centos-7")[0].1, "imported");
    let log = stdout(&w.run(&["log"]));
    assert!(
        log.contains("with --override, over: denied by site policy (id = CENTOS-*)"),
        "{log}"
    );
}

/// A misspelt deny key would deny nothing: site.toml is refused instead.
#[test]
fn a_deny_rule_naming_no_catalog_field_is_refused() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let site_toml = w.path("site/site.toml");
    let text = std::fs::read_to_string(&site_toml).unwrap();
    std::fs::write(
        &site_toml,
        text.replacen(
            "[hooks]",
            "[[policy.deny]]\nos_verison = \"7\"\n\n[hooks]",
            1,
        ),
    )
    .unwrap();
    expect_fail(
        &w.sync(),
        2,
        &["site.toml", "os_verison", "not a catalog field"],
    );
    std::fs::write(&site_toml, text).unwrap();
    assert!(w.states().is_empty(), "the refused run changed nothing");
}

/// The store's only file, read.
fn stored_bytes(w: &World) -> Vec<u8> {
    let files = w.store_files();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read(w.path("site/store").join(&files[0])).unwrap()
}

/// The endorser signs other bytes under a@1 (with --allow-rewrite). On an
/// auto site that is a loud event — exit 1 once, `REWRITTEN`, `rewrite`
/// hook, log, JSON — and the new bytes replace the old copy only once
/// verified: while they fail, the old copy stays (no gap).
#[test]
fn rewritten_bytes_under_the_same_version_are_loud_and_leave_no_gap() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let old = stored_bytes(&w);
    let new = pattern(5000, 77);
    std::fs::write(w.path("images/a.img"), &new).unwrap();
    expect_ok(&build(w.path("").as_path(), &["--allow-rewrite"]));
    // The mirror serves damaged new bytes first.
    let mut bad = new.clone();
    bad[0] ^= 1;
    std::fs::write(w.path("out/images/a.img"), &bad).unwrap();
    let o = w.run(&["sync", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let demo = &report["endorsers"][0];
    assert_eq!(demo["rewritten"].as_array().unwrap().len(), 1, "{demo}");
    let old_sha = vmic_format::digest::Sha256Digest::of(&old).to_hex();
    assert_eq!(
        demo["plan"][0]["rewritten_from"],
        old_sha.as_str(),
        "{demo}"
    );
    assert_eq!(w.state_of("a")[0].1, "quarantined");
    assert_eq!(
        stored_bytes(&w),
        old,
        "the old copy left before the new one came"
    );
    assert!(
        w.hook_log().contains("VMIC_EVENT=rewrite"),
        "{}",
        w.hook_log()
    );
    let log = stdout(&w.run(&["log"]));
    assert!(log.contains("REWRITTEN"), "{log}");
    // Good new bytes: imported over the old copy.
    std::fs::write(w.path("out/images/a.img"), &new).unwrap();
    expect_ok(&w.run(&["approve", "a"]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "imported".into())]);
    assert_eq!(stored_bytes(&w), new);
    // Reported once: the next run is quiet.
    let again = w.sync();
    expect_ok(&again);
    assert!(!stderr(&again).contains("REWRITTEN"), "{}", stderr(&again));
}

/// On a manual site a rewritten version goes back to pending; the old copy
/// stays in the store until the operator decides. Rejecting it takes the
/// old copy out, with a hook.
#[test]
fn rewritten_bytes_on_a_manual_site_wait_for_the_operator_with_the_old_copy_kept() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&w.sync());
    expect_ok(&w.run(&["approve", "a"]));
    expect_ok(&w.sync());
    let old = stored_bytes(&w);
    std::fs::write(w.path("images/a.img"), pattern(5000, 78)).unwrap();
    expect_ok(&build(w.path("").as_path(), &["--allow-rewrite"]));
    expect_fail(&w.sync(), 1, &["REWRITTEN", "a@1"]);
    assert_eq!(w.state_of("a"), [("1".into(), "pending".into())]);
    assert_eq!(stored_bytes(&w), old);
    // Still pending, still kept, at the next sync.
    expect_ok(&w.sync());
    assert_eq!(stored_bytes(&w), old);
    expect_ok(&w.run(&["reject", "a"]));
    assert!(w.store_files().is_empty());
    assert!(
        w.hook_log().contains("VMIC_EVENT=reject"),
        "{}",
        w.hook_log()
    );
}

/// A symlink planted as an image's `.part` file (the site's tmp directory
/// may be reachable by others) is not written through: the download
/// lands in a fresh file and the link's target is untouched.
#[test]
fn a_symlink_planted_as_a_part_file_is_not_followed() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&["--approve", "manual"]);
    expect_ok(&w.sync());
    let victim = w.path("victim.conf");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::create_dir_all(w.path("site/tmp/demo")).unwrap();
    std::os::unix::fs::symlink(&victim, w.path("site/tmp/demo/a@1.part")).unwrap();
    expect_ok(&w.run(&["approve", "a"]));
    expect_ok(&w.sync());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(w.state_of("a"), [("1".into(), "imported".into())]);
}

/// Freeze by replay, the other ways: after the accepted catalog expired, a
/// mirror serves garbage, or the same serial re-signed with other bytes.
/// Neither is a fresh catalog, so the expiry policy applies all the same.
#[test]
fn freeze_by_garbage_or_same_serial_replay_does_not_keep_expired_images_alive() {
    for replay in ["garbage", "same serial, other bytes"] {
        let w = World::new(&[("a.img", 5000)]);
        expect_ok(&build(w.path("").as_path(), &["--expires", "2s"]));
        w.trust(&[]);
        expect_ok(&w.sync());
        assert_eq!(w.state_of("a")[0].1, "imported");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let out = w.path("out");
        if replay == "garbage" {
            std::fs::write(out.join("catalog.json"), b"{ not a catalog").unwrap();
        } else {
            let mut v = read_json(&out.join("catalog.json"));
            v["endorser"]["contact"] = "mailto:someone-else@example.org".into();
            let comment = std::fs::read_to_string(out.join("catalog.json.minisig"))
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
                .trim_start_matches("trusted comment: ")
                .to_string();
            write_signed(&out, &serde_json::to_vec_pretty(&v).unwrap(), &comment);
        }
        let o = w.sync();
        assert_eq!(o.status.code(), Some(1), "{replay}: {}", stderr(&o));
        assert_eq!(w.state_of("a")[0].1, "expired", "{replay}");
        assert!(w.store_files().is_empty(), "{replay}");
    }
}

/// Fork detection: the catalog after the one accepted here names a
/// different predecessor (`previous_sha256`), so the key signed two
/// histories. It is refused loudly (exit 1, `catalog-refused` hook, log)
/// and nothing changes; the real next catalog is accepted afterwards.
#[test]
fn a_forked_history_signed_by_the_same_key_is_refused_loudly() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let before = w.states();
    w.publish();
    let real = std::fs::read(w.path("out/catalog.json")).unwrap();
    let real_sig = std::fs::read(w.path("out/catalog.json.minisig")).unwrap();
    let mut forged = read_json(&w.path("out/catalog.json"));
    assert_eq!(forged["serial"], 2);
    forged["previous_sha256"] = vmic_format::digest::Sha256Digest::of(b"another history")
        .to_hex()
        .into();
    write_signed(
        &w.path("out"),
        &serde_json::to_vec_pretty(&forged).unwrap(),
        "x",
    );
    expect_fail(&w.sync(), 1, &["FORK", "serial 2", "two histories"]);
    assert_eq!(w.states(), before);
    assert!(
        w.hook_log().contains("VMIC_EVENT=catalog-refused"),
        "{}",
        w.hook_log()
    );
    assert!(stdout(&w.run(&["log"])).contains("catalog-refused"));
    std::fs::write(w.path("out/catalog.json"), real).unwrap();
    std::fs::write(w.path("out/catalog.json.minisig"), real_sig).unwrap();
    expect_ok(&w.sync());
}

/// VMIC 1.5.2: an endorser moves its catalog. `trust edit --url` follows it
/// without losing anything: the next sync accepts the same history, keeps
/// every image (nothing fetched or re-announced), and the log says what
/// changed. The approval mode changes the same way.
#[test]
fn trust_edit_changes_the_source_and_keeps_history_and_images() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let before = w.states();
    let hooks_before = w.hook_log();
    std::fs::rename(w.path("out"), w.path("moved")).unwrap();
    expect_fail(&w.sync(), 2, &["out"]);
    expect_ok(&w.run(&[
        "trust",
        "edit",
        "demo",
        "--url",
        path_str(&w.path("moved")),
        "--approve",
        "manual",
    ]));
    expect_ok(&w.sync());
    assert_eq!(w.states(), before);
    assert_eq!(
        w.hook_log(),
        hooks_before,
        "an unchanged image was re-announced"
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&w.run(&["trust", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["approve"], "manual");
    assert_eq!(listed[0]["serial"], 1, "{listed}");
    assert!(listed[0]["expires"].is_string(), "{listed}");
    let text = stdout(&w.run(&["trust", "list"]));
    assert!(
        text.contains("serial 1 issued ") && text.contains(" until "),
        "{text}"
    );
    assert!(
        listed[0]["url"].as_str().unwrap().ends_with("moved"),
        "{listed}"
    );
    let log = stdout(&w.run(&["log"]));
    assert!(
        log.contains("trust-edited") && log.contains("approve auto -> manual"),
        "{log}"
    );
    expect_fail(
        &w.run(&["trust", "edit", "demo"]),
        2,
        &["nothing to change"],
    );
    expect_fail(
        &w.run(&["trust", "edit", "nobody", "--approve", "auto"]),
        2,
        &["nobody"],
    );
}

/// VMIC 1.2: an endorser retires. Its last catalog lists no images, only
/// revocations (an images directory that is merely empty is refused), and
/// every site withdraws everything it had from it, with the reason.
#[test]
fn a_retiring_endorser_publishes_only_revocations_and_sites_withdraw_everything() {
    let w = World::new(&[("a.img", 5000), ("b.img", 6000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.sidecar("b.img", "id = \"b\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    assert_eq!(w.store_files().len(), 2);
    for f in ["a.img", "a.img.toml", "b.img", "b.img.toml"] {
        std::fs::remove_file(w.path("images").join(f)).unwrap();
    }
    let root = w.path("");
    expect_fail(&build(&root, &[]), 2, &["no images found", "[[revoke]]"]);
    std::fs::write(
        w.path("images/catalog.toml"),
        "[[revoke]]\nid = \"a\"\nreason = \"endorser retired\"\n[[revoke]]\nid = \"b\"\nreason = \"endorser retired\"\n",
    )
    .unwrap();
    expect_ok(&build(&root, &[]));
    expect_ok(&verify(&w.path("out"), &[]));
    expect_ok(&w.sync());
    assert!(w.store_files().is_empty());
    assert_eq!(
        w.states(),
        [
            ("a@1".into(), "revoked".into()),
            ("b@1".into(), "revoked".into())
        ]
    );
    let images: Vec<serde_json::Value> = w.images();
    assert!(
        images
            .iter()
            .all(|i| i["reason"].as_str().unwrap().contains("endorser retired"))
    );
    assert_eq!(w.hook_log().matches("VMIC_EVENT=revoke").count(), 2);
}

/// Compromise and recovery by the site operator. An attacker holding the
/// endorser's key pushes serial 1,000 (locking the real endorser out by
/// rollback memory). The endorser makes a new key; the site re-pins it with
/// `trust rekey --reset-serial`: the real catalog is accepted again and the
/// attacker's key is refused. Without `--reset-serial` the history (and
/// the lock-out) would carry over.
#[test]
fn a_stolen_key_is_recovered_from_with_trust_rekey() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let real = std::fs::read(w.path("out/catalog.json")).unwrap();
    // The attacker signs serial 1000 that lists nothing.
    let mut evil = read_json(&w.path("out/catalog.json"));
    evil["serial"] = 1000.into();
    evil["images"] = serde_json::json!([]);
    evil["previous_sha256"] = serde_json::Value::Null;
    write_signed(
        &w.path("out"),
        &serde_json::to_vec_pretty(&evil).unwrap(),
        "x",
    );
    expect_ok(&w.sync());
    assert!(
        w.store_files().is_empty(),
        "the attacker's catalog withdrew a"
    );
    // The endorser restores its publication and signs with a new key.
    std::fs::write(w.path("out/catalog.json"), &real).unwrap();
    let new_key = w.path("new.key");
    expect_ok(&vmic(["keygen", "-W", "-q", "--out", path_str(&new_key)]));
    let images = w.path("images");
    let out = w.path("out");
    expect_ok(&vmic([
        "build",
        path_str(&images),
        "--key",
        path_str(&new_key),
        "--out",
        path_str(&out),
    ]));
    let new_pub = w.path("new.key.pub");
    // The old key is still pinned: the new catalog does not verify.
    expect_fail(&w.sync(), 1, &[]);
    // Carrying the memory over keeps the lock-out (serial 2 < 1000)...
    expect_ok(&w.run(&["trust", "rekey", "demo", "--pubkey", path_str(&new_pub)]));
    expect_fail(&w.sync(), 1, &["older than serial 1000", "rollback"]);
    // ...so after a compromise the operator resets it.
    expect_ok(&w.run(&[
        "trust",
        "rekey",
        "demo",
        "--pubkey",
        path_str(&new_pub),
        "--reset-serial",
    ]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a"), [("1".into(), "imported".into())]);
    // The attacker's key is refused from now on.
    write_signed(
        &w.path("out"),
        &serde_json::to_vec_pretty(&evil).unwrap(),
        "x",
    );
    expect_fail(&w.sync(), 1, &[]);
    assert_eq!(w.store_files().len(), 1);
    let log = stdout(&w.run(&["log"]));
    assert!(
        log.contains("trust-rekeyed") && log.contains("reset (--reset-serial)"),
        "{log}"
    );
}

/// A catalog that expires within `policy.expiry_warning` is announced: a
/// warning at every run, the `expiring` hook once per catalog; a re-signed
/// catalog (`vmic resign`) silences it.
#[test]
fn a_catalog_close_to_expiry_is_announced_once_and_resign_silences_it() {
    let w = World::new(&[("a.img", 5000)]);
    expect_ok(&build(w.path("").as_path(), &["--expires", "2d"]));
    w.trust(&[]);
    let first = w.sync();
    expect_ok(&first);
    assert!(stderr(&first).contains("expires at"), "{}", stderr(&first));
    let second = w.sync();
    expect_ok(&second);
    assert!(
        stderr(&second).contains("vmic resign"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        w.hook_log().matches("VMIC_EVENT=expiring").count(),
        1,
        "{}",
        w.hook_log()
    );
    expect_ok(&vmic([
        "resign",
        path_str(&w.path("out")),
        "--key",
        path_str(&demo_key()),
        "--expires",
        "30d",
    ]));
    let third = w.sync();
    expect_ok(&third);
    assert!(!stderr(&third).contains("expires at"), "{}", stderr(&third));
}

/// Sites are told (VMIC 1.1.1): trusting and removing an endorser, and each
/// image that waits for approval, reach the hook.
#[test]
fn hooks_hear_of_endorsers_added_and_removed_and_of_pending_images() {
    let w = World::new(&[("a.img", 5000)]);
    w.sidecar("a.img", "id = \"a\"\nversion = \"1\"\n");
    w.publish();
    w.trust(&["--approve", "manual"]);
    assert!(
        w.hook_log().contains("VMIC_EVENT=endorser-added"),
        "{}",
        w.hook_log()
    );
    expect_ok(&w.sync());
    let log = w.hook_log();
    let pending: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("VMIC_EVENT=pending"))
        .collect();
    assert_eq!(pending.len(), 1, "{log}");
    assert!(pending[0].contains("VMIC_IMAGE_ID=a"), "{log}");
    // Still pending at the next run: not announced again by the hook, but
    // the operator still reads it in the output.
    let again = w.sync();
    expect_ok(&again);
    assert!(
        stdout(&again).contains("1 image(s) wait for `vmic approve`: a@1"),
        "{}",
        stdout(&again)
    );
    assert_eq!(w.hook_log().matches("VMIC_EVENT=pending").count(), 1);
    expect_ok(&w.run(&["trust", "remove", "demo"]));
    assert!(
        w.hook_log().contains("VMIC_EVENT=endorser-removed"),
        "{}",
        w.hook_log()
    );
}

/// `kill -9` while a hook runs: the event was not marked delivered, so the
/// next sync runs the hook again (at least once), and after that no more.
#[test]
fn kill_9_while_a_hook_runs_delivers_the_event_again_at_the_next_sync() {
    let w = World::new(&[("a.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let log = w.path("slow.log");
    let started = w.path("hook-started");
    w.use_hook(
        "slow.sh",
        &format!(
            "touch {}\nsleep 1\necho \"$VMIC_EVENT $VMIC_IMAGE_ID\" >> {}\n",
            started.display(),
            log.display()
        ),
    );
    let mut child = vmic_command()
        .args(["--site", path_str(&w.path("site")), "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the hook never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(w.state_of("a")[0].1, "imported");
    // The orphaned hook may still finish its own run.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    expect_ok(&w.sync());
    let after = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(after, before + 1, "the undelivered event was not re-sent");
    expect_ok(&w.sync());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        after
    );
}

/// The chunk index named by the first image entry of the publication in
/// `out/` (catalog format 2).
fn first_chunk_index(w: &World, id: &str) -> std::path::PathBuf {
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("out/catalog.json")).unwrap()).unwrap();
    let entry = catalog["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap()
        .clone();
    w.path(&format!(
        "out/chunks/{}.json",
        entry["chunk_index"]["sha256"].as_str().unwrap()
    ))
}

/// A hostile mirror (or a tampered publication) serving a chunk index other
/// than the one the signed catalog names: nothing of that image is
/// downloaded or imported, the run says which image and why, and the next
/// sync from a good source imports it.
#[test]
fn hostile_source_serving_a_forged_chunk_index_imports_nothing() {
    let w = World::new(&[("a.img", 100_000), ("b.img", 1000)]);
    w.publish();
    w.trust(&[]);
    let index = first_chunk_index(&w, "a");
    let good = std::fs::read(&index).unwrap();
    // Digests of other bytes, in a well-formed index: only the signed
    // digest of the index tells them apart.
    let mut forged = good.clone();
    let last_digit = forged.iter().rposition(u8::is_ascii_hexdigit).unwrap();
    forged[last_digit] = if forged[last_digit] == b'0' {
        b'1'
    } else {
        b'0'
    };
    std::fs::write(&index, &forged).unwrap();
    let o = w.sync();
    expect_fail(&o, 1, &["a@", "chunk index", "SHA-256"]);
    assert_ne!(w.state_of("a")[0].1, "imported");
    assert_eq!(w.state_of("b")[0].1, "imported");
    assert!(!w.store_files().iter().any(|f| f.contains("/a@")));
    std::fs::write(&index, &good).unwrap();
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "imported");
}

/// `reverify` needs each image's chunk index: the site keeps it, and an
/// image whose kept index is gone is reported as not checked (exit 3),
/// never as intact; the next sync fetches the index again.
#[test]
fn reverify_without_a_kept_chunk_index_reports_the_image_unchecked() {
    let w = World::new(&[("a.img", 100_000)]);
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let name = first_chunk_index(&w, "a");
    let kept = w.path("site/chunks").join(name.file_name().unwrap());
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&name).unwrap());
    std::fs::remove_file(&kept).unwrap();
    let o = w.site(&["reverify"]);
    expect_fail(&o, 3, &["NOT CHECKED", "a@", "chunk index"]);
    expect_ok(&w.sync());
    assert!(kept.is_file());
    expect_ok(&w.site(&["reverify"]));
    // A kept copy altered in place (same length) is not trusted either: it
    // is dropped, and the next sync fetches the signed one again.
    let mut bytes = std::fs::read(&kept).unwrap();
    let n = bytes.len() - 3;
    bytes[n] ^= 1;
    std::fs::write(&kept, &bytes).unwrap();
    expect_fail(&w.site(&["reverify"]), 3, &["NOT CHECKED", "a@"]);
    expect_ok(&w.sync());
    expect_ok(&w.site(&["reverify"]));
}

/// An endorser moving from catalog format 1 to 2: the images the site
/// imported from the version-1 catalog stay imported (same bytes, not a
/// rewrite), and nothing is fetched again.
#[test]
fn an_endorser_moving_from_catalog_format_1_to_2_changes_nothing_at_sites() {
    let w = World::new(&[("a.img", 100_000)]);
    expect_ok(&common::build(&w.path(""), &["--catalog-version", "1"]));
    let v1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("out/catalog.json")).unwrap()).unwrap();
    assert_eq!(v1["format"], "vmic.catalog/1");
    assert!(v1["images"][0]["chunks"].is_array());
    w.trust(&[]);
    expect_ok(&w.sync());
    let before = w.store_files();
    w.publish();
    let o = w.sync();
    expect_ok(&o);
    assert!(!stdout(&o).contains("REWRITTEN") && !stderr(&o).contains("REWRITTEN"));
    assert_eq!(w.state_of("a")[0].1, "imported");
    assert_eq!(w.store_files(), before);
    expect_ok(&w.site(&["reverify"]));
}

/// `fixtures/v1-publication` was built by the last release that wrote only
/// catalog format 1 (fixtures/make-v1-publication.sh): today's vmic
/// verifies it, syncs and reverifies its images, mirrors it as it is, and a
/// site syncs from the mirror.
#[test]
fn a_format_1_publication_of_the_previous_release_verifies_syncs_and_mirrors() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1-publication");
    let w = World::new(&[]);
    let publication = w.path("v1");
    copy_dir(&fixture, &publication);
    let v1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(publication.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(v1["format"], "vmic.catalog/1");
    let o = verify(&publication, &[]);
    expect_ok(&o);
    assert!(
        stdout(&o).contains("all 2 images verified"),
        "{}",
        stdout(&o)
    );
    expect_ok(&w.trust_with(path_str(&publication), &[]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("appliance")[0].1, "imported");
    assert_eq!(w.store_files().len(), 2);
    expect_ok(&w.site(&["reverify"]));
    let mirror = w.path("mirror");
    expect_ok(&vmic([
        "mirror",
        path_str(&publication),
        path_str(&mirror),
        "--pubkey",
        path_str(&demo_pub()),
    ]));
    assert_eq!(
        std::fs::read(mirror.join("catalog.json")).unwrap(),
        std::fs::read(publication.join("catalog.json")).unwrap()
    );
    expect_ok(&verify(&mirror, &[]));
    expect_ok(&w.run(&["trust", "edit", "demo", "--url", path_str(&mirror)]));
    expect_ok(&w.sync());
    assert_eq!(w.state_of("appliance")[0].1, "imported");
}

/// Use case 3.5 and the AWS seed: images found by catalog fields, by state,
/// and by what fits a machine; `--json` carries every catalog field.
#[test]
fn images_are_found_by_catalog_fields_state_and_what_fits() {
    let w = World::new(&[("c7.img", 4096), ("c9.img", 4096), ("deb.img", 4096)]);
    w.sidecar(
        "c7.img",
        "id = \"centos\"\nversion = \"7\"\nos = \"CentOS\"\nos_version = \"7\"\narch = \"x86_64\"\nmin_cores = 1\nmin_memory_mb = 1024\ntags = [\"legacy\"]\n",
    );
    w.sidecar(
        "c9.img",
        "id = \"centos9\"\nversion = \"9\"\ntitle = \"CentOS Stream 9\"\nos = \"centos\"\nos_version = \"9\"\narch = \"x86_64\"\nmin_cores = 4\nmin_memory_mb = 8192\n",
    );
    w.sidecar(
        "deb.img",
        "id = \"debian\"\nversion = \"12\"\nos = \"debian\"\nos_version = \"12\"\narch = \"aarch64\"\n",
    );
    w.publish();
    w.trust(&[]);
    expect_ok(&w.sync());
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["images", "--json"];
        all.extend(args);
        let o = w.site(&all);
        expect_ok(&o);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut ids: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&["--os", "centos", "--os-version", "7"]), ["centos"]);
    assert_eq!(ids(&["--os", "CENTOS"]), ["centos", "centos9"]);
    assert_eq!(ids(&["--arch", "aarch64"]), ["debian"]);
    assert_eq!(ids(&["--tag", "legacy"]), ["centos"]);
    assert_eq!(
        ids(&["--min-cores", "2", "--min-memory", "4G"]),
        ["centos", "debian"]
    );
    assert_eq!(
        ids(&["--min-cores", "8", "--min-memory", "8192"]),
        ["centos", "centos9", "debian"]
    );
    assert_eq!(ids(&["--state", "imported", "--endorser", "demo"]).len(), 3);
    assert!(ids(&["--state", "pending"]).is_empty());
    let o = w.site(&["images", "--os-version", "9", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c9 = &rows[0];
    assert_eq!(c9["catalog"]["title"], "CentOS Stream 9");
    assert_eq!(c9["catalog"]["min_memory_mb"], 8192);
    assert_eq!(c9["catalog"]["sha256"], c9["sha256"]);
    assert!(c9["store_path"].as_str().unwrap().starts_with("demo/"));
    expect_fail(
        &w.site(&["images", "--state", "running"]),
        2,
        &["not a state"],
    );
    // Use case 3.5, "stop running images of type XYZ": a deny rule and a
    // sync withdraw exactly what the query showed.
    w.set_config(
        "# [[policy.deny]]\n# os = \"windows\"",
        "[[policy.deny]]\nos = \"centos\"\nos_version = \"7\"",
    );
    let conf = std::fs::read_to_string(w.path("site/site.toml")).unwrap();
    assert!(conf.contains("os_version = \"7\""), "{conf}");
    expect_ok(&w.sync());
    assert_eq!(ids(&["--state", "imported"]), ["centos9", "debian"]);
    assert_eq!(ids(&["--state", "rejected"]), ["centos"]);
}

/// Retention (lifecycle seed): a withdrawn image leaves no copies behind.
/// The quarantined bytes of a bad download and an interrupted download's
/// `.part` go when the endorser revokes the image, and the log says which
/// files were deleted.
#[test]
fn a_revoked_image_leaves_no_quarantined_or_partial_copies_behind() {
    let w = World::new(&[("a.img", 300_000), ("b.img", 5000)]);
    w.publish();
    w.trust(&[]);
    let published = w.path("out/images/a.img");
    let mut bad = std::fs::read(&published).unwrap();
    bad[10] ^= 0xff;
    std::fs::remove_file(&published).unwrap();
    std::fs::write(&published, &bad).unwrap();
    expect_fail(&w.sync(), 1, &["QUARANTINED"]);
    let quarantine = w.path("site/quarantine/demo");
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 1);
    let label = format!("a@{}", w.state_of("a")[0].0);
    let part = w.path(&format!("site/tmp/demo/{label}.part"));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, b"half a download").unwrap();
    std::fs::remove_file(w.path("images/a.img")).unwrap();
    w.catalog_toml("[[revoke]]\nid = \"a\"\nreason = \"withdrawn by the endorser\"\n");
    w.publish();
    expect_ok(&w.sync());
    assert_eq!(w.state_of("a")[0].1, "revoked");
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 0);
    assert!(!part.exists());
    let log = stdout(&w.site(&["log", "--event", "deleted", "--image", "a"]));
    assert!(
        log.contains("quarantine/demo/a@") && log.contains(".part"),
        "{log}"
    );
    assert_eq!(w.state_of("b")[0].1, "imported");
}
