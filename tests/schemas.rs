//! Every `--json` output has a JSON Schema in `docs/schemas/`, and real
//! outputs of the binary are validated against them here, so scripts can
//! rely on the documented shape (a field added, renamed or retyped without
//! the schema fails this test).

mod common;

use std::path::Path;

use common::harness::Harness;
use common::*;

fn schema(name: &str) -> jsonschema::Validator {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/schemas/{name}.schema.json"));
    let schema = read_json(&path);
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The output of `args` (exit `code`) conforms to schema `name`.
#[track_caller]
fn conforms(name: &str, o: &std::process::Output) {
    let value: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}{}", stdout(o), stderr(o)));
    let validator = schema(name);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

#[test]
fn every_json_output_conforms_to_its_schema() {
    let h = Harness::new(&[("a.img", 100_000), ("b.img", 5000)]);
    let o = build(h.tmp.path(), &["--json"]);
    expect_ok(&o);
    conforms("build", &o);
    let o = verify(&h.path("out"), &["--json"]);
    conforms("verify", &o);
    expect_ok(&h.trust_with(path_str(&h.path("out")), &[]));
    let o = h.run(&["sync", "--json"]);
    expect_ok(&o);
    conforms("sync", &o);
    conforms("trust-list", &h.run(&["trust", "list", "--json"]));
    conforms("images", &h.run(&["images", "--json"]));
    conforms("reverify", &h.run(&["reverify", "--json"]));
    conforms("log", &h.run(&["log", "--json"]));
    conforms("log-verify", &h.run(&["log", "--verify", "--json"]));
    let hv = h.path("hv");
    std::fs::create_dir_all(&hv).unwrap();
    std::fs::copy(h.path("images/a.img"), hv.join("disk.img")).unwrap();
    std::fs::write(hv.join("rogue.img"), b"not an image").unwrap();
    conforms("audit", &h.run(&["audit", path_str(&hv), "--json"]));
    conforms(
        "check",
        &h.run(&[
            "check",
            "--json",
            path_str(&hv.join("disk.img")),
            path_str(&hv.join("rogue.img")),
        ]),
    );
    // Failures have their shape too: problems in verify and check.
    let image = h.path("out/images/a.img");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[5] ^= 1;
    std::fs::remove_file(&image).unwrap();
    std::fs::write(&image, &bytes).unwrap();
    let o = verify(&h.path("out"), &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    conforms("verify", &o);
    std::fs::write(hv.join("disk.img"), &bytes).unwrap();
    conforms(
        "check",
        &h.run(&["check", "--json", path_str(&hv.join("disk.img"))]),
    );
}

/// Every schema in docs/schemas is itself a valid schema and is one this
/// file validates outputs against.
#[test]
fn every_schema_compiles_and_is_exercised() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let this = std::fs::read_to_string(file!()).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let name = name.strip_suffix(".schema.json").unwrap();
        schema(name);
        assert!(
            this.contains(&format!("conforms(\"{name}\""))
                || this.contains(&format!("\"{name}\",\n")),
            "{name} is never checked"
        );
    }
}

/// The endorser-side and VO outputs, and the error document of `verify`.
#[test]
fn publisher_vo_and_error_outputs_conform_to_their_schemas() {
    let h = Harness::new(&[("a.img", 5000)]);
    expect_ok(&build(h.tmp.path(), &[]));
    let out = h.path("out");
    conforms(
        "resign",
        &vmic([
            "resign",
            path_str(&out),
            "--key",
            path_str(&demo_key()),
            "--json",
        ]),
    );
    conforms(
        "mirror",
        &vmic([
            "mirror",
            path_str(&out),
            path_str(&h.path("mirror")),
            "--pubkey",
            path_str(&demo_pub()),
            "--json",
        ]),
    );
    let manager = h.path("manager.key");
    conforms(
        "keygen",
        &vmic(["keygen", "--out", path_str(&manager), "-W", "--json"]),
    );
    let toml = h.path("VO.toml");
    std::fs::write(
        &toml,
        format!(
            "[vo]\nname = \"atlas\"\n[[endorser]]\nname = \"demo\"\npubkey = \"{}\"\nurls = [\"file://{}\"]\n",
            demo_pub().display(),
            out.display()
        ),
    )
    .unwrap();
    let vo_dir = h.path("vo");
    conforms(
        "vo-build",
        &vmic([
            "vo",
            "build",
            path_str(&toml),
            "--key",
            path_str(&manager),
            "--out",
            path_str(&vo_dir),
            "--json",
        ]),
    );
    let manager_pub = format!("{}.pub", manager.display());
    conforms(
        "verify-vo",
        &vmic([
            "verify",
            "--vo",
            path_str(&vo_dir),
            "--pubkey",
            &manager_pub,
            "--json",
        ]),
    );
    expect_ok(&h.run(&[
        "vo",
        "add",
        "atlas",
        "--pubkey",
        &manager_pub,
        "--url",
        path_str(&vo_dir),
    ]));
    expect_ok(&h.run(&["sync"]));
    conforms("vo-list", &h.run(&["vo", "list", "--json"]));
    conforms("log-head", &h.run(&["log", "--head", "--json"]));
    conforms(
        "bundle",
        &h.run(&["bundle", "--out", path_str(&h.path("bundle")), "--json"]),
    );
    let rotated = h.path("new.key");
    expect_ok(&vmic(["keygen", "--out", path_str(&rotated), "-W"]));
    conforms(
        "key-rotate",
        &vmic([
            "key",
            "rotate",
            "--out",
            path_str(&out),
            "--key",
            path_str(&demo_key()),
            "--new-key",
            path_str(&rotated),
            "--json",
        ]),
    );
    // A catalog that cannot be authenticated: the error document.
    let o = vmic(["verify", path_str(&out), "--pubkey", &manager_pub, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    conforms("verify", &o);
}
