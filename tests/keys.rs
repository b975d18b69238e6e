//! Keys: creation, protection, passwords, and interop with stock minisign.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn keygen_writes_0600_secret_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("k.key");
    let o = vmic(["keygen", "--out", path_str(&key), "-W"]);
    expect_ok(&o);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pubkey = std::fs::read_to_string(tmp.path().join("k.key.pub")).unwrap();
    let parsed = vmic_format::minisign::PublicKey::parse(&pubkey).unwrap();
    assert!(stdout(&o).contains(&parsed.key_id.to_string()));
    let before = std::fs::read(&key).unwrap();
    expect_fail(
        &vmic(["keygen", "--out", path_str(&key), "-W"]),
        2,
        &["already exists", "--force"],
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "key was overwritten");
    expect_ok(&vmic(["keygen", "--out", path_str(&key), "-W", "--force"]));
    assert_ne!(std::fs::read(&key).unwrap(), before);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn encrypted_key_needs_the_right_password() {
    let tmp = image_tree(&[("a.raw", 4096)]);
    let key = tmp.path().join("enc.key");
    let o = vmic_env(
        ["keygen", "--out", path_str(&key), "--json"],
        &[("VMIC_PASSWORD", "correct horse")],
    );
    expect_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["encrypted"], true);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(vmic_format::minisign::SecretKey::is_encrypted(&text).unwrap());

    let out = tmp.path().join("out");
    let args = |key: &std::path::Path| {
        vec![
            "build".to_string(),
            tmp.path().join("images").display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    // No terminal and no password source: a clear usage error.
    expect_fail(&vmic(args(&key)), 2, &["VMIC_PASSWORD", "--password-file"]);
    expect_fail(
        &vmic_env(args(&key), &[("VMIC_PASSWORD", "wrong")]),
        2,
        &["wrong password", "enc.key"],
    );
    assert!(!out.exists(), "a failed unlock must not create the output");
    let pwfile = tmp.path().join("pw");
    std::fs::write(&pwfile, "correct horse\n").unwrap();
    let mut with_file = args(&key);
    with_file.extend(["--password-file".to_string(), pwfile.display().to_string()]);
    expect_ok(&vmic(with_file));
    let o = vmic([
        "verify",
        path_str(&out),
        "--pubkey",
        &format!("{}.pub", key.display()),
    ]);
    expect_ok(&o);
}

#[test]
fn vmic_encrypted_key_signs_with_stock_minisign() {
    require_tool("minisign");
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("v.key");
    expect_ok(&vmic_env(
        ["keygen", "--out", path_str(&key)],
        &[("VMIC_PASSWORD", "pw123")],
    ));
    let msg = tmp.path().join("msg.txt");
    std::fs::write(&msg, b"hello minisign").unwrap();
    let mut child = Command::new("minisign")
        .args(["-S", "-s", path_str(&key), "-m", path_str(&msg)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pw123\n").unwrap();
    let signed = child.wait_with_output().unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let verified = Command::new("minisign")
        .args([
            "-V",
            "-m",
            path_str(&msg),
            "-p",
            &format!("{}.pub", key.display()),
        ])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// A key made by `minisign -G -W`, used by vmic to build, then the catalog
/// re-signed by stock minisign (prehashed and legacy) and verified by vmic.
#[test]
fn minisign_made_key_and_signatures_work_in_vmic() {
    require_tool("minisign");
    let tmp = image_tree(&[("a.raw", 8192), ("b.img", 100_000)]);
    let key = tmp.path().join("m.key");
    let pubkey = tmp.path().join("m.pub");
    let generated = Command::new("minisign")
        .args(["-G", "-W", "-p", path_str(&pubkey), "-s", path_str(&key)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let out = tmp.path().join("out");
    expect_ok(&vmic([
        "build",
        path_str(&tmp.path().join("images")),
        "--key",
        path_str(&key),
        "--out",
        path_str(&out),
    ]));
    let verify_with_minisign_key =
        || vmic(["verify", path_str(&out), "--pubkey", path_str(&pubkey)]);
    expect_ok(&verify_with_minisign_key());
    for legacy in [false, true] {
        let mut args = vec!["-S", "-s", path_str(&key), "-m", "catalog.json"];
        if legacy {
            args.push("-l");
        }
        let s = Command::new("minisign")
            .args(&args)
            .current_dir(&out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        let sig = std::fs::read_to_string(out.join("catalog.json.minisig")).unwrap();
        let parsed = vmic_format::minisign::Signature::parse(&sig).unwrap();
        assert_eq!(parsed.prehashed, !legacy);
        expect_ok(&verify_with_minisign_key());
    }
    // The signature still has to cover these exact bytes.
    let mut bytes = std::fs::read(out.join("catalog.json")).unwrap();
    bytes.push(b' ');
    std::fs::write(out.join("catalog.json"), &bytes).unwrap();
    expect_fail(&verify_with_minisign_key(), 1, &["does not match"]);
}

#[test]
fn vmic_unencrypted_key_signs_with_stock_minisign() {
    require_tool("minisign");
    let tmp = tempfile::tempdir().unwrap();
    let msg = tmp.path().join("m");
    std::fs::write(&msg, b"data").unwrap();
    let s = Command::new("minisign")
        .args(["-S", "-s", path_str(&demo_key()), "-m", path_str(&msg)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let v = Command::new("minisign")
        .args(["-V", "-m", path_str(&msg), "-p", path_str(&demo_pub())])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn vmic_sign_matches_minisign_format() {
    require_tool("minisign");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("list.json");
    std::fs::write(&file, b"{}").unwrap();
    expect_ok(&vmic([
        "sign",
        path_str(&file),
        "--key",
        path_str(&demo_key()),
    ]));
    let v = Command::new("minisign")
        .args(["-V", "-m", path_str(&file), "-p", path_str(&demo_pub())])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn a_public_key_or_a_binary_file_given_as_a_key_is_an_input_error() {
    let tmp = image_tree(&[("a.raw", 1000)]);
    let o = vmic([
        "build".as_ref(),
        tmp.path().join("images").as_os_str(),
        "--key".as_ref(),
        demo_pub().as_os_str(),
        "--out".as_ref(),
        tmp.path().join("out").as_os_str(),
    ]);
    expect_fail(&o, 2, &["this is a public key", "demo.key.pub"]);
    assert!(!tmp.path().join("out").exists());
    let binary = tmp.path().join("binary.pub");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
    let o = vmic([
        "verify".as_ref(),
        tmp.path().as_os_str(),
        "--pubkey".as_ref(),
        binary.as_os_str(),
    ]);
    expect_fail(&o, 2, &["binary.pub"]);
}

/// A catalog re-signed with stock `minisign -S` (a trusted comment naming
/// no generation) still verifies and syncs, by the plain `catalog.json`.
#[test]
fn a_catalog_resigned_by_stock_minisign_verifies_and_syncs_by_the_plain_path() {
    require_tool("minisign");
    let h = common::harness::Harness::new(&[("a.img", 5000)]);
    h.publish();
    let out = h.path("out");
    let s = Command::new("minisign")
        .args(["-S", "-s", path_str(&demo_key()), "-m"])
        .arg(out.join("catalog.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let signature = std::fs::read_to_string(out.join("catalog.json.minisig")).unwrap();
    assert!(!signature.contains("sha256:"), "{signature}");
    // Not even the generation is needed then.
    std::fs::remove_dir_all(out.join("catalogs")).unwrap();
    expect_ok(&verify(&out, &[]));
    expect_ok(&h.trust_with(path_str(&out), &[]));
    expect_ok(&h.run(&["sync"]));
    assert_eq!(h.store_files().len(), 1);
}
