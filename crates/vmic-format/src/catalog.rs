//! The catalog model (`vmic.catalog/1`) and its validation.
//!
//! A catalog is only ever parsed from bytes whose signature has already been
//! checked (the `authenticate` step of a reader); even then every field that could hurt is
//! validated here: paths, ids, sizes, digest counts, duplicates, times.
//! Unknown fields are tolerated (forward compatibility); unknown major format
//! versions are refused.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::chunks::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::image_format::ImageFormat;
use crate::relpath::SafeRelPath;

pub const FORMAT: &str = "vmic.catalog/1";
const FORMAT_PREFIX: &str = "vmic.catalog/";
const SUPPORTED_MAJOR: u64 = 1;
pub use crate::limits::{MAX_IMAGE_SIZE, MAX_IMAGES};
use crate::limits::{MAX_TEXT, MAX_TOKEN};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub format: String,
    pub endorser: Endorser,
    pub serial: u64,
    pub issued: Timestamp,
    pub expires: Timestamp,
    #[serde(default)]
    pub previous_sha256: Option<Sha256Digest>,
    pub images: Vec<Image>,
    #[serde(default)]
    pub revoked: Vec<Revocation>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endorser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo: Option<String>,
    pub key_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Image {
    pub id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub path: SafeRelPathField,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub chunk_size: u64,
    pub chunks: Vec<Sha256Digest>,
    pub format: ImageFormatField,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The relative path is kept as the raw string during deserialisation so that
/// validation can name the image in its error; [`Image::safe_path`] parses it.
pub type SafeRelPathField = String;

/// Formats newer writers may add are kept as text, not refused.
pub type ImageFormatField = String;

impl Image {
    /// `id@version`, the name users see in every message.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    pub fn safe_path(&self) -> Result<SafeRelPath> {
        SafeRelPath::parse(&self.path).map_err(|e| e.context(format!("image {}", self.label())))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub id: String,
    /// `None` revokes every version of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub reason: String,
    pub revoked_at: Timestamp,
}

impl Revocation {
    pub fn covers(&self, image: &Image) -> bool {
        self.id == image.id && self.version.as_ref().is_none_or(|v| *v == image.version)
    }
}

impl Catalog {
    /// Parse and validate catalog bytes. Call only on signature-checked bytes.
    pub fn parse(bytes: &[u8]) -> Result<Catalog> {
        let invalid =
            |e: serde_json::Error| Error::verification(format!("catalog.json is invalid: {e}"));
        #[derive(Deserialize)]
        struct Header {
            format: String,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(invalid)?;
        check_format_version(&header.format)?;
        let catalog: Catalog = serde_json::from_slice(bytes).map_err(invalid)?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// The exact bytes to publish and sign.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io_failure(format!("cannot serialise the catalog: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires <= now
    }

    /// Every structural rule a catalog must meet; the first violation is
    /// reported with the image it concerns.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Error::verification(format!("catalog.json is invalid: {msg}"));
        check_format_version(&self.format)?;
        if self.serial == 0 {
            return Err(bad("serial must be at least 1".into()));
        }
        if self.expires <= self.issued {
            return Err(bad(format!(
                "expires ({}) is not after issued ({})",
                self.expires, self.issued
            )));
        }
        check_text("endorser name", &self.endorser.name).map_err(bad)?;
        if self.endorser.name.trim().is_empty() {
            return Err(bad("endorser name is empty".into()));
        }
        if self.images.len() > MAX_IMAGES {
            return Err(bad(format!(
                "{} images is more than the {MAX_IMAGES} allowed",
                self.images.len()
            )));
        }
        let mut labels = HashSet::new();
        let mut paths = HashSet::new();
        for image in &self.images {
            validate_image(image).map_err(|m| bad(format!("image {}: {m}", image.label())))?;
            if !labels.insert((image.id.as_str(), image.version.as_str())) {
                return Err(bad(format!("image {} is listed twice", image.label())));
            }
            if !paths.insert(image.path.as_str()) {
                return Err(bad(format!(
                    "image {}: path {:?} is used by another image",
                    image.label(),
                    image.path
                )));
            }
        }
        for r in &self.revoked {
            check_token("revoked id", &r.id).map_err(bad)?;
            if let Some(v) = &r.version {
                check_token("revoked version", v).map_err(bad)?;
            }
            check_text("revocation reason", &r.reason).map_err(bad)?;
            if let Some(image) = self.images.iter().find(|i| r.covers(i)) {
                return Err(bad(format!(
                    "image {} is both published and revoked",
                    image.label()
                )));
            }
        }
        Ok(())
    }
}

fn check_format_version(format: &str) -> Result<()> {
    let major = format
        .strip_prefix(FORMAT_PREFIX)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u64>().ok());
    match major {
        Some(SUPPORTED_MAJOR) => Ok(()),
        Some(other) => Err(Error::verification(format!(
            "catalog format {format:?} has major version {other}; this vmic understands only version {SUPPORTED_MAJOR}. Upgrade vmic to read it"
        ))),
        None => Err(Error::verification(format!(
            "catalog format {format:?} is not a vmic catalog (expected {FORMAT:?})"
        ))),
    }
}

fn validate_image(image: &Image) -> std::result::Result<(), String> {
    check_token("id", &image.id)?;
    check_token("version", &image.version)?;
    SafeRelPath::parse(&image.path).map_err(|e| e.message().to_string())?;
    if image.size > MAX_IMAGE_SIZE {
        return Err(format!("size {} is absurd (more than 1 PiB)", image.size));
    }
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&image.chunk_size) {
        return Err(format!(
            "chunk_size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
            image.chunk_size
        ));
    }
    let expected = chunk_count(image.size, image.chunk_size);
    if image.chunks.len() as u64 != expected {
        return Err(format!(
            "has {} chunk digests, but size {} in chunks of {} needs {expected}",
            image.chunks.len(),
            image.size,
            image.chunk_size
        ));
    }
    // With at most one chunk the whole-file digest is determined by it.
    let single = match image.chunks.as_slice() {
        [] => Some(Sha256Digest::of(b"")),
        [only] => Some(*only),
        _ => None,
    };
    if single.is_some_and(|d| d != image.sha256) {
        return Err("sha256 disagrees with its only chunk digest".into());
    }
    for url in &image.urls {
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.chars().any(char::is_whitespace)
        {
            return Err(format!("url {url:?} is not an http(s) URL"));
        }
    }
    for (what, value) in [
        ("title", &image.title),
        ("description", &image.description),
        ("arch", &image.arch),
        ("os_family", &image.os_family),
        ("os", &image.os),
        ("os_version", &image.os_version),
        ("hypervisor", &image.hypervisor),
    ] {
        if let Some(v) = value {
            check_text(what, v)?;
        }
    }
    for tag in &image.tags {
        check_text("tag", tag)?;
    }
    if ImageFormat::from_name(&image.format).is_none() {
        check_token("format", &image.format)?;
    }
    Ok(())
}

/// Ids, versions: what can safely become part of a file name or an
/// environment variable in a hook.
pub fn check_token(what: &str, value: &str) -> std::result::Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+');
    if value.is_empty() || value.len() > MAX_TOKEN {
        return Err(format!(
            "{what} {value:?} must be 1 to {MAX_TOKEN} characters"
        ));
    }
    if !value.chars().all(ok_char) || value.starts_with(['.', '-']) {
        return Err(format!(
            "{what} {value:?} may contain only letters, digits, '.', '_', '-', '+', and may not start with '.' or '-'"
        ));
    }
    Ok(())
}

fn check_text(what: &str, value: &str) -> std::result::Result<(), String> {
    if value.len() > MAX_TEXT {
        return Err(format!("{what} is longer than {MAX_TEXT} bytes"));
    }
    if value.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Catalog {
        let data = b"hello";
        let d = Sha256Digest::of(data);
        Catalog {
            format: FORMAT.into(),
            endorser: Endorser {
                name: "Test".into(),
                contact: None,
                vo: None,
                key_id: "0000000000000001".into(),
            },
            serial: 1,
            issued: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires: "2026-02-01T00:00:00Z".parse().unwrap(),
            previous_sha256: None,
            images: vec![Image {
                id: "a".into(),
                version: "1".into(),
                title: None,
                description: None,
                path: "images/a.raw".into(),
                urls: vec![],
                size: 5,
                sha256: d,
                chunk_size: 8 << 20,
                chunks: vec![d],
                format: "raw".into(),
                arch: None,
                os_family: None,
                os: None,
                os_version: None,
                hypervisor: None,
                min_cores: None,
                min_memory_mb: None,
                tags: vec![],
            }],
            revoked: vec![],
        }
    }

    #[test]
    fn round_trip_and_unknown_fields_tolerated() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        assert_eq!(Catalog::parse(&bytes).unwrap(), c);
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["future_field"] = serde_json::json!({"x": 1});
        v["images"][0]["another"] = serde_json::json!(true);
        assert!(Catalog::parse(&serde_json::to_vec(&v).unwrap()).is_ok());
    }

    #[test]
    fn hostile_catalogs_are_refused() {
        type Mutation = Box<dyn Fn(&mut Catalog)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("'..'", Box::new(|c| c.images[0].path = "../x".into())),
            (
                "is absolute",
                Box::new(|c| c.images[0].path = "/etc/passwd".into()),
            ),
            ("backslash", Box::new(|c| c.images[0].path = "a\\b".into())),
            ("NUL", Box::new(|c| c.images[0].path = "a\0b".into())),
            ("absurd", Box::new(|c| c.images[0].size = u64::MAX)),
            (
                "listed twice",
                Box::new(|c| {
                    let mut dup = c.images[0].clone();
                    dup.path = "images/b.raw".into();
                    c.images.push(dup);
                }),
            ),
            (
                "may contain only",
                Box::new(|c| c.images[0].id = "../../etc".into()),
            ),
            ("chunk digests", Box::new(|c| c.images[0].size = 20 << 20)),
            (
                "both published and revoked",
                Box::new(|c| {
                    c.revoked.push(Revocation {
                        id: "a".into(),
                        version: None,
                        reason: "x".into(),
                        revoked_at: c.issued,
                    })
                }),
            ),
        ];
        for (needle, mutate) in cases {
            let mut c = sample();
            mutate(&mut c);
            let bytes = serde_json::to_vec(&c).unwrap();
            let err = Catalog::parse(&bytes).unwrap_err();
            assert!(err.message().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn unknown_major_version_is_named() {
        let mut c = sample();
        c.format = "vmic.catalog/2".into();
        let err = Catalog::parse(&serde_json::to_vec(&c).unwrap()).unwrap_err();
        assert!(err.message().contains("major version 2"), "{err}");
        c.format = "vmic.catalog/1.3".into();
        assert!(Catalog::parse(&serde_json::to_vec(&c).unwrap()).is_ok());
    }
}
