//! Helpers shared by the integration tests: run the real binary, make image
//! trees, sign hand-made catalogs with the demo key.
#![allow(dead_code)]

pub mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const VMIC: &str = env!("CARGO_BIN_EXE_vmic");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("fixtures")
}

pub fn demo_key() -> PathBuf {
    fixtures().join("demo-key/demo.key")
}

pub fn demo_pub() -> PathBuf {
    fixtures().join("demo-key/demo.key.pub")
}

/// The vmic command every test runs: no password in the environment, the
/// test process's own build state root.
pub fn vmic_command() -> Command {
    let mut cmd = Command::new(VMIC);
    cmd.env_remove("VMIC_PASSWORD")
        .env("XDG_STATE_HOME", state_home());
    cmd
}

/// Run vmic with args; no terminal, no password in the environment.
pub fn vmic<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    vmic_command().args(args).output().expect("run vmic")
}

/// The build state root of this test process, so tests never write into
/// the real home directory (each OUT_DIR gets its own subdirectory). Under
/// Cargo's target/tmp: a static is never dropped, so a temporary directory
/// would be left behind in /tmp by every run.
pub fn state_home() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("state-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("state home")
            .keep()
    })
}

/// Run vmic, failing the test (instead of hanging it) if it has not ended
/// within `secs` seconds.
pub fn vmic_within<I, S>(secs: u64, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = vmic_command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vmic");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "vmic did not end within {secs}s: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn vmic_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = vmic_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vmic")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code and that stderr mentions every needle.
#[track_caller]
pub fn expect_fail(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

#[track_caller]
pub fn expect_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A temp dir with `images/` holding a few images of given sizes.
pub fn image_tree(sizes: &[(&str, usize)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (i, (name, size)) in sizes.iter().enumerate() {
        let p = images.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, pattern(*size, i as u64 + 1)).unwrap();
    }
    dir
}

/// `vmic build <dir>/images --key demo --out <dir>/out` plus extra args.
pub fn build(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build".to_string(),
        dir.join("images").display().to_string(),
        "--key".into(),
        demo_key().display().to_string(),
        "--out".into(),
        dir.join("out").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    vmic(args)
}

pub fn verify(target: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify".to_string(),
        target.display().to_string(),
        "--pubkey".into(),
        demo_pub().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    vmic(args)
}

pub fn demo_secret() -> vmic_format::minisign::SecretKey {
    let text = std::fs::read_to_string(demo_key()).unwrap();
    vmic_format::minisign::SecretKey::parse(&text, None).unwrap()
}

/// The immutable generation `OUT/catalogs/<sha256>.json` that the
/// signature of a freshly built `OUT/catalog.json` names: the bytes a
/// reader actually fetches.
pub fn generation(out: &Path) -> PathBuf {
    let bytes = std::fs::read(out.join("catalog.json")).unwrap();
    let sha = vmic_format::digest::Sha256Digest::of(&bytes);
    out.join(format!("catalogs/{sha}.json"))
}

/// Write `bytes` as OUT/catalog.json with a valid demo-key signature.
pub fn write_signed(out: &Path, bytes: &[u8], trusted_comment: &str) {
    let sig = demo_secret().sign(bytes, trusted_comment, "test signature");
    std::fs::write(out.join("catalog.json"), bytes).unwrap();
    std::fs::write(out.join("catalog.json.minisig"), sig.to_file_string()).unwrap();
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Tests that drive a real peer tool need it installed; .ci/run installs them,
/// so on CI a missing tool is a failure, not a skip.
#[track_caller]
pub fn require_tool(name: &str) {
    assert!(
        has_tool(name),
        "{name} is required for this test (apt-get install {name}; .ci/run does this)"
    );
}

/// `mkfifo PATH`: a FIFO planted where vmic expects a file.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Copy the tree `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `qemu-img create -q ARGS...` in `dir` (qemu-utils; .ci/run installs it):
/// real qcow2 and VMDK images for the tests of image inspection.
pub fn qemu_img(dir: &Path, args: &[&str]) {
    require_tool("qemu-img");
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(["create", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", stderr(&out));
}

/// A TCP port free on 127.0.0.1 now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
