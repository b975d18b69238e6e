//! The documents that name tests stay true: every `path::test_name` that
//! docs/SECURITY.md cites as proof exists, as a function in that file.

mod common;

use std::path::Path;

use common::*;

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

/// The subcommands `vmic [CMD...] --help` lists, as paths (`trust add`).
fn subcommands(path: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = stdout(&vmic(args));
    let Some((_, listed)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in listed.lines().take_while(|l| l.starts_with("  ")) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.is_empty() || name == "help" {
            continue;
        }
        let mut sub: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        sub.push(name.to_string());
        let nested: Vec<&str> = sub.iter().map(String::as_str).collect();
        found.extend(subcommands(&nested));
        found.push(sub);
    }
    found
}

/// `scripts/install.sh` with the test's binary: every command, nested
/// ones included, has its man page, and the completion scripts know the
/// commands (bash's parses).
#[test]
fn install_puts_a_man_page_for_every_command_and_completions_in_place() {
    let prefix = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(prefix.path())
        .env("VMIC", env!("CARGO_BIN_EXE_vmic"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let man = prefix.path().join("share/man/man1");
    let commands = subcommands(&[]);
    assert!(commands.len() > 25, "{commands:?}");
    for command in commands.iter().chain(std::iter::once(&Vec::new())) {
        let mut name = vec!["vmic".to_string()];
        name.extend(command.iter().cloned());
        let page = man.join(format!("{}.1", name.join("-")));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{}", page.display());
    }
    let bash = prefix.path().join("share/bash-completion/completions/vmic");
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    for file in [
        bash,
        prefix.path().join("share/zsh/site-functions/_vmic"),
        prefix
            .path()
            .join("share/fish/vendor_completions.d/vmic.fish"),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("audit") && text.contains("sync"),
            "{}",
            file.display()
        );
    }
    assert!(prefix.path().join("bin/vmic").is_file());
}

/// The shipped systemd units pass `systemd-analyze verify` (the test's
/// binary as ExecStart), and the man pages they cite are ones vmic writes
/// (checked here rather than by `man`, which minimal systems stub out).
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let man = dir.path().join("man1");
    expect_ok(&vmic(["man", "--out", path_str(&man)]));
    for unit in ["vmic-sync.service", "vmic-sync.timer"] {
        let text = std::fs::read_to_string(contrib.join(unit)).unwrap();
        for cited in text
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation=man:"))
        {
            let page = cited.replace("(1)", ".1");
            assert!(
                man.join(&page).is_file(),
                "{unit} cites {cited}, not a vmic page"
            );
        }
        let text = text.replace("/usr/local/bin/vmic", env!("CARGO_BIN_EXE_vmic"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("vmic-sync.service"))
        .arg(dir.path().join("vmic-sync.timer"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "", "warnings");
}

/// `--site` shows only where a site is used, every help has its usage, and
/// the site may be given before or after the command's name.
#[test]
fn help_shows_site_only_on_site_commands() {
    for (command, has_site) in [
        (vec!["build"], false),
        (vec!["key", "rotate"], false),
        (vec!["verify"], false),
        (vec!["export", "hepix"], false),
        (vec!["sync"], true),
        (vec!["trust", "add"], true),
        (vec!["audit"], true),
    ] {
        let mut args = command.clone();
        args.push("--help");
        let help = stdout(&vmic(args));
        assert!(help.contains("Usage: vmic"), "{command:?}: {help}");
        assert_eq!(help.contains("--site"), has_site, "{command:?}: {help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    expect_ok(&vmic(["site", "init", "--site", path_str(&site)]));
    expect_ok(&vmic(["images", "--site", path_str(&site)]));
    expect_ok(&vmic(["--site", path_str(&site), "images"]));
}
