//! The layer rules of docs/ARCHITECTURE.md, checked on the manifests: a
//! sideways or upward dependency between vmic crates, or a heavy dependency
//! in the format crate, fails here even where Cargo would accept it.

use std::collections::BTreeSet;
use std::path::Path;

/// The normal (non-dev) dependencies a crate's manifest names.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn crate_deps(name: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    dependencies(&root.join("crates").join(name).join("Cargo.toml"))
}

fn vmic_deps(name: &str) -> Vec<String> {
    crate_deps(name)
        .into_iter()
        .filter(|d| d.starts_with("vmic"))
        .collect()
}

#[test]
fn each_crate_depends_only_on_the_layers_below_it() {
    assert_eq!(vmic_deps("vmic-format"), Vec::<String>::new());
    assert_eq!(vmic_deps("vmic-engine"), ["vmic-format"]);
    assert_eq!(vmic_deps("vmic-endorser"), ["vmic-engine", "vmic-format"]);
    assert_eq!(vmic_deps("vmic-site"), ["vmic-engine", "vmic-format"]);
    // The fuzz harnesses sit above every library and below nothing: the
    // binary may use them only in tests.
    assert_eq!(
        vmic_deps("vmic-fuzz"),
        ["vmic-endorser", "vmic-engine", "vmic-format", "vmic-site"]
    );
    let root = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    assert!(
        !root.contains("vmic-fuzz"),
        "the binary depends on vmic-fuzz"
    );
}

#[test]
fn the_format_crate_has_no_io_pool_database_or_template_dependency() {
    let deps = crate_deps("vmic-format");
    for heavy in [
        "ureq",
        "rusqlite",
        "rayon",
        "minijinja",
        "libc",
        "walkdir",
        "tempfile",
    ] {
        assert!(!deps.contains(heavy), "vmic-format depends on {heavy}");
    }
    let lib = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/vmic-format/src/lib.rs"),
    )
    .unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}
