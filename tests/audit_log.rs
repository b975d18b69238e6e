//! The audit log as evidence (lifecycle seed): every entry names who acted
//! and with what command, and is chained by hash to the one before, so an
//! attacker with write access to `state.db` who drops the append-only
//! triggers and deletes, alters or reorders entries is caught by `vmic log
//! --verify` (exit 1, naming the entry). Deleting the newest entries is
//! caught by `audit.head`, and against an attacker who also rewrites that
//! file, by a head kept elsewhere (`--anchor`).

mod common;

use common::harness::Harness;
use common::*;

/// A site that imported two images and approved nothing by hand: a log of
/// a dozen entries or so.
fn site_with_history() -> Harness {
    let h = Harness::new(&[("a.img", 5000), ("b.img", 7000)]);
    h.publish();
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    expect_ok(&h.run_env(&["sync"], &[("USER", "alice"), ("SUDO_USER", "")]));
    h
}

/// The attacker's tool: SQL straight into the site database, triggers
/// dropped first.
fn tamper(h: &Harness, sql: &str) {
    let db = rusqlite::Connection::open(h.path("site/state.db")).unwrap();
    db.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS audit_append_only_update;
         DROP TRIGGER IF EXISTS audit_append_only_delete;
         {sql}"
    ))
    .unwrap();
}

fn entries(h: &Harness) -> Vec<serde_json::Value> {
    let o = h.run(&["log", "--json"]);
    expect_ok(&o);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The sequence number of the first `imported` entry.
fn first_imported(h: &Harness) -> i64 {
    let all = entries(h);
    let entry = all.iter().find(|e| e["action"] == "imported").unwrap();
    entry["seq"].as_i64().unwrap()
}

#[test]
fn an_intact_log_verifies_and_names_who_acted_with_what_command() {
    let h = site_with_history();
    let o = h.run(&["log", "--verify"]);
    expect_ok(&o);
    assert!(stdout(&o).contains("intact"), "{}", stdout(&o));
    let all = entries(&h);
    assert!(all.len() >= 4, "{all:?}");
    let imported = all.iter().find(|e| e["action"] == "imported").unwrap();
    assert_eq!(imported["actor"], "alice");
    assert!(
        imported["command"]
            .as_str()
            .unwrap()
            .starts_with("vmic --site"),
        "{imported}"
    );
    assert!(
        imported["command"].as_str().unwrap().ends_with(" sync"),
        "{imported}"
    );
    assert_eq!(imported["hash"].as_str().unwrap().len(), 64);
}

#[test]
fn log_tampering_a_deleted_entry_is_detected() {
    let h = site_with_history();
    let victim = first_imported(&h);
    tamper(&h, &format!("DELETE FROM audit WHERE seq = {victim};"));
    let o = h.run(&["log", "--verify"]);
    expect_fail(
        &o,
        1,
        &[
            "LOG TAMPERED",
            &format!("entries {victim}..{victim} are missing"),
        ],
    );
}

#[test]
fn log_tampering_an_altered_entry_is_detected() {
    let h = site_with_history();
    let victim = first_imported(&h);
    tamper(
        &h,
        &format!("UPDATE audit SET actor = 'mallory' WHERE seq = {victim};"),
    );
    let o = h.run(&["log", "--verify"]);
    expect_fail(
        &o,
        1,
        &["LOG TAMPERED", &format!("entry {victim}"), "altered"],
    );
}

#[test]
fn log_tampering_reordered_entries_are_detected() {
    let h = site_with_history();
    let all = entries(&h);
    let (x, y) = (
        all[1]["seq"].as_i64().unwrap(),
        all[2]["seq"].as_i64().unwrap(),
    );
    // Swap the two entries' places in the sequence.
    tamper(
        &h,
        &format!(
            "UPDATE audit SET seq = -1 WHERE seq = {x};
             UPDATE audit SET seq = {x} WHERE seq = {y};
             UPDATE audit SET seq = {y} WHERE seq = -1;"
        ),
    );
    let o = h.run(&["log", "--verify"]);
    expect_fail(&o, 1, &["LOG TAMPERED", "altered"]);
}

#[test]
fn log_tampering_deleting_the_newest_entries_is_detected_by_the_kept_and_an_outside_head() {
    let h = site_with_history();
    let o = h.run(&["log", "--head"]);
    expect_ok(&o);
    let outside = stdout(&o).trim().to_string();
    let (last, _) = outside.split_once(':').unwrap();
    tamper(&h, &format!("DELETE FROM audit WHERE seq = {last};"));
    let o = h.run(&["log", "--verify"]);
    expect_fail(
        &o,
        1,
        &[
            "LOG TAMPERED",
            &format!("entry {last}"),
            "audit.head",
            "gone",
        ],
    );
    // The attacker also rewrites audit.head: only a head kept elsewhere
    // still tells.
    let now = entries(&h);
    let new_last = now.last().unwrap();
    std::fs::write(
        h.path("site/audit.head"),
        format!(
            "{}:{}\n",
            new_last["seq"],
            new_last["hash"].as_str().unwrap()
        ),
    )
    .unwrap();
    expect_ok(&h.run(&["log", "--verify"]));
    let o = h.run(&["log", "--verify", "--anchor", &outside]);
    expect_fail(&o, 1, &["--anchor", "gone"]);
}

#[test]
fn log_filters_by_event_endorser_image_and_time() {
    let h = site_with_history();
    let only = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["log", "--json"];
        all.extend(args);
        let o = h.run(&all);
        expect_ok(&o);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let imported = only(&["--event", "imported"]);
    assert_eq!(imported.len(), 2);
    let a = only(&["--event", "imported", "--image", "a"]);
    assert_eq!(a.len(), 1);
    assert!(a[0]["image"].as_str().unwrap().starts_with("a@"));
    assert_eq!(only(&["--endorser", "nobody"]).len(), 0);
    assert_eq!(only(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    assert_eq!(
        only(&["--until", "2999-01-01T00:00:00Z"]).len(),
        entries(&h).len()
    );
    let o = h.run(&["log", "--since", "yesterday"]);
    expect_fail(&o, 2, &["RFC 3339"]);
}
