//! The documents that name tests stay true: every `path::test_name` that
//! docs/SECURITY.md cites as proof exists, as a function in that file.

use std::path::Path;

/// Backticked `path/to/file.rs::name` references in `text`.
fn cited_tests(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| {
            let (file, name) = quoted.split_once(".rs::")?;
            let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid.then(|| (format!("{file}.rs"), name.to_string()))
        })
        .collect()
}

#[test]
fn every_test_the_security_document_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/SECURITY.md")).unwrap();
    let cited = cited_tests(&doc);
    assert!(cited.len() > 50, "only {} citations found", cited.len());
    let mut missing = Vec::new();
    for (file, name) in &cited {
        let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if !source.contains(&format!("fn {name}(")) {
            missing.push(format!("{file}::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/SECURITY.md cites missing tests: {missing:?}"
    );
}

/// Bare backticked test names (`uc_1_3_…`) in docs/TRUST.md.
fn bare_test_names(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|q| q.matches('_').count() >= 4)
        .filter(|q| {
            q.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect()
}

#[test]
fn every_test_the_trust_document_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/TRUST.md")).unwrap();
    let use_cases = std::fs::read_to_string(root.join("tests/vmic_use_cases.rs")).unwrap();
    let bare = bare_test_names(&doc);
    assert!(bare.len() > 20, "only {} test names found", bare.len());
    let mut missing: Vec<String> = bare
        .iter()
        .filter(|name| !use_cases.contains(&format!("fn {name}(")))
        .cloned()
        .collect();
    for (file, name) in cited_tests(&doc) {
        let source = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
        if !source.contains(&format!("fn {name}(")) {
            missing.push(format!("{file}::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/TRUST.md cites missing tests: {missing:?}"
    );
}
