//! An endorser (images + publication) and a site, driven through the real
//! binary: shared by the directory (`tests/site.rs`) and HTTP
//! (`tests/http.rs`) end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::*;

pub struct Harness {
    pub tmp: tempfile::TempDir,
}

impl Harness {
    /// Images under `images/`, an initialised site under `site/`.
    pub fn new(images: &[(&str, usize)]) -> Harness {
        let h = Harness {
            tmp: image_tree(images),
        };
        expect_ok(&h.run(&["site", "init"]));
        h
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `vmic --site SITE ARGS...`
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--site".to_string(),
            self.path("site").display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        vmic(all)
    }

    /// `vmic --site SITE ARGS...` with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let site = self.path("site").display().to_string();
        let mut all = vec!["--site", site.as_str()];
        all.extend(args);
        vmic_env(all, env)
    }

    /// Build `images/` into `out/` with the demo key.
    pub fn publish(&self) {
        expect_ok(&build(self.tmp.path(), &[]));
    }

    /// `trust add demo` with the demo key, `url` and extra arguments.
    pub fn trust_with(&self, url: &str, extra: &[&str]) -> Output {
        let key = demo_pub();
        let mut args = vec![
            "trust",
            "add",
            "demo",
            "--pubkey",
            path_str(&key),
            "--url",
            url,
        ];
        args.extend(extra);
        self.run(&args)
    }

    /// Replace the first occurrence of `from` in site.toml.
    /// Make the executable `script` the site's hook command.
    pub fn hook_command(&self, script: &Path) {
        let conf = std::fs::read_to_string(self.path("site/site.toml")).unwrap();
        let line = conf
            .lines()
            .find(|l| l.starts_with("command = ") || l.starts_with("# command = "))
            .unwrap()
            .to_string();
        self.set_config(&line, &format!("command = \"{}\"", script.display()));
    }

    pub fn set_config(&self, from: &str, to: &str) {
        let p = self.path("site/site.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "site.toml lacks {from}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// `vmic images --json`.
    pub fn images(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["images", "--json"]);
        expect_ok(&o);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `(id@version, state)` of every image, sorted.
    pub fn states(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .images()
            .iter()
            .map(|i| {
                let label = format!(
                    "{}@{}",
                    i["id"].as_str().unwrap(),
                    i["version"].as_str().unwrap()
                );
                (label, i["state"].as_str().unwrap().to_string())
            })
            .collect();
        out.sort();
        out
    }

    /// Files in the store, relative to it, sorted.
    pub fn store_files(&self) -> Vec<String> {
        let store = self.path("site/store");
        let mut files: Vec<String> = files_under(&store)
            .into_iter()
            .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
            .collect();
        files.sort();
        files
    }
}

/// Every file below `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
