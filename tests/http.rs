//! Sync over real HTTP: nginx on loopback serving real `vmic build` output,
//! and a fault-injecting server for what nginx cannot produce.

mod common;

#[path = "common/http.rs"]
mod fault;
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/proxy.rs"]
mod proxy;

use std::path::PathBuf;

use common::harness::Harness;
use common::*;
use fault::{Fault, FaultServer};
use proxy::ConnectProxy;

type Site = Harness;

/// Number of images of the demo endorser in the store.
fn store_count(s: &Site) -> usize {
    s.store_files().len()
}

#[test]
fn operator_flow_against_nginx() {
    let s = Site::new(&[("a.img", 3 << 20), ("b.img", 100_000)]);
    std::fs::write(s.path("images/a.img.toml"), "id = \"a\"\nversion = \"1\"\n").unwrap();
    s.publish();
    let server = nginx::Nginx::serve(&s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    // First sync imports everything.
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2);
    assert!(s.states().iter().all(|(_, st)| st == "imported"));
    // A new version of a, and b revoked.
    std::fs::write(s.path("images/a.img"), pattern(2 << 20, 42)).unwrap();
    std::fs::write(s.path("images/a.img.toml"), "id = \"a\"\nversion = \"2\"\n").unwrap();
    std::fs::remove_file(s.path("images/b.img")).unwrap();
    std::fs::write(
        s.path("images/catalog.toml"),
        "[[revoke]]\nid = \"b\"\nreason = \"broken\"\n",
    )
    .unwrap();
    s.publish();
    let old_cat = std::fs::read(s.path("out/catalog.json")).unwrap();
    let old_sig = std::fs::read(s.path("out/catalog.json.minisig")).unwrap();
    expect_ok(&s.run(&["sync"]));
    let states = s.states();
    assert!(
        states.contains(&("a@1".into(), "revoked".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("a@2".into(), "imported".into())),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|(l, st)| l.starts_with("b@") && st == "revoked"),
        "{states:?}"
    );
    assert_eq!(store_count(&s), 1);
    // Tampered image on the server: quarantined, exit 1, nothing in store.
    std::fs::write(s.path("images/c.img"), pattern(50_000, 7)).unwrap();
    s.publish();
    let served = s.path("out/images/c.img");
    let good = std::fs::read(&served).unwrap();
    let mut bad = good.clone();
    bad[49_999] ^= 1;
    std::fs::remove_file(&served).unwrap();
    std::fs::write(&served, &bad).unwrap();
    expect_fail(&s.run(&["sync"]), 1, &["QUARANTINED", "c@"]);
    assert_eq!(store_count(&s), 1);
    std::fs::write(&served, &good).unwrap();
    // Retried now on the operator's word, not after the backoff.
    let c = s
        .states()
        .into_iter()
        .find(|(l, _)| l.starts_with("c@"))
        .unwrap()
        .0;
    expect_ok(&s.run(&["approve", &c]));
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2);
    // A replayed older catalog + signature is refused; state unchanged.
    let before = s.states();
    std::fs::write(s.path("out/catalog.json"), &old_cat).unwrap();
    std::fs::write(s.path("out/catalog.json.minisig"), &old_sig).unwrap();
    expect_fail(&s.run(&["sync"]), 1, &["rollback"]);
    assert_eq!(s.states(), before);
    // Removing trust withdraws everything.
    expect_ok(&s.run(&["trust", "remove", "demo"]));
    assert_eq!(store_count(&s), 0);
}

#[test]
fn nginx_serves_hostile_and_oversized_catalogs_that_are_refused() {
    let s = Site::new(&[("a.img", 5000)]);
    s.publish();
    let server = nginx::Nginx::serve(&s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    let good = std::fs::read(s.path("out/catalog.json")).unwrap();
    let mut v = read_json(&s.path("out/catalog.json"));
    v["images"][0]["path"] = "../../../etc/passwd".into();
    write_signed(&s.path("out"), &serde_json::to_vec_pretty(&v).unwrap(), "x");
    expect_fail(&s.run(&["sync"]), 1, &["unsafe path"]);
    write_signed(&s.path("out"), &good, "x");
    s.set_config("max_catalog_size = 268435456", "max_catalog_size = 100");
    expect_fail(&s.run(&["sync"]), 1, &["larger than the 100-byte limit"]);
    assert!(s.states().is_empty());
}

/// `vmic sync` running in the background, to be killed or raced.
fn spawn_sync(s: &Site) -> std::process::Child {
    std::process::Command::new(VMIC)
        .args(["--site", path_str(&s.path("site")), "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The single file in the store is byte for byte the endorser's image.
fn assert_store_holds_source(s: &Site, image: &str) {
    let files = s.store_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::read(s.path("site/store").join(&files[0])).unwrap(),
        std::fs::read(s.path(&format!("images/{image}"))).unwrap()
    );
}

/// The demo endorser's download in progress, if there is one.
fn part_file(s: &Site) -> Option<PathBuf> {
    let mut entries = std::fs::read_dir(s.path("site/tmp/demo")).ok()?;
    Some(entries.next()?.ok()?.path())
}

fn fault_site() -> (Site, FaultServer) {
    let s = Site::new(&[("big.img", 4 << 20)]);
    s.publish();
    let server = FaultServer::start(s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    s.set_config(
        "timeout = \"30s\"\nconnect_timeout",
        "timeout = \"1s\"\nconnect_timeout",
    );
    s.set_config("retries = 3", "retries = 1");
    (s, server)
}

#[test]
fn http_500_is_retryable_and_next_sync_completes() {
    let (s, server) = fault_site();
    server.set(Fault::Error500("big.img".into()));
    expect_fail(&s.run(&["sync"]), 3, &["500"]);
    assert_eq!(store_count(&s), 0);
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_eq!(
        s.states(),
        vec![(s.states()[0].0.clone(), "imported".into())]
    );
}

#[test]
fn catalog_500_is_retryable() {
    let (s, server) = fault_site();
    server.set(Fault::Error500("catalog.json".into()));
    expect_fail(&s.run(&["sync"]), 3, &["500"]);
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
}

#[test]
fn stalled_response_times_out_and_next_sync_completes() {
    let (s, server) = fault_site();
    server.set(Fault::Stall("big.img".into()));
    let started = std::time::Instant::now();
    expect_fail(&s.run(&["sync"]), 3, &["big@"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
}

#[test]
fn body_cut_short_is_resumed_with_range() {
    let (s, server) = fault_site();
    server.set(Fault::CutShort("big.img".into(), 1 << 20));
    expect_fail(&s.run(&["sync"]), 3, &["big@"]);
    assert_eq!(store_count(&s), 0);
    let part = part_file(&s).expect("the partial download was kept");
    assert!(
        std::fs::metadata(&part).unwrap().len() >= 1 << 20,
        "partial download was not kept"
    );
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
    let ranges = server.ranges_seen.lock().unwrap().clone();
    assert!(
        ranges
            .iter()
            .any(|r| r.contains("big.img") && r.ends_with('-') && !r.ends_with(" 0-")),
        "no resume request: {ranges:?}"
    );
    assert_store_holds_source(&s, "big.img");
}

/// Wait (at most 20 s) until the server has sent at least `bytes`.
fn wait_for_bytes_sent(server: &FaultServer, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server
        .body_bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed)
        < bytes
    {
        assert!(
            std::time::Instant::now() < deadline,
            "download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn kill_during_download_then_rerun_is_consistent() {
    let (s, server) = fault_site();
    server.set(Fault::Trickle("big.img".into(), 64 << 10));
    let mut child = spawn_sync(&s);
    // Wait until part of the image has been sent, then kill -9.
    wait_for_bytes_sent(&server, 256 << 10);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(store_count(&s), 0, "a partial image reached the store");
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
    assert_store_holds_source(&s, "big.img");
    expect_ok(&s.run(&["reverify"]));
}

#[test]
fn a_download_killed_after_whole_blocks_resumes_after_them() {
    // 20 MiB in 8 MiB chunks: blocks are written whole, in order, so what a
    // kill -9 leaves is a prefix of whole blocks and the rerun asks only
    // for the rest.
    let s = Site::new(&[("big.img", 20 << 20)]);
    s.publish();
    let server = FaultServer::start(s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    server.set(Fault::Trickle("big.img".into(), 128 << 10));
    let mut child = spawn_sync(&s);
    let part_len = || {
        part_file(&s)
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while part_len() < 8 << 20 {
        assert!(std::time::Instant::now() < deadline, "no block written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = part_len();
    assert!(
        kept >= 8 << 20 && kept % (8 << 20) == 0 && kept < 20 << 20,
        "the part file holds {kept} bytes, not whole blocks"
    );
    assert_eq!(store_count(&s), 0);

    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    let ranges = server.ranges_seen.lock().unwrap().clone();
    assert_eq!(ranges, [format!("/images/big.img {kept}-")]);
    assert_store_holds_source(&s, "big.img");
}

#[test]
fn a_damaged_partial_download_is_cut_back_logged_and_completed() {
    // 64 KiB chunks, so the partial download holds complete chunks.
    let s = Site::new(&[("big.img", 4 << 20)]);
    expect_ok(&build(s.tmp.path(), &["--chunk-size", "64K"]));
    let server = FaultServer::start(s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    s.set_config("retries = 3", "retries = 0");
    server.set(Fault::CutShort("big.img".into(), 3 << 20));
    expect_fail(&s.run(&["sync"]), 3, &["ended after"]);
    let part = part_file(&s).expect("the partial download was kept");
    let mut bytes = std::fs::read(&part).unwrap();
    assert_eq!(bytes.len(), 3 << 20);
    // A crash that lost part of a write, say.
    bytes[(1 << 20) + 7] ^= 0xff;
    std::fs::write(&part, &bytes).unwrap();

    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_store_holds_source(&s, "big.img");
    let log = stdout(&s.run(&["log"]));
    assert!(
        // Cut back to the damaged 64 KiB chunk's start, at 1 MiB.
        log.contains("partial-discarded") && log.contains(&format!("{} bytes", 2 << 20)),
        "{log}"
    );
    assert!(!log.contains("quarantine"), "{log}");
}

#[test]
fn kill_at_any_moment_of_a_local_sync_leaves_a_consistent_site() {
    // Kill a directory sync at increasing delays: whatever moment it dies,
    // the rerun must finish and the store must hold exactly verified images.
    let s = Site::new(&[("a.img", 6 << 20), ("b.img", 6 << 20), ("c.img", 1 << 20)]);
    s.publish();
    expect_ok(&s.trust_with(path_str(&s.path("out")), &[]));
    for delay_ms in [0u64, 5, 15, 30, 60] {
        let mut child = spawn_sync(&s);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        expect_ok(&s.run(&["sync"]));
        expect_ok(&s.run(&["reverify"]));
        assert_eq!(store_count(&s), 3, "after a kill at {delay_ms} ms");
        // Start over for the next round.
        expect_ok(&s.run(&["trust", "remove", "demo"]));
        assert_eq!(store_count(&s), 0);
        expect_ok(&s.trust_with(path_str(&s.path("out")), &[]));
    }
}

#[test]
fn two_syncs_at_once_the_second_is_refused() {
    let (s, server) = fault_site();
    server.set(Fault::Trickle("big.img".into(), 32 << 10));
    let mut first = spawn_sync(&s);
    // Wait for the first to hold the lock (its download has begun).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.path("site/tmp/demo").exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = s.run(&["sync"]);
    expect_fail(&second, 3, &["another vmic", "held by process"]);
    assert!(first.wait().unwrap().success());
    assert_eq!(store_count(&s), 1);
}

/// A private CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certs(dir: &std::path::Path, ca_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    require_tool("openssl");
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ca_key = format!("{ca_name}.key");
    let ca_pem = format!("{ca_name}.pem");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        &format!("/CN={ca_name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join(ca_pem), dir.join("srv.pem"), dir.join("srv.key"))
}

#[test]
fn https_with_a_per_source_ca_file() {
    let s = Site::new(&[("a.img", 70_000)]);
    s.publish();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "vmic-test-ca");
    let server = nginx::Nginx::serve_tls(&s.path("out"), &cert, &key);
    let url = server.url();
    assert!(url.starts_with("https://"));
    // Without the CA the server is not trusted: nothing is imported.
    expect_ok(&s.trust_with(&url, &[]));
    expect_fail(
        &s.run(&["sync"]),
        3,
        &["endorser demo", "invalid peer certificate", "UnknownIssuer"],
    );
    assert!(s.states().is_empty());
    // A different private CA does not help either.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certs(other.path(), "someone-else");
    expect_ok(&s.run(&["trust", "remove", "demo"]));
    expect_ok(&s.trust_with(&url, &["--ca-file", path_str(&other_ca)]));
    assert_ne!(s.run(&["sync"]).status.code(), Some(0));
    // With the right CA file the sync imports.
    expect_ok(&s.run(&["trust", "remove", "demo"]));
    expect_ok(&s.trust_with(&url, &["--ca-file", path_str(&ca)]));
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
    // A missing CA file is refused when trusting, naming it.
    expect_ok(&s.run(&["trust", "remove", "demo"]));
    let o = s.trust_with(&url, &["--ca-file", "/nonexistent/ca.pem"]);
    expect_fail(&o, 2, &["/nonexistent/ca.pem"]);
}

#[test]
fn proxy_variables_are_honoured() {
    // The endorser's host name resolves nowhere; only the proxy reaches it.
    let s = Site::new(&[("a.img", 3 << 20)]);
    s.publish();
    let server = FaultServer::start(s.path("out"));
    let url = format!("http://endorser.vmic-test.invalid:{}/", server.port);
    expect_ok(&s.trust_with(&url, &[]));
    s.set_config("retries = 3", "retries = 0");
    let proxy = ConnectProxy::start();
    let via_proxy = [("http_proxy", proxy.url())];
    let env: Vec<(&str, &str)> = via_proxy.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // no_proxy names the host: it is contacted directly, and fails.
    let mut bypass = env.clone();
    bypass.push(("no_proxy", ".vmic-test.invalid"));
    expect_fail(
        &s.run_env(&["sync"], &bypass),
        3,
        &["endorser.vmic-test.invalid"],
    );
    assert!(proxy.targets.lock().unwrap().is_empty());
    assert!(s.store_files().is_empty());

    expect_ok(&s.run_env(&["sync"], &env));
    let target = format!("endorser.vmic-test.invalid:{}", server.port);
    let targets = proxy.targets.lock().unwrap().clone();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| *t == target),
        "{targets:?}"
    );
    assert_store_holds_source(&s, "a.img");
}

/// A catalog served one byte per 10 ms never goes silent long enough for
/// the read timeout: the overall deadline ends it, the sync fails as
/// retryable, and nothing of the catalog was accepted.
#[test]
fn slow_loris_catalog_is_cut_off_at_the_deadline() {
    let (s, server) = fault_site();
    s.set_config("deadline = \"2m\"", "deadline = \"1s\"");
    server.set(Fault::Trickle("catalog.json".into(), 1));
    let started = std::time::Instant::now();
    expect_fail(&s.run(&["sync"]), 3, &["catalog.json", "deadline"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(s.states().is_empty());
    // The signature has the same deadline.
    server.set(Fault::Trickle("minisig".into(), 1));
    expect_fail(&s.run(&["sync"]), 3, &["catalog.json.minisig", "deadline"]);
    assert!(s.states().is_empty());
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
}

/// An image trickled below `http.min_rate` is cut off after one window;
/// what arrived is kept and the next sync continues from it.
#[test]
fn slow_loris_image_below_the_minimum_rate_is_cut_off_and_resumed() {
    let (s, server) = fault_site();
    s.set_config("min_rate = 4096", "min_rate = 10000000");
    s.set_config("rate_window = \"30s\"", "rate_window = \"1s\"");
    server.set(Fault::Trickle("big.img".into(), 4096));
    let started = std::time::Instant::now();
    expect_fail(&s.run(&["sync"]), 3, &["big.img", "min_rate"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(store_count(&s), 0);
    let part = part_file(&s).expect("what arrived was kept");
    assert!(std::fs::metadata(&part).unwrap().len() > 0);
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_store_holds_source(&s, "big.img");
}

/// A mirror serving other bytes from the first chunk on: the download
/// stops soon after that chunk is hashed instead of fetching the whole
/// image, and the image is quarantined naming the chunk.
#[test]
fn hostile_mirror_wrong_first_chunk_stops_the_download_early() {
    const SIZE: usize = 128 << 20;
    let s = Site::new(&[("big.img", SIZE)]);
    s.publish();
    let served = s.path("out/images/big.img");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&served)
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"EVIL", 0).unwrap();
    drop(file);
    let server = FaultServer::start(s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    let o = s.run(&["sync"]);
    expect_fail(&o, 1, &["chunk 0", "stopped at the first bad chunk"]);
    let sent = server
        .body_bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < SIZE as u64 / 2,
        "{sent} of {SIZE} bytes were fetched"
    );
    assert_eq!(store_count(&s), 0);
    assert!(s.states().iter().all(|(_, st)| st == "quarantined"));
}

/// SIGTERM (or Ctrl-C) during a download: the sync stops like a failed
/// download — exit 3, what arrived kept, the lock released — and the next
/// sync continues with a range request.
#[test]
fn sigterm_during_a_download_stops_like_a_failed_download() {
    stop_signal_during_a_download(libc::SIGTERM, "SIGTERM");
}

/// Ctrl-C at a terminal: the same as SIGTERM.
#[test]
fn sigint_during_a_download_stops_like_a_failed_download() {
    stop_signal_during_a_download(libc::SIGINT, "SIGINT");
}

/// A closed terminal (or `kill -HUP`): the same again.
#[test]
fn sighup_during_a_download_stops_like_a_failed_download() {
    stop_signal_during_a_download(libc::SIGHUP, "SIGHUP");
}

fn stop_signal_during_a_download(signal: i32, name: &str) {
    let (s, server) = fault_site();
    // 64 KiB chunks: what arrived holds whole chunks, which a resume keeps.
    expect_ok(&build(s.tmp.path(), &["--chunk-size", "64K"]));
    server.set(Fault::Trickle("big.img".into(), 16 << 10));
    let child = vmic_command()
        .args(["--site", path_str(&s.path("site")), "sync"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_bytes_sent(&server, 256 << 10);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let o = child.wait_with_output().unwrap();
    expect_fail(&o, 3, &[&format!("interrupted by {name}")]);
    let part = part_file(&s).expect("what arrived was kept");
    assert!(std::fs::metadata(&part).unwrap().len() >= 128 << 10);
    assert_eq!(store_count(&s), 0);
    server.set(Fault::None);
    expect_ok(&s.run(&["sync"]));
    assert_store_holds_source(&s, "big.img");
    let ranges = server.ranges_seen.lock().unwrap().clone();
    assert!(
        ranges
            .iter()
            .any(|r| r.contains("big.img") && !r.ends_with(" 0-")),
        "no resume: {ranges:?}"
    );
}

/// A catalog answered 404 for longer than `policy.gone_after`: reported
/// once as "endorser gone" (exit 1, `gone` hook, `trust list`), then only
/// warned about, instead of a retryable failure at every cron run forever;
/// a catalog published again clears it.
#[test]
fn catalog_missing_for_longer_than_gone_after_reports_the_endorser_gone_once() {
    let (s, _server) = fault_site();
    let hook_log = s.path("hook.log");
    s.set_config(
        "# command = \"/usr/local/bin/vmic-event\"",
        &format!(
            "command = \"echo $VMIC_EVENT $VMIC_ENDORSER >> {}\"",
            hook_log.display()
        ),
    );
    s.set_config("gone_after = \"7d\"", "gone_after = \"1s\"");
    expect_ok(&s.run(&["sync"]));
    // The endorser's publication is gone: no signature, no catalog.
    let catalog = s.path("out/catalog.json.minisig");
    let kept = s.path("catalog.json.minisig.kept");
    std::fs::rename(&catalog, &kept).unwrap();
    expect_fail(&s.run(&["sync"]), 3, &["404", "missing since"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    expect_fail(&s.run(&["sync"]), 1, &["demo is gone", "404"]);
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "import demo\ngone demo\n"
    );
    let list = s.run(&["trust", "list"]);
    assert!(stdout(&list).contains("GONE"), "{}", stdout(&list));
    let json: serde_json::Value =
        serde_json::from_slice(&s.run(&["trust", "list", "--json"]).stdout).unwrap();
    assert!(json[0]["gone_since"].is_string(), "{json}");
    // Reported once: later runs warn and exit 0; the images stay.
    let again = s.run(&["sync"]);
    expect_ok(&again);
    assert!(stderr(&again).contains("gone"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "import demo\ngone demo\n"
    );
    assert_eq!(store_count(&s), 1);
    // Back again: no longer gone.
    std::fs::rename(&kept, &catalog).unwrap();
    expect_ok(&s.run(&["sync"]));
    let list = s.run(&["trust", "list"]);
    assert!(!stdout(&list).contains("GONE"), "{}", stdout(&list));
}

/// A CDN (or an upload in progress) serving one build's `catalog.json`
/// with another build's signature, either way round: the sync reads the
/// generation the signature names, so it sees the new catalog or the old
/// one, whole, and never raises a false verification failure.
#[test]
fn a_cdn_serving_entry_points_of_two_builds_causes_no_false_alarm() {
    let s = Site::new(&[("a.img", 5000)]);
    s.publish();
    let server = nginx::Nginx::serve(&s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    expect_ok(&s.run(&["sync"]));
    let entry = |name: &str| std::fs::read(s.path("out").join(name)).unwrap();
    let (old_catalog, old_signature) = (entry("catalog.json"), entry("catalog.json.minisig"));
    // Build 2 adds b. The CDN serves build 2's catalog.json with build 1's
    // signature: the site sees build 1 again, whole (nothing new, exit 0).
    std::fs::write(s.path("images/b.img"), pattern(6000, 7)).unwrap();
    s.publish();
    let new_signature = entry("catalog.json.minisig");
    std::fs::write(s.path("out/catalog.json.minisig"), &old_signature).unwrap();
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
    // The reverse: build 1's catalog.json with build 2's signature: the
    // site reads build 2, whole.
    std::fs::write(s.path("out/catalog.json"), &old_catalog).unwrap();
    std::fs::write(s.path("out/catalog.json.minisig"), &new_signature).unwrap();
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2, "the new generation was read whole");
    // vmic verify still reports an entry point that is not the signed one.
    std::fs::write(s.path("out/catalog.json"), &old_catalog).unwrap();
    expect_fail(
        &verify(&s.path("out"), &[]),
        1,
        &["is not the catalog its signature names"],
    );
}

/// Cheap polling: a site syncing an unchanged endorser fetches the small
/// signature alone (its signed pointer names the catalog the site kept),
/// not the catalog; a changed one fetches exactly the new generation.
#[test]
fn an_unchanged_endorser_costs_one_signature_fetch() {
    let (s, server) = fault_site();
    expect_ok(&s.run(&["sync"]));
    let sent = || {
        server
            .body_bytes_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let catalog_len = std::fs::metadata(s.path("out/catalog.json")).unwrap().len();
    let before = sent();
    expect_ok(&s.run(&["sync"]));
    let polled = sent() - before;
    assert!(
        polled < 1024 && polled < catalog_len,
        "an unchanged endorser cost {polled} body bytes (catalog: {catalog_len})"
    );
    // The kept copy is authenticated again, not trusted as it is: a local
    // edit makes the site fetch the generation instead.
    let kept: Vec<_> = common::harness::files_under(&s.path("site/catalogs/demo"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("validators.json"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    std::fs::write(&kept[0], b"{}").unwrap();
    let before = sent();
    expect_ok(&s.run(&["sync"]));
    assert!(
        sent() - before >= catalog_len,
        "the generation was fetched again"
    );
    assert_eq!(store_count(&s), 1);
}

/// Catalog mirrors: sources that refuse connections, answer 500, or serve
/// bytes that do not authenticate are passed over for the next one; the
/// sync succeeds (exit 0), reports each source passed over, and tries
/// them after the good one for a while.
#[test]
fn failing_and_tampered_sources_are_passed_over_reported_and_tried_last() {
    let s = Site::new(&[("a.img", 5000)]);
    s.publish();
    let good = nginx::Nginx::serve(&s.path("out"));
    let erroring = FaultServer::start(s.path("out"));
    erroring.set(Fault::Error500("catalog".into()));
    let tampered = s.path("tampered");
    std::fs::create_dir_all(tampered.join("catalogs")).unwrap();
    for name in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(s.path("out").join(name), tampered.join(name)).unwrap();
    }
    let named = generation(&s.path("out"));
    let mut bytes = std::fs::read(&named).unwrap();
    let at = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[at] = b'2';
    std::fs::write(
        tampered.join("catalogs").join(named.file_name().unwrap()),
        bytes,
    )
    .unwrap();
    let refused = "http://127.0.0.1:9/";
    let erroring_url = erroring.url();
    let tampered_url = path_str(&tampered).to_string();
    let good_url = good.url();
    expect_ok(&s.trust_with(
        refused,
        &[
            "--url",
            &erroring_url,
            "--url",
            &tampered_url,
            "--url",
            &good_url,
        ],
    ));
    s.set_config("retries = 3", "retries = 0");
    let o = s.run(&["sync"]);
    expect_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("source http://127.0.0.1:9/ passed over"),
        "{err}"
    );
    assert!(err.contains("500"), "{err}");
    assert!(
        err.contains(&format!("source {tampered_url} passed over"))
            && err.contains("does not match the signed data"),
        "{err}"
    );
    assert_eq!(store_count(&s), 1);
    let failures = || stdout(&s.run(&["log"])).matches("source-failed").count();
    assert_eq!(failures(), 3);
    // Next run: the good source first, nothing passed over.
    expect_ok(&s.run(&["sync"]));
    assert_eq!(failures(), 3);
}

/// `vmic mirror`: a verified copy from nginx into a directory, served by a
/// second nginx and synced by a site; a second run copies nothing; a
/// tampered source leaves DEST serving its previous good generation.
#[test]
fn mirror_copies_verified_serves_sites_and_keeps_the_last_good_generation() {
    let s = Site::new(&[("a.img", 300_000), ("b.img", 5000)]);
    s.publish();
    let upstream = nginx::Nginx::serve(&s.path("out"));
    let dest = s.path("mirror");
    let mirror = || {
        vmic([
            "mirror",
            upstream.url().as_str(),
            path_str(&dest),
            "--pubkey",
            path_str(&demo_pub()),
            "--json",
        ])
    };
    let report = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    let o = mirror();
    expect_ok(&o);
    assert_eq!(report(&o)["copied"].as_array().unwrap().len(), 2);
    expect_ok(&verify(&dest, &[]));
    let served = nginx::Nginx::serve(&dest);
    expect_ok(&s.trust_with(&served.url(), &[]));
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2);
    // Nothing new: nothing copied.
    let o = mirror();
    expect_ok(&o);
    assert_eq!(report(&o)["copied"].as_array().unwrap().len(), 0);
    assert_eq!(report(&o)["unchanged"], true);
    // Upstream's next build has an image tampered in its web root.
    std::fs::write(s.path("images/c.img"), pattern(100_000, 5)).unwrap();
    s.publish();
    let served_c = s.path("out/images/c.img");
    let mut bytes = std::fs::read(&served_c).unwrap();
    bytes[50_000] ^= 1;
    std::fs::write(&served_c, bytes).unwrap();
    expect_fail(&mirror(), 1, &["c.img", "keeps its previous catalog"]);
    let at_dest = read_json(&dest.join("catalog.json"));
    assert_eq!(
        at_dest["serial"], 1,
        "DEST still serves the last good catalog"
    );
    expect_ok(&verify(&dest, &[]));
    // Upstream repaired: the next run completes.
    std::fs::remove_file(&served_c).unwrap();
    s.publish();
    let o = mirror();
    expect_ok(&o);
    assert_eq!(report(&o)["copied"].as_array().unwrap().len(), 1);
    expect_ok(&verify(&dest, &[]));
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 3);
}

/// `kill -9` during a mirror: DEST verifies at every moment (checked in a
/// loop while the mirror runs), and a rerun completes.
#[test]
fn kill_9_during_a_mirror_leaves_dest_verifying_and_a_rerun_completes() {
    let s = Site::new(&[("a.img", 5000)]);
    s.publish();
    let upstream = FaultServer::start(s.path("out"));
    let dest = s.path("mirror");
    let args = |dest: &std::path::Path| {
        [
            "mirror".to_string(),
            upstream.url(),
            path_str(dest).to_string(),
            "--pubkey".into(),
            path_str(&demo_pub()).to_string(),
        ]
    };
    expect_ok(&vmic(args(&dest)));
    // A new build with a big image in 64 KiB chunks, served slowly.
    std::fs::write(s.path("images/big.img"), pattern(4 << 20, 3)).unwrap();
    expect_ok(&build(s.tmp.path(), &["--chunk-size", "64K"]));
    upstream.set(Fault::Trickle("big.img".into(), 32 << 10));
    let mut child = vmic_command()
        .args(args(&dest))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut checks = 0;
    while upstream
        .body_bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1 << 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror never started"
        );
        expect_ok(&verify(&dest, &[]));
        checks += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(checks > 0);
    expect_ok(&verify(&dest, &[]));
    assert_eq!(read_json(&dest.join("catalog.json"))["serial"], 1);
    upstream.set(Fault::None);
    expect_ok(&vmic(args(&dest)));
    assert_eq!(read_json(&dest.join("catalog.json"))["serial"], 2);
    expect_ok(&verify(&dest, &[]));
}

/// `vmic verify` of an http(s) source checks every image too, hashing it
/// as it streams past (nothing is stored): a tampered image on the server
/// is reported with its chunk.
#[test]
fn verify_over_http_checks_every_chunk_of_every_image() {
    let s = Site::new(&[("a.img", 300_000), ("b.img", 5000)]);
    expect_ok(&build(s.tmp.path(), &["--chunk-size", "64K"]));
    let server = nginx::Nginx::serve(&s.path("out"));
    let o = vmic([
        "verify",
        server.url().as_str(),
        "--pubkey",
        path_str(&demo_pub()),
        "--json",
    ]);
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["images"].as_array().unwrap().len(), 2);
    let served = s.path("out/images/a.img");
    let mut bytes = std::fs::read(&served).unwrap();
    bytes[200_000] ^= 1;
    std::fs::write(&served, bytes).unwrap();
    let o = vmic([
        "verify",
        server.url().as_str(),
        "--pubkey",
        path_str(&demo_pub()),
    ]);
    expect_fail(&o, 1, &["a.img", "chunk 3"]);
}

/// Conditional polling against nginx: a signature that has settled is
/// asked for with its validators (an unchanged endorser answers 304), and
/// a new build is still seen at once.
#[test]
fn conditional_polling_sees_every_new_build() {
    let s = Site::new(&[("a.img", 5000)]);
    s.publish();
    let server = nginx::Nginx::serve(&s.path("out"));
    expect_ok(&s.trust_with(&server.url(), &[]));
    // Validators of a file changed in the last seconds are not kept.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    expect_ok(&s.run(&["sync"]));
    let validators = read_json(&s.path("site/catalogs/demo/validators.json"));
    assert!(validators["etag"].is_string(), "{validators}");
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 1);
    std::fs::write(s.path("images/b.img"), pattern(7000, 8)).unwrap();
    s.publish();
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2, "the new build was seen");
}

/// A catalog may name full mirrors of its publication (signed, with
/// `build --mirror`): a site that accepted it tries them after its own
/// source, for images missing at the source and for the catalog when the
/// source is down.
#[test]
fn mirrors_named_in_the_signed_catalog_serve_when_the_source_fails() {
    let s = Site::new(&[("a.img", 5000)]);
    let mirror_dir = s.path("mirror");
    std::fs::create_dir_all(&mirror_dir).unwrap();
    let mirror_server = nginx::Nginx::serve(&mirror_dir);
    let mirror_url = mirror_server.url();
    let publish = |extra: &str| {
        expect_ok(&build(s.tmp.path(), &["--mirror", &mirror_url]));
        expect_ok(&vmic([
            "mirror",
            extra,
            path_str(&mirror_dir),
            "--pubkey",
            path_str(&demo_pub()),
        ]));
    };
    publish(path_str(&s.path("out")));
    let primary = nginx::Nginx::serve(&s.path("out"));
    expect_ok(&s.trust_with(&primary.url(), &[]));
    expect_ok(&s.run(&["sync"]));
    assert_eq!(
        read_json(&s.path("out/catalog.json"))["mirrors"][0],
        mirror_url
    );
    // An image the source lacks (a partial upload) comes from the mirror.
    std::fs::write(s.path("images/b.img"), pattern(6000, 4)).unwrap();
    publish(path_str(&s.path("out")));
    std::fs::remove_file(s.path("out/images/b.img")).unwrap();
    expect_ok(&s.run(&["sync"]));
    assert_eq!(store_count(&s), 2);
    // The source goes down: the catalog comes from the mirror too.
    drop(primary);
    std::fs::write(s.path("images/c.img"), pattern(7000, 5)).unwrap();
    publish(path_str(&s.path("out")));
    let o = s.run(&["sync"]);
    expect_ok(&o);
    assert!(stderr(&o).contains("passed over"), "{}", stderr(&o));
    assert_eq!(store_count(&s), 3);
}
