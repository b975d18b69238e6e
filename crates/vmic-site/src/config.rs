//! Site configuration (`site.toml`): approval policy, deny rules, hooks and
//! HTTP settings. Strict like every vmic TOML file: unknown keys are errors
//! naming the file and line.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::Image;
use crate::error::{Error, Result};
pub use crate::model::ApproveMode;

/// The `site.toml` that `vmic site init` writes, with every default spelled out.
pub const DEFAULT_SITE_TOML: &str = r#"# vmic site configuration. See docs/SITE.md.

[policy]
# Default approval for newly trusted endorsers: "auto" imports verified
# images at once; "manual" waits for `vmic approve`.
approve = "auto"
# What happens to imported images when their catalog expires and no fresh
# one can be had: "withdraw" (remove from the store) or "keep".
on_expired = "withdraw"
# Largest catalog.json accepted, in bytes.
max_catalog_size = 268435456
# After a download fails its check (quarantine), wait this long before
# fetching that image again; the wait doubles with each further failure,
# up to a day.
quarantine_backoff = "1h"
# Warn (text, --json, `expiring` hook once per catalog) when the accepted
# catalog expires within this time: its endorser should re-sign it.
expiry_warning = "7d"
# A catalog missing (HTTP 404/410, or no catalog.json) for this long marks
# its endorser "gone": reported once (exit 1, hook), shown in trust list.
gone_after = "7d"
# An image whose bytes (signed SHA-256 and size) are already in use here,
# under another endorser or version, needs no second `vmic approve`, and is
# linked from the local copy (verified) instead of downloaded again.
carry_approval = true
# Images whose headers point outside them (a qcow2 backing or data file, a
# VMDK extent or parent) would make the hypervisor open host files; they
# are quarantined even when signed, unless this is true.
allow_external_references = false

# Deny rules: an image matching every key given in one rule is rejected.
# [[policy.deny]]
# os = "windows"
# [[policy.deny]]
# arch = "i686"
# [[policy.deny]]
# max_size = 107374182400   # anything larger than 100 GB

[hooks]
# Command run for every event (import, revoke, expire, quarantine, reject,
# pending, rewrite, gone, catalog-refused, expiring, endorser-added,
# endorser-removed), with the image's metadata in VMIC_* variables.
# command = "/usr/local/bin/vmic-event"
timeout = "60s"

[http]
timeout = "30s"
connect_timeout = "10s"
retries = 3
# Longest a catalog or signature download may take in all.
deadline = "2m"
# Slowest acceptable download, in bytes per second averaged over
# rate_window (0: off).
min_rate = 4096
rate_window = "30s"
"#;

/// `site.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// `[policy]`.
    #[serde(default)]
    pub policy: Policy,
    /// `[hooks]`.
    #[serde(default)]
    pub hooks: Hooks,
    /// `[http]`.
    #[serde(default)]
    pub http: Http,
}

/// `[policy]`: approval, expiry, catalog size, deny rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Default approval mode for `trust add`.
    #[serde(default = "default_approve")]
    pub approve: ApproveMode,
    /// What an expired catalog does to its images.
    #[serde(default)]
    pub on_expired: OnExpired,
    /// Largest catalog.json accepted, in bytes.
    #[serde(default = "default_max_catalog")]
    pub max_catalog_size: u64,
    /// Deny rules; the first that matches rejects.
    #[serde(default)]
    pub deny: Vec<DenyRule>,
    /// First wait before re-fetching an image whose download failed its
    /// check; doubled per further failure, at most a day.
    #[serde(default = "default_quarantine_backoff")]
    pub quarantine_backoff: Seconds,
    /// How long a catalog may be missing before its endorser is "gone".
    #[serde(default = "default_gone_after")]
    pub gone_after: Seconds,
    /// Warn when the accepted catalog expires within this time.
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: Seconds,
    /// Identical bytes in use here need no second approval.
    #[serde(default = "default_true")]
    pub carry_approval: bool,
    /// Import images whose headers point outside them (a qcow2 backing or
    /// data file, a VMDK extent or parent). Off: they are quarantined.
    #[serde(default)]
    pub allow_external_references: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            approve: default_approve(),
            on_expired: OnExpired::default(),
            max_catalog_size: default_max_catalog(),
            deny: Vec::new(),
            quarantine_backoff: default_quarantine_backoff(),
            gone_after: default_gone_after(),
            expiry_warning: default_expiry_warning(),
            carry_approval: true,
            allow_external_references: false,
        }
    }
}

fn default_quarantine_backoff() -> Seconds {
    Seconds(3600)
}

fn default_expiry_warning() -> Seconds {
    Seconds(7 * 86_400)
}

fn default_gone_after() -> Seconds {
    Seconds(7 * 86_400)
}

/// A duration written as text in `site.toml` (`30s`, `5m`, `7d`), parsed
/// when the file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Seconds(pub u64);

impl TryFrom<String> for Seconds {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Seconds, String> {
        crate::duration::parse_seconds(&text)
            .map(Seconds)
            .map_err(|e| e.message().to_string())
    }
}

impl Seconds {
    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

fn default_approve() -> ApproveMode {
    ApproveMode::Auto
}

fn default_max_catalog() -> u64 {
    vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES
}

/// What happens to imported images when their catalog expired and no fresh one can be had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpired {
    /// Take them out of the store (default).
    #[default]
    Withdraw,
    /// Keep them, with a loud warning.
    Keep,
}

/// The catalog fields a deny rule may name (as catalog.json spells them),
/// plus `tag` (one of `tags`) and `max_size` (larger than this).
pub const DENY_KEYS: &[&str] = &[
    "id",
    "version",
    "title",
    "description",
    "path",
    "urls",
    "sha256",
    "size",
    "chunk_size",
    "format",
    "arch",
    "os_family",
    "os",
    "os_version",
    "hypervisor",
    "min_cores",
    "min_memory_mb",
    "tags",
    "tag",
    "max_size",
];

/// What a deny rule key is compared with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DenyValue {
    /// Text: equal ignoring ASCII case; `*` matches any run of characters.
    Text(String),
    /// A number: equal (for `max_size`: the image is larger).
    Number(u64),
}

/// One deny rule: every key it gives must match for the rule to apply.
/// Keys are catalog fields; an unknown key is refused when `site.toml` is
/// read, so a typo cannot silently deny nothing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "std::collections::BTreeMap<String, DenyValue>")]
pub struct DenyRule {
    keys: Vec<(String, DenyValue)>,
}

impl TryFrom<std::collections::BTreeMap<String, DenyValue>> for DenyRule {
    type Error = String;
    fn try_from(
        map: std::collections::BTreeMap<String, DenyValue>,
    ) -> std::result::Result<DenyRule, String> {
        for (key, value) in &map {
            if !DENY_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "deny rule key {key:?} is not a catalog field (one of: {})",
                    DENY_KEYS.join(", ")
                ));
            }
            if key == "max_size" && !matches!(value, DenyValue::Number(_)) {
                return Err("deny rule max_size must be a number of bytes".into());
            }
        }
        Ok(DenyRule {
            keys: map.into_iter().collect(),
        })
    }
}

impl DenyRule {
    /// A rule of `key = value` pairs (tests and callers building rules).
    pub fn of(keys: &[(&str, DenyValue)]) -> std::result::Result<DenyRule, String> {
        DenyRule::try_from(
            keys.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    }

    /// Why this rule rejects `image`, or `None` when it does not apply.
    pub fn rejects(&self, image: &Image) -> Option<String> {
        if self.keys.is_empty() {
            return None; // an empty rule denies nothing
        }
        let fields = serde_json::to_value(image).ok()?;
        let mut why = Vec::new();
        for (key, want) in &self.keys {
            why.push(key_matches(&fields, image, key, want)?);
        }
        Some(format!("denied by site policy ({})", why.join(", ")))
    }
}

/// How `key = want` matches `image`, or `None` if it does not.
fn key_matches(
    fields: &serde_json::Value,
    image: &Image,
    key: &str,
    want: &DenyValue,
) -> Option<String> {
    match (key, want) {
        ("max_size", DenyValue::Number(max)) => {
            (image.size() > *max).then(|| format!("size {} > {max}", image.size()))
        }
        ("tag", _) => {
            value_matches(&fields["tags"], want).then(|| format!("tag = {}", shown(want)))
        }
        _ => value_matches(&fields[key], want).then(|| format!("{key} = {}", shown(want))),
    }
}

fn shown(want: &DenyValue) -> String {
    match want {
        DenyValue::Text(t) => t.clone(),
        DenyValue::Number(n) => n.to_string(),
    }
}

/// A catalog value matches when it equals `want` (text ignoring ASCII
/// case, with `*` wildcards), or, for a list, when one element does.
fn value_matches(value: &serde_json::Value, want: &DenyValue) -> bool {
    match (value, want) {
        (serde_json::Value::Array(items), _) => items.iter().any(|i| value_matches(i, want)),
        (serde_json::Value::String(have), DenyValue::Text(pattern)) => glob_matches(pattern, have),
        (serde_json::Value::Number(have), DenyValue::Number(n)) => have.as_u64() == Some(*n),
        (serde_json::Value::Number(have), DenyValue::Text(t)) => glob_matches(t, &have.to_string()),
        _ => false,
    }
}

/// `pattern` against `text`, ignoring ASCII case; `*` matches any run.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let text = text.to_ascii_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole text must equal it
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `[hooks]`: the event command.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run through `sh -c` for every event, with `VMIC_*` variables.
    pub command: Option<String>,
    /// How long a hook may run before it is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Seconds,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            command: None,
            timeout: default_hook_timeout(),
        }
    }
}

fn default_hook_timeout() -> Seconds {
    Seconds(60)
}

/// `[http]`: network settings for every endorser.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Longest silence while sending a request or reading an answer.
    #[serde(default = "default_http_timeout")]
    pub timeout: Seconds,
    /// Connection timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Retries of transient failures, with backoff.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Longest a catalog or signature download may take in all.
    #[serde(default = "default_deadline")]
    pub deadline: Seconds,
    /// Slowest acceptable download in bytes per second, averaged over
    /// `rate_window`; 0 turns the check off.
    #[serde(default = "default_min_rate")]
    pub min_rate: u64,
    /// The span `min_rate` is averaged over.
    #[serde(default = "default_rate_window")]
    pub rate_window: Seconds,
}

impl Default for Http {
    fn default() -> Http {
        Http {
            timeout: default_http_timeout(),
            connect_timeout: default_connect_timeout(),
            retries: default_retries(),
            deadline: default_deadline(),
            min_rate: default_min_rate(),
            rate_window: default_rate_window(),
        }
    }
}

fn default_http_timeout() -> Seconds {
    Seconds(30)
}

fn default_connect_timeout() -> Seconds {
    Seconds(10)
}

fn default_deadline() -> Seconds {
    Seconds(120)
}

fn default_rate_window() -> Seconds {
    Seconds(30)
}

fn default_min_rate() -> u64 {
    vmic_engine::fetch::HttpConfig::default().min_rate
}

fn default_retries() -> u32 {
    3
}

impl SiteConfig {
    /// Read and check `site.toml`; errors name the file and line.
    pub fn load(path: &Path) -> Result<SiteConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        SiteConfig::parse(&text, &path.display().to_string())
    }

    /// Parse and check the text of a `site.toml`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<SiteConfig> {
        vmic_format::strict_toml::parse(text, origin)
    }

    /// The first deny rule that rejects `image`.
    pub fn denial(&self, image: &Image) -> Option<String> {
        self.policy.deny.iter().find_map(|rule| rule.rejects(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::catalog;

    fn load(text: &str) -> Result<SiteConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        std::fs::write(&path, text).unwrap();
        SiteConfig::load(&path)
    }

    #[test]
    fn the_default_file_holds_the_defaults() {
        let c = load(DEFAULT_SITE_TOML).unwrap();
        assert_eq!(c.policy.approve, ApproveMode::Auto);
        assert_eq!(c.policy.on_expired, OnExpired::Withdraw);
        assert_eq!(
            c.policy.max_catalog_size,
            vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES
        );
        assert_eq!(c.hooks.timeout.duration(), Duration::from_secs(60));
        assert_eq!(c.http.retries, 3);
        assert_eq!(c.http.deadline, Seconds(120));
        assert_eq!(c.http.min_rate, 4096);
        assert_eq!(c.policy.quarantine_backoff, Seconds(3600));
        assert_eq!(c.policy.gone_after, Seconds(7 * 86_400));
        // The commented file and the built-in defaults agree.
        let empty = load("").unwrap();
        assert_eq!(empty.http.deadline, c.http.deadline);
        assert_eq!(empty.policy.gone_after, c.policy.gone_after);
        assert!(load("").is_ok(), "every section is optional");
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let err = load("[policy]\napprove = \"auto\"\nexpire = 1\n").unwrap_err();
        assert!(err.message().contains("site.toml (line 3)"), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Input);
        let err = load("[policy]\napprove = \"sometimes\"\n").unwrap_err();
        assert!(err.message().contains("line 2"), "{err}");
        let err = load("[http]\nretries = 1\ntimeout = \"30 seconds\"\n").unwrap_err();
        assert!(err.message().contains("line 3"), "{err}");
        assert!(err.message().contains("30 seconds"), "{err}");
    }

    #[test]
    fn deny_rules_match_every_key_they_give() {
        let c = load(
            "[[policy.deny]]\nos = \"LINUX\"\narch = \"x86_64\"\n[[policy.deny]]\ntag = \"Cloud\"\nmax_size = 2\n[[policy.deny]]\n",
        )
        .unwrap();
        let image = &catalog(&[("a", "1", b"one")], &[]).images()[0].clone();
        // Rule 1 needs an arch the image does not declare; rule 3 is empty.
        assert_eq!(
            c.denial(image).as_deref(),
            Some("denied by site policy (size 3 > 2, tag = Cloud)")
        );
        let small = &catalog(&[("a", "1", b"on")], &[]).images()[0].clone();
        assert_eq!(c.denial(small), None);
    }

    #[test]
    fn deny_rules_match_any_catalog_field_with_wildcards() {
        let image = &catalog(&[("centos-7", "2024.1", b"one")], &[]).images()[0].clone();
        let rule = |text: &str| load(&format!("[[policy.deny]]\n{text}\n")).unwrap();
        assert!(rule("id = \"centos-7\"").denial(image).is_some());
        assert!(rule("id = \"CENTOS-*\"").denial(image).is_some());
        assert!(rule("id = \"*-7\"").denial(image).is_some());
        assert!(rule("id = \"c*s*7\"").denial(image).is_some());
        assert!(rule("id = \"centos\"").denial(image).is_none());
        assert!(rule("version = \"2024.*\"").denial(image).is_some());
        assert!(rule("size = 3").denial(image).is_some());
        assert!(rule("size = 4").denial(image).is_none());
        assert!(
            rule("id = \"centos-7\"\nversion = \"1\"")
                .denial(image)
                .is_none()
        );
        // A field the image does not carry never matches.
        assert!(rule("os_version = \"*\"").denial(image).is_none());
        let sha = image.sha256.to_hex();
        assert!(rule(&format!("sha256 = \"{sha}\"")).denial(image).is_some());
    }

    #[test]
    fn a_deny_rule_with_an_unknown_key_is_refused_naming_it() {
        let err = load("[[policy.deny]]\nos_verison = \"7\"\n").unwrap_err();
        assert!(err.message().contains("os_verison"), "{err}");
        assert!(err.message().contains("not a catalog field"), "{err}");
        let err = load("[[policy.deny]]\nmax_size = \"big\"\n").unwrap_err();
        assert!(err.message().contains("max_size"), "{err}");
    }

    #[test]
    fn glob_matching() {
        assert!(glob_matches("a*", "abc"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*c", "ac"));
        assert!(!glob_matches("a*c*c", "ac"));
        assert!(glob_matches("*b*", "abc"));
        assert!(!glob_matches("abc", "abcd"));
        assert!(!glob_matches("ab*cd", "abd"));
    }
}
