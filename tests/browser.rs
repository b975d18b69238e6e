//! The catalog page (`index.html`) in a real browser: headless Chromium
//! driven through chromedriver (Debian's `chromium` and `chromium-driver`;
//! .ci/run installs them). The page loads from `file://` and over nginx
//! with no request leaving its directory and no console error; filtering
//! works by every field and by several words; copy buttons copy the exact
//! commands; an expired catalog shows its banner. Screenshots at phone and
//! desktop widths are kept in `target/test-artifacts/`.

mod common;

#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};

use common::*;
use webdriver::Browser;

/// The fixtures built with `extra` arguments into a fresh directory.
fn publication(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pub");
    let mut args = vec![
        "build".to_string(),
        path_str(&fixtures().join("images")).to_string(),
        "--key".into(),
        path_str(&demo_key()).to_string(),
        "--out".into(),
        path_str(&out).to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vmic"));
    cmd.args(&args)
        .env("XDG_STATE_HOME", tmp.path().join("state"));
    let o = cmd.output().unwrap();
    expect_ok(&o);
    (tmp, out)
}

fn artefact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(name)
}

/// The ids of the images whose summary rows are shown.
fn shown(browser: &Browser) -> Vec<String> {
    let ids = browser.script(
        "return Array.from(document.querySelectorAll('tr[data-filter]'))\
         .filter(r => !r.hidden).map(r => r.querySelector('code') ? r.querySelector('code').textContent : r.cells[0].textContent.trim());",
    );
    let mut ids: Vec<String> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every resource the page loaded, and the page itself, is under `dir`.
fn nothing_leaves(browser: &Browser, dir: &str) {
    let urls = browser.script(
        "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
    );
    for url in urls.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(url.starts_with(dir), "{url} is outside {dir}");
    }
}

/// Filtering, copy buttons and screenshots, for the page at `url`.
fn exercise(browser: &Browser, url: &str, dir: &str, tag: &str) {
    browser.goto(url);
    nothing_leaves(browser, dir);
    let all = shown(browser);
    assert_eq!(all.len(), 5, "{all:?}");
    for (query, expected) in [
        ("centos", vec!["centos-stream-9"]),
        ("centos 9", vec!["centos-stream-9"]),
        ("CentOS x86_64 cloud-init", vec!["centos-stream-9"]),
        ("debian 12.8", vec!["debian-12"]),
        ("vmdk", vec!["debian-12"]),
        ("iso", vec!["rescue"]),
        ("kvm", vec!["centos-stream-9"]),
        ("memory:512", vec!["rescue", "scratch", "tools-firmware"]),
        ("centos nomatch", vec![]),
    ] {
        browser.type_into("#filter-box", query);
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        if query == "memory:512" {
            // Images with no stated minimum fit any machine.
            expected = shown(browser);
            assert!(
                !expected.contains(&"centos-stream-9".to_string()),
                "{expected:?}"
            );
            continue;
        }
        expected.sort();
        assert_eq!(shown(browser), expected, "query {query:?}");
    }
    browser.type_into("#filter-box", "");
    assert_eq!(shown(browser).len(), 5);
    // Copy buttons put the exact command on the clipboard (recorded here:
    // a file:// page is no secure context, so the clipboard is stubbed).
    browser.script(
        "window.__copied = []; Object.defineProperty(navigator, 'clipboard', {configurable: true, \
         value: {writeText: t => { window.__copied.push(t); return Promise.resolve(); }}});",
    );
    browser.click("#img-centos-stream-9-20261101\\.0 .copy-button");
    let copied = browser.script("return window.__copied;");
    let catalog_dir = browser.script("return document.querySelector('.catalog-url').textContent;");
    let catalog_dir = catalog_dir.as_str().unwrap();
    assert_eq!(
        copied[0].as_str().unwrap(),
        format!(
            "vmic check ~/Downloads/centos-stream-9.qcow2 --catalog {catalog_dir} --pubkey endorser.pub"
        )
    );
    assert!(
        dir.ends_with(catalog_dir) || dir.starts_with("http") && catalog_dir == dir,
        "{catalog_dir} vs {dir}"
    );
    browser.script("window.__copied = [];");
    browser.click(
        "#img-centos-stream-9-20261101\\.0 pre.copy + .copy-button + p + pre.copy + .copy-button",
    );
    let stock = browser.script("return window.__copied[0];");
    assert!(
        stock
            .as_str()
            .unwrap()
            .contains("minisign -Vm SHA256SUMS -p endorser.pub && grep -qxF"),
        "{stock}"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
    for (name, width, height) in [("phone", 390, 844), ("desktop", 1280, 900)] {
        browser.window(width, height);
        browser.script("window.scrollTo(0, 0);");
        // Nothing makes the whole page scroll sideways (tables scroll in
        // their own box).
        let overflow = browser.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name}: {overflow}px too wide"
        );
        browser.screenshot(&artefact(&format!("index-{tag}-{name}.png")));
    }
}

#[test]
fn the_catalog_page_works_in_chromium_from_a_file_and_over_nginx() {
    let (tmp, out) = publication(&["--base-url", "https://images.example.org/demo"]);
    let browser = Browser::start(&tmp.path().join("profile"));
    let dir = format!("file://{}/", out.display());
    exercise(&browser, &format!("{dir}index.html"), &dir, "file");
    let server = nginx::Nginx::serve(&out);
    let base = format!("{}/", server.url().trim_end_matches('/'));
    exercise(&browser, &format!("{base}index.html"), &base, "nginx");
    // Over HTTP the one-file check names the catalog's URL.
    let url = browser.script("return document.querySelector('.catalog-url').textContent;");
    assert_eq!(url.as_str().unwrap(), base);
}

#[test]
fn an_expired_catalog_shows_its_banner_and_a_fresh_one_its_time_left() {
    let visible = |browser: &Browser, id: &str| {
        browser
            .script(&format!("return !document.getElementById('{id}').hidden;"))
            .as_bool()
            .unwrap()
    };
    let text = |browser: &Browser, id: &str| {
        let value = browser.script(&format!(
            "return document.getElementById('{id}').textContent;"
        ));
        value.as_str().unwrap().to_string()
    };
    let (tmp, expired) = publication(&["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let browser = Browser::start(&tmp.path().join("profile"));
    browser.goto(&format!("file://{}/index.html", expired.display()));
    assert!(visible(&browser, "expired-warning"));
    assert!(
        text(&browser, "expires-in").starts_with("(expired "),
        "{}",
        text(&browser, "expires-in")
    );
    browser.screenshot(&artefact("index-expired-desktop.png"));
    // Expiring within three days: shown as stale, not expired.
    let (_t1, stale) = publication(&["--expires", "1d"]);
    browser.goto(&format!("file://{}/index.html", stale.display()));
    assert!(!visible(&browser, "expired-warning"));
    assert!(visible(&browser, "stale-warning"));
    assert!(
        text(&browser, "expires-in").starts_with("(expires in 23 hours")
            || text(&browser, "expires-in").starts_with("(expires in 1 day"),
        "{}",
        text(&browser, "expires-in")
    );
    let (_t2, fresh) = publication(&["--expires", "30d"]);
    browser.goto(&format!("file://{}/index.html", fresh.display()));
    assert!(!visible(&browser, "expired-warning") && !visible(&browser, "stale-warning"));
    let left = text(&browser, "expires-in");
    assert!(
        left == "(expires in 29 days)" || left == "(expires in 30 days)",
        "{left}"
    );
    assert!(browser.console_errors().is_empty());
}

/// `--no-images --base-url`: "Download" points at the image's URL, which
/// exists, not at a path of the publication, which does not.
#[test]
fn without_published_images_download_links_go_to_the_base_url() {
    let (tmp, out) = publication(&[
        "--no-images",
        "--base-url",
        "https://images.example.org/demo",
    ]);
    assert!(!out.join("images").exists());
    let browser = Browser::start(&tmp.path().join("profile"));
    browser.goto(&format!("file://{}/index.html", out.display()));
    let href = browser.script(
        "return document.querySelector('[id=\"img-centos-stream-9-20261101.0\"] a[download]').href;",
    );
    assert_eq!(
        href,
        "https://images.example.org/demo/images/centos-stream-9.qcow2"
    );
}
