//! The trusted comment vmic writes into a catalog signature, and how a
//! reader gets the fields back. minisign signs the comment (the global
//! signature), so `minisign -V` shows an authentic serial and expiry.
//!
//! Layout: `name:value` fields separated by tabs: `timestamp:1795584089`,
//! `file:catalog.json`, `serial:3`, `expires:2026-12-25T05:27:37Z`,
//! `key:FAF749876507E955`, and for `catalog.json` the catalog's own hash,
//! `sha256:<64 hex>`: the signed pointer to the immutable generation
//! `catalogs/<hex>.json` a reader fetches (see docs/FORMAT.md).
//! A comment written by stock minisign has none of these fields; that is
//! allowed, and readers then have nothing to cross-check.

use jiff::Timestamp;

use crate::digest::Sha256Digest;
use crate::ids::Serial;
use crate::minisign::KeyId;
use crate::publication::CATALOG_FILE;

/// The fields vmic puts in a catalog signature's trusted comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogComment {
    /// Seconds since the epoch when the catalog was signed.
    pub timestamp: i64,
    /// The serial of the signed catalog.
    pub serial: Serial,
    /// Its expiry.
    pub expires: Timestamp,
    /// The signing key.
    pub key: KeyId,
    /// SHA-256 of the signed catalog bytes (names its generation).
    pub sha256: Option<Sha256Digest>,
}

impl CatalogComment {
    /// The comment text to sign for `catalog.json`.
    pub fn render(&self) -> String {
        match &self.sha256 {
            Some(sha) => format!("{}\tsha256:{sha}", self.render_for(CATALOG_FILE)),
            None => self.render_for(CATALOG_FILE),
        }
    }

    /// The comment text to sign for another file of the same publication
    /// (`SHA256SUMS`): the same fields, naming that file.
    pub fn render_for(&self, file: &str) -> String {
        format!(
            "timestamp:{}\tfile:{file}\tserial:{}\texpires:{}\tkey:{}",
            self.timestamp, self.serial, self.expires, self.key
        )
    }
}

/// The fields a reader can cross-check against the catalog, as written
/// (the raw text, so a mismatch can be reported exactly).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommentFields<'a> {
    /// `serial:` if present.
    pub serial: Option<&'a str>,
    /// `expires:` if present.
    pub expires: Option<&'a str>,
    /// `sha256:` if present and a well-formed digest.
    pub sha256: Option<Sha256Digest>,
}

/// Read the cross-checkable fields of any trusted comment (fields may be
/// separated by tabs or spaces; unknown fields are ignored).
pub fn parse(comment: &str) -> CommentFields<'_> {
    let mut fields = CommentFields::default();
    for field in comment.split(['\t', ' ']) {
        if let Some(v) = field.strip_prefix("serial:") {
            fields.serial = Some(v);
        } else if let Some(v) = field.strip_prefix("expires:") {
            fields.expires = Some(v);
        } else if let Some(v) = field.strip_prefix("sha256:") {
            fields.sha256 = Sha256Digest::from_hex(v);
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse() {
        let c = CatalogComment {
            timestamp: 1,
            serial: Serial::new(3).unwrap(),
            expires: "2026-12-25T05:27:37Z".parse().unwrap(),
            key: KeyId([1, 0, 0, 0, 0, 0, 0, 0]),
            sha256: Some(Sha256Digest::of(b"x")),
        };
        let text = c.render();
        let f = parse(&text);
        assert_eq!(f.serial, Some("3"));
        assert_eq!(f.expires, Some("2026-12-25T05:27:37Z"));
        assert_eq!(f.sha256, Some(Sha256Digest::of(b"x")));
        assert_eq!(parse("timestamp:1 file:x"), CommentFields::default());
    }
}
