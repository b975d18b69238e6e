//! The catalog model (`vmic.catalog/1` and `/2`), parsed into validated
//! types. The two versions differ only in where chunk digests live: inline
//! in each image entry (1), or in a per-image chunk index the entry names
//! by digest (2, see [`crate::chunk_index`]).
//!
//! A catalog is only ever parsed from bytes whose signature has already been
//! checked (see [`crate::authenticate`]); even then nothing untrusted gets
//! past this module as a raw string: ids, versions, paths, URLs, digests,
//! chunk geometry and the serial become validated types while the JSON is
//! read, and the whole-catalog rules (no duplicates, nothing both published
//! and revoked, a sane validity window) are checked before a [`Catalog`]
//! exists. Unknown fields are tolerated (forward compatibility); unknown
//! major format versions are refused.

use std::collections::{HashMap, HashSet};
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::chunk_index::{ChunkIndexRef, ChunkScheme, IndexedChunks};
use crate::chunks::ChunkDigests;
use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::ids::{ImageId, InvalidValue, Serial, Version};
use crate::image_format::FormatName;
use crate::limits::MAX_TEXT;
pub use crate::limits::{MAX_IMAGE_SIZE, MAX_IMAGES};
use crate::minisign::KeyId;
use crate::relpath::SafeRelPath;
use crate::versioned::Versioned;

/// Mirrors one catalog may name.
pub const MAX_MIRRORS: usize = 16;

/// The format string vmic writes by default.
pub const FORMAT: &str = "vmic.catalog/2";
/// The format string of version 1 (chunk digests inline).
pub const FORMAT_V1: &str = "vmic.catalog/1";
/// Catalogs as versioned documents.
const DOCUMENT: Versioned = Versioned {
    prefix: "vmic.catalog/",
    majors: &[1, 2],
    current: FORMAT,
    noun: "catalog",
    file: "catalog.json",
};

/// A validated catalog. Only [`Catalog::parse`] and [`Catalog::new`] make
/// one, so every catalog in memory meets every rule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawCatalog")]
pub struct Catalog {
    format: String,
    #[serde(skip)]
    version: CatalogVersion,
    endorser: Endorser,
    serial: Serial,
    issued: Timestamp,
    expires: Timestamp,
    previous_sha256: Option<Sha256Digest>,
    /// Base URLs of full mirrors of this publication, signed: readers may
    /// fetch the catalog and images from them too (tried after their own
    /// sources). Absent from catalogs that name none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<HttpUrl>,
    images: Vec<Image>,
    revoked: Vec<Revocation>,
    /// Look-ups by id and version, so every reader's work stays linear in
    /// the size of the catalog whatever its number of images.
    #[serde(skip)]
    index: CatalogIndex,
}

/// Built once, while the whole-catalog rules are checked (duplicates are
/// found by building it).
#[derive(Clone, Debug, Default, PartialEq)]
struct CatalogIndex {
    /// `id@version` (unambiguous: `@` is not in the id alphabet) → position
    /// in `images`.
    by_label: HashMap<String, usize>,
    /// id → positions in `images`, in catalog order.
    by_id: HashMap<String, Vec<usize>>,
    /// id → positions in `revoked`.
    revocations: HashMap<String, Vec<usize>>,
}

/// Append `n` to the list of `key`, allocating the key only the first time.
fn push_at(map: &mut HashMap<String, Vec<usize>>, key: &str, n: usize) {
    match map.get_mut(key) {
        Some(list) => list.push(n),
        None => {
            map.insert(key.to_string(), vec![n]);
        }
    }
}

/// The catalog format's major version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CatalogVersion {
    /// `vmic.catalog/1`: chunk digests inline in every image entry.
    V1,
    /// `vmic.catalog/2`: chunk digests in per-image chunk indexes.
    V2,
}

impl CatalogVersion {
    /// The format string a writer puts in the catalog.
    pub fn format(self) -> &'static str {
        match self {
            CatalogVersion::V1 => FORMAT_V1,
            CatalogVersion::V2 => FORMAT,
        }
    }

    /// `1` or `2`.
    pub fn parse(text: &str) -> std::result::Result<CatalogVersion, InvalidValue> {
        match text {
            "1" => Ok(CatalogVersion::V1),
            "2" => Ok(CatalogVersion::V2),
            _ => Err(InvalidValue(format!(
                "catalog version {text:?} is not 1 or 2"
            ))),
        }
    }
}

/// Everything a writer supplies to make a catalog (see [`Catalog::new`]).
pub struct CatalogParts {
    /// Which format version: it decides where chunk digests are.
    pub version: CatalogVersion,
    /// Who signs it.
    pub endorser: Endorser,
    /// One more than the previous catalog's.
    pub serial: Serial,
    /// When it was made.
    pub issued: Timestamp,
    /// When it stops being valid.
    pub expires: Timestamp,
    /// SHA-256 of the previous catalog's bytes.
    pub previous_sha256: Option<Sha256Digest>,
    /// The published images.
    pub images: Vec<Image>,
    /// The explicit revocations.
    pub revoked: Vec<Revocation>,
}

/// The endorser as the catalog names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endorser {
    /// Human name, non-empty.
    pub name: String,
    /// How to reach the endorser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The virtual organisation it endorses for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo: Option<String>,
    /// The id of the key that signs this catalog.
    pub key_id: KeyId,
}

/// One published image, every field validated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawImage")]
pub struct Image {
    /// Stable id across versions.
    pub id: ImageId,
    /// This version.
    pub version: Version,
    /// One-line title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Longer description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the image is, relative to the publication.
    pub path: SafeRelPath,
    /// Absolute mirror URLs of this one image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<HttpUrl>,
    /// Whole-file SHA-256, as `sha256sum` prints it.
    pub sha256: Sha256Digest,
    /// Size, chunk size and the chunk digests or the index holding them.
    #[serde(flatten)]
    pub chunks: Chunks,
    /// Detected format.
    pub format: FormatName,
    /// CPU architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// OS family (`linux`, `windows`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    /// OS name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// OS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Hypervisor it is made for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// Minimum cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cores: Option<u32>,
    /// Minimum memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_memory_mb: Option<u64>,
    /// Free tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Where an image's chunk digests are: inline (format 1) or in a chunk
/// index named by its digest (format 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Chunks {
    /// `size`, `chunk_size` and `chunks` in the entry.
    Inline(ChunkDigests),
    /// `size`, `chunking`, `chunk_size` and `chunk_index` in the entry.
    Indexed(IndexedChunks),
}

impl Chunks {
    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Chunks::Inline(d) => d.size(),
            Chunks::Indexed(i) => i.size(),
        }
    }

    /// The digests, when the entry carries them.
    pub fn inline(&self) -> Option<&ChunkDigests> {
        match self {
            Chunks::Inline(d) => Some(d),
            Chunks::Indexed(_) => None,
        }
    }

    /// The index naming the digests, when the entry does not carry them.
    pub fn indexed(&self) -> Option<&IndexedChunks> {
        match self {
            Chunks::Inline(_) => None,
            Chunks::Indexed(i) => Some(i),
        }
    }
}

/// An absolute `http://` or `https://` URL without whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Parse a mirror URL.
    pub fn parse(text: &str) -> std::result::Result<HttpUrl, InvalidValue> {
        let scheme_ok = text.starts_with("https://") || text.starts_with("http://");
        if !scheme_ok || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidValue(format!("url {text:?} is not an http(s) URL")));
        }
        Ok(HttpUrl(text.into()))
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HttpUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Image {
    /// `id@version`, the name users see in every message.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.chunks.size()
    }

    /// Check the rules that tie fields together and bound free text.
    pub fn check(&self) -> std::result::Result<(), InvalidValue> {
        let label = self.label();
        let bad = |m: String| InvalidValue(format!("image {label}: {m}"));
        if self
            .chunks
            .inline()
            .and_then(ChunkDigests::implied_file_digest)
            .is_some_and(|d| d != self.sha256)
        {
            return Err(bad("sha256 disagrees with its only chunk digest".into()));
        }
        for (what, value) in [
            ("title", &self.title),
            ("description", &self.description),
            ("arch", &self.arch),
            ("os_family", &self.os_family),
            ("os", &self.os),
            ("os_version", &self.os_version),
            ("hypervisor", &self.hypervisor),
        ] {
            if let Some(v) = value {
                check_text(what, v).map_err(|e| bad(e.0))?;
            }
        }
        for tag in &self.tags {
            check_text("tag", tag).map_err(|e| bad(e.0))?;
        }
        Ok(())
    }
}

/// An image as it appears in JSON, before validation.
#[derive(Deserialize)]
struct RawImage {
    id: String,
    version: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    path: String,
    #[serde(default)]
    urls: Vec<String>,
    size: u64,
    sha256: Sha256Digest,
    #[serde(default)]
    chunk_size: Option<u64>,
    #[serde(default)]
    chunks: Option<Vec<Sha256Digest>>,
    #[serde(default)]
    chunking: Option<String>,
    #[serde(default)]
    chunk_index: Option<ChunkIndexRef>,
    format: String,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default)]
    os_family: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    os_version: Option<String>,
    #[serde(default)]
    hypervisor: Option<String>,
    #[serde(default)]
    min_cores: Option<u32>,
    #[serde(default)]
    min_memory_mb: Option<u64>,
    #[serde(default)]
    tags: Vec<String>,
}

impl TryFrom<RawImage> for Image {
    type Error = InvalidValue;

    fn try_from(raw: RawImage) -> std::result::Result<Image, InvalidValue> {
        // Name the image in every message; escaped, since it is not yet valid.
        let label = format!("{}@{}", raw.id.escape_debug(), raw.version.escape_debug());
        let bad = |m: String| InvalidValue(format!("image {label}: {m}"));
        let image = Image {
            id: ImageId::parse(&raw.id).map_err(|e| bad(e.0))?,
            version: Version::parse(&raw.version).map_err(|e| bad(e.0))?,
            title: raw.title,
            description: raw.description,
            path: SafeRelPath::parse(&raw.path).map_err(|e| bad(e.message().into()))?,
            urls: raw
                .urls
                .iter()
                .map(|u| HttpUrl::parse(u))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(e.0))?,
            sha256: raw.sha256,
            chunks: raw_chunks(
                raw.size,
                raw.chunking,
                raw.chunk_size,
                raw.chunks,
                raw.chunk_index,
            )
            .map_err(|e| bad(e.0))?,
            format: FormatName::parse(&raw.format).map_err(|e| bad(e.0))?,
            arch: raw.arch,
            os_family: raw.os_family,
            os: raw.os,
            os_version: raw.os_version,
            hypervisor: raw.hypervisor,
            min_cores: raw.min_cores,
            min_memory_mb: raw.min_memory_mb,
            tags: raw.tags,
        };
        image.check()?;
        Ok(image)
    }
}

/// The entry's chunk fields: a `chunk_index` (format 2) or inline
/// `chunks` (format 1), never both.
fn raw_chunks(
    size: u64,
    chunking: Option<String>,
    chunk_size: Option<u64>,
    chunks: Option<Vec<Sha256Digest>>,
    index: Option<ChunkIndexRef>,
) -> std::result::Result<Chunks, InvalidValue> {
    let scheme = ChunkScheme::parse(chunking.as_deref().unwrap_or("fixed"))?;
    match (chunks, index) {
        (Some(_), Some(_)) => Err(InvalidValue(
            "has both inline chunks and a chunk_index".into(),
        )),
        (None, Some(index)) => Ok(Chunks::Indexed(IndexedChunks::new(
            size, scheme, chunk_size, index,
        )?)),
        (Some(chunks), None) if scheme == ChunkScheme::Fixed => {
            let chunk_size =
                chunk_size.ok_or_else(|| InvalidValue("has chunks but no chunk_size".into()))?;
            Ok(Chunks::Inline(ChunkDigests::new(size, chunk_size, chunks)?))
        }
        (Some(_), None) => Err(InvalidValue(format!(
            "inline chunks must be fixed-size, not {:?}",
            scheme.as_str()
        ))),
        (None, None) => Err(InvalidValue("has neither chunks nor a chunk_index".into())),
    }
}

/// An explicit revocation: one version, or every version of an id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    /// The revoked id.
    pub id: ImageId,
    /// `None` revokes every version of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Why, for the sites' logs.
    pub reason: String,
    /// When it was first published.
    #[serde(deserialize_with = "strict_utc")]
    pub revoked_at: Timestamp,
}

impl Revocation {
    /// Whether this revocation covers `id@version`.
    pub fn matches(&self, id: &str, version: &str) -> bool {
        self.id == *id && self.version.as_ref().is_none_or(|v| *v == *version)
    }

    /// Whether this revocation covers `image`.
    pub fn covers(&self, image: &Image) -> bool {
        self.matches(image.id.as_str(), image.version.as_str())
    }
}

/// A catalog as it appears in JSON, before the whole-catalog rules.
#[derive(Deserialize)]
struct RawCatalog {
    format: String,
    endorser: Endorser,
    serial: Serial,
    #[serde(deserialize_with = "strict_utc")]
    issued: Timestamp,
    #[serde(deserialize_with = "strict_utc")]
    expires: Timestamp,
    #[serde(default)]
    previous_sha256: Option<Sha256Digest>,
    #[serde(default)]
    mirrors: Vec<HttpUrl>,
    images: Vec<Image>,
    #[serde(default)]
    revoked: Vec<Revocation>,
}

/// RFC 3339 in UTC with whole seconds, `YYYY-MM-DDTHH:MM:SSZ`, exactly as
/// vmic writes it: one spelling per instant, nothing for a reader to guess.
fn strict_utc<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Timestamp, D::Error> {
    let text = String::deserialize(d)?;
    let shape_ok = text.len() == 20
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let parsed = shape_ok.then(|| text.parse::<Timestamp>().ok()).flatten();
    parsed.ok_or_else(|| {
        serde::de::Error::custom(format!(
            "time {text:?} is not RFC 3339 UTC with whole seconds (YYYY-MM-DDTHH:MM:SSZ)"
        ))
    })
}

impl TryFrom<RawCatalog> for Catalog {
    type Error = InvalidValue;

    fn try_from(raw: RawCatalog) -> std::result::Result<Catalog, InvalidValue> {
        let major = DOCUMENT
            .check(&raw.format)
            .map_err(|e| InvalidValue(e.message().into()))?;
        let mut catalog = Catalog::new(CatalogParts {
            version: if major == 1 {
                CatalogVersion::V1
            } else {
                CatalogVersion::V2
            },
            endorser: raw.endorser,
            serial: raw.serial,
            issued: raw.issued,
            expires: raw.expires,
            previous_sha256: raw.previous_sha256,
            images: raw.images,
            revoked: raw.revoked,
        })?
        .with_mirrors(raw.mirrors)?;
        catalog.format = raw.format;
        Ok(catalog)
    }
}

impl Catalog {
    /// Make a catalog from its parts, checking every whole-catalog rule.
    pub fn new(parts: CatalogParts) -> std::result::Result<Catalog, InvalidValue> {
        let mut catalog = Catalog {
            format: parts.version.format().into(),
            version: parts.version,
            endorser: parts.endorser,
            serial: parts.serial,
            issued: parts.issued,
            expires: parts.expires,
            previous_sha256: parts.previous_sha256,
            mirrors: Vec::new(),
            images: parts.images,
            revoked: parts.revoked,
            index: CatalogIndex::default(),
        };
        catalog.index = catalog.check()?;
        Ok(catalog)
    }

    /// Parse and validate catalog bytes. Call only on signature-checked bytes.
    pub fn parse(bytes: &[u8]) -> Result<Catalog> {
        DOCUMENT.parse(bytes)
    }

    /// The exact bytes to publish and sign.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        DOCUMENT.to_bytes(self)
    }

    /// Whether the catalog has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires <= now
    }

    /// The format string as written (`vmic.catalog/N[.MINOR]`).
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The format's major version.
    pub fn version(&self) -> CatalogVersion {
        self.version
    }

    /// The endorser as the catalog names it.
    pub fn endorser(&self) -> &Endorser {
        &self.endorser
    }

    /// The serial.
    pub fn serial(&self) -> Serial {
        self.serial
    }

    /// When it was made.
    pub fn issued(&self) -> Timestamp {
        self.issued
    }

    /// When it stops being valid.
    pub fn expires(&self) -> Timestamp {
        self.expires
    }

    /// SHA-256 of the previous catalog's bytes.
    pub fn previous_sha256(&self) -> Option<Sha256Digest> {
        self.previous_sha256
    }

    /// The published images.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The image with this id and version.
    pub fn image(&self, id: &str, version: &str) -> Option<&Image> {
        let n = *self.index.by_label.get(&format!("{id}@{version}"))?;
        Some(&self.images[n])
    }

    /// Every listed version of `id`, in catalog order.
    pub fn images_with_id(&self, id: &str) -> Vec<&Image> {
        let positions = self
            .index
            .by_id
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        positions.iter().map(|&n| &self.images[n]).collect()
    }

    /// The first listed image with this id (any version).
    pub fn first_image_with_id(&self, id: &str) -> Option<&Image> {
        let n = *self.index.by_id.get(id)?.first()?;
        Some(&self.images[n])
    }

    /// The explicit revocations.
    pub fn revoked(&self) -> &[Revocation] {
        &self.revoked
    }

    /// Base URLs of full mirrors of this publication.
    pub fn mirrors(&self) -> &[HttpUrl] {
        &self.mirrors
    }

    /// The same catalog naming `mirrors` (at most [`MAX_MIRRORS`], no
    /// duplicates).
    pub fn with_mirrors(
        mut self,
        mirrors: Vec<HttpUrl>,
    ) -> std::result::Result<Catalog, InvalidValue> {
        if mirrors.len() > MAX_MIRRORS {
            return Err(InvalidValue(format!("more than {MAX_MIRRORS} mirrors")));
        }
        for (i, m) in mirrors.iter().enumerate() {
            if mirrors[..i].contains(m) {
                return Err(InvalidValue(format!("mirror {m} is listed twice")));
            }
        }
        self.mirrors = mirrors;
        Ok(self)
    }

    /// The revocation covering `id@version`, if any.
    pub fn revocation_of(&self, id: &str, version: &str) -> Option<&Revocation> {
        self.index
            .revocations
            .get(id)?
            .iter()
            .map(|&n| &self.revoked[n])
            .find(|r| r.matches(id, version))
    }

    /// Every whole-catalog rule; the first violation names what it concerns.
    /// Returns the index built along the way.
    fn check(&self) -> std::result::Result<CatalogIndex, InvalidValue> {
        if self.expires <= self.issued {
            return Err(InvalidValue(format!(
                "expires ({}) is not after issued ({})",
                self.expires, self.issued
            )));
        }
        check_text("endorser name", &self.endorser.name)?;
        for (what, value) in [
            ("contact", &self.endorser.contact),
            ("vo", &self.endorser.vo),
        ] {
            if let Some(v) = value {
                check_text(what, v)?;
            }
        }
        if self.endorser.name.trim().is_empty() {
            return Err(InvalidValue("endorser name is empty".into()));
        }
        if self.images.len() > MAX_IMAGES {
            return Err(InvalidValue(format!(
                "{} images is more than the {MAX_IMAGES} allowed",
                self.images.len()
            )));
        }
        let mut index = self.index_unique_images()?;
        for (n, r) in self.revoked.iter().enumerate() {
            check_text("revocation reason", &r.reason)?;
            push_at(&mut index.revocations, r.id.as_str(), n);
        }
        self.check_not_both_published_and_revoked(&index)?;
        Ok(index)
    }

    /// Index the images by id and version; an id@version or a path listed
    /// twice is refused.
    fn index_unique_images(&self) -> std::result::Result<CatalogIndex, InvalidValue> {
        let mut index = CatalogIndex {
            by_label: HashMap::with_capacity(self.images.len()),
            ..CatalogIndex::default()
        };
        let mut paths = HashSet::with_capacity(self.images.len());
        for (n, image) in self.images.iter().enumerate() {
            image.check()?;
            self.check_chunk_form(image)?;
            push_at(&mut index.by_id, image.id.as_str(), n);
            if index.by_label.insert(image.label(), n).is_some() {
                return Err(InvalidValue(format!(
                    "image {} is listed twice",
                    image.label()
                )));
            }
            if !paths.insert(image.path.as_str()) {
                return Err(InvalidValue(format!(
                    "image {}: path {:?} is used by another image",
                    image.label(),
                    image.path.as_str()
                )));
            }
        }
        Ok(index)
    }

    /// Version 1 entries carry their chunk digests, version 2 entries name
    /// an index: a reader of either version finds them where it looks.
    fn check_chunk_form(&self, image: &Image) -> std::result::Result<(), InvalidValue> {
        let inline = image.chunks.inline().is_some();
        match (self.version, inline) {
            (CatalogVersion::V1, false) => Err(InvalidValue(format!(
                "image {}: a {FORMAT_V1} catalog must carry its chunk digests inline",
                image.label()
            ))),
            (CatalogVersion::V2, true) => Err(InvalidValue(format!(
                "image {}: a {FORMAT} catalog names a chunk_index instead of inline chunks",
                image.label()
            ))),
            _ => Ok(()),
        }
    }

    /// Linear in images + revocations, whatever their number: each image
    /// looks only at the revocations of its own id.
    fn check_not_both_published_and_revoked(
        &self,
        index: &CatalogIndex,
    ) -> std::result::Result<(), InvalidValue> {
        for image in &self.images {
            let revoked = index
                .revocations
                .get(image.id.as_str())
                .is_some_and(|rs| rs.iter().any(|&n| self.revoked[n].covers(image)));
            if revoked {
                return Err(InvalidValue(format!(
                    "image {} is both published and revoked",
                    image.label()
                )));
            }
        }
        Ok(())
    }
}

/// Free text: bounded, and no control characters — it ends up in hook
/// environments, logs and terminals, where ESC sequences or a newline would
/// be an injection. Only `description` may span lines (newline and tab).
fn check_text(what: &str, value: &str) -> std::result::Result<(), InvalidValue> {
    if value.len() > MAX_TEXT {
        return Err(InvalidValue(format!(
            "{what} is longer than {MAX_TEXT} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(InvalidValue(format!("{what} contains a NUL byte")));
    }
    let multiline = what == "description";
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if let Some(c) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(InvalidValue(format!(
            "{what} contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A valid catalog as JSON, for mutation.
    fn sample() -> Value {
        let d = Sha256Digest::of(b"hello").to_hex();
        json!({
            "format": FORMAT_V1,
            "endorser": {"name": "Test", "key_id": "0000000000000001"},
            "serial": 1,
            "issued": "2026-01-01T00:00:00Z",
            "expires": "2026-02-01T00:00:00Z",
            "previous_sha256": null,
            "images": [{
                "id": "a", "version": "1", "path": "images/a.raw",
                "size": 5, "sha256": d, "chunk_size": 8 << 20, "chunks": [d],
                "format": "raw"
            }],
            "revoked": []
        })
    }

    fn parse(v: &Value) -> Result<Catalog> {
        Catalog::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn round_trip_and_unknown_fields_tolerated() {
        let c = parse(&sample()).unwrap();
        assert_eq!(Catalog::parse(&c.to_bytes().unwrap()).unwrap(), c);
        let mut v = sample();
        v["future_field"] = json!({"x": 1});
        v["images"][0]["another"] = json!(true);
        v["images"][0]["format"] = json!("qcow3");
        let c = parse(&v).unwrap();
        assert_eq!(c.images()[0].format.known_format(), None);
    }

    /// Deep nesting cannot overflow the stack: in an unknown field it is
    /// skipped without recursion (the catalog stays valid); where a value
    /// is parsed, it is refused (a wrong type here; serde_json's recursion
    /// limit of 128 otherwise), as an invalid signed catalog.
    #[test]
    fn deeply_nested_json_is_skipped_or_refused_never_a_crash() {
        let text = serde_json::to_string(&sample()).unwrap();
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let in_unknown = text.replacen('{', &format!("{{\"future\": {}, ", deep(100_000)), 1);
        assert!(Catalog::parse(in_unknown.as_bytes()).is_ok());
        let mut v = sample();
        v["revoked"] = json!("PLACEHOLDER");
        let in_known = serde_json::to_string(&v)
            .unwrap()
            .replace("\"PLACEHOLDER\"", &deep(100_000));
        let err = Catalog::parse(in_known.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Verification, "{err}");
        assert!(err.message().contains("catalog.json is invalid"), "{err}");
    }

    #[test]
    fn hostile_catalogs_are_refused() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("'..'", Box::new(|v| v["images"][0]["path"] = json!("../x"))),
            (
                "is absolute",
                Box::new(|v| v["images"][0]["path"] = json!("/etc/passwd")),
            ),
            (
                "backslash",
                Box::new(|v| v["images"][0]["path"] = json!("a\\b")),
            ),
            (
                "NUL",
                Box::new(|v| v["images"][0]["path"] = json!("a\u{0}b")),
            ),
            (
                "absurd",
                Box::new(|v| v["images"][0]["size"] = json!(u64::MAX)),
            ),
            (
                "listed twice",
                Box::new(|v| {
                    let mut dup = v["images"][0].clone();
                    dup["path"] = json!("images/b.raw");
                    v["images"].as_array_mut().unwrap().push(dup);
                }),
            ),
            (
                "used by another image",
                Box::new(|v| {
                    let mut dup = v["images"][0].clone();
                    dup["version"] = json!("2");
                    v["images"].as_array_mut().unwrap().push(dup);
                }),
            ),
            (
                "may contain only",
                Box::new(|v| v["images"][0]["id"] = json!("../../etc")),
            ),
            (
                "chunk digests",
                Box::new(|v| v["images"][0]["size"] = json!(20 << 20)),
            ),
            (
                "chunk_size",
                Box::new(|v| v["images"][0]["chunk_size"] = json!(1)),
            ),
            (
                "only chunk",
                Box::new(|v| v["images"][0]["sha256"] = json!("00".repeat(32))),
            ),
            (
                "not an http(s) URL",
                Box::new(|v| v["images"][0]["urls"] = json!(["file:///etc/passwd"])),
            ),
            (
                "format",
                Box::new(|v| v["images"][0]["format"] = json!("../x")),
            ),
            ("serial", Box::new(|v| v["serial"] = json!(0))),
            ("serial", Box::new(|v| v["serial"] = json!(1u64 << 63))),
            (
                "not after issued",
                Box::new(|v| v["expires"] = v["issued"].clone()),
            ),
            (
                "endorser name is empty",
                Box::new(|v| v["endorser"]["name"] = json!(" ")),
            ),
            (
                "both published and revoked",
                Box::new(|v| {
                    v["revoked"] =
                        json!([{"id": "a", "reason": "x", "revoked_at": "2026-01-01T00:00:00Z"}])
                }),
            ),
        ];
        for (needle, mutate) in cases {
            let mut v = sample();
            mutate(&mut v);
            let err = parse(&v).unwrap_err();
            assert!(err.message().contains(needle), "{needle}: {err}");
            assert!(
                err.message().starts_with("catalog.json is invalid"),
                "{err}"
            );
        }
    }

    /// The sample as format 2: the chunk digests move to an index.
    fn sample_v2() -> (Value, Vec<u8>) {
        let d = Sha256Digest::of(b"hello");
        let digests = ChunkDigests::new(5, 8 << 20, vec![d]).unwrap();
        let (indexed, bytes) = IndexedChunks::for_digests(&digests);
        let mut v = sample();
        v["format"] = json!(FORMAT);
        let image = v["images"][0].as_object_mut().unwrap();
        image.remove("chunks");
        image.insert("chunking".into(), json!("fixed"));
        image.insert("chunk_index".into(), json!(indexed.index()));
        (v, bytes)
    }

    #[test]
    fn a_format_2_catalog_names_an_index_that_opens_to_the_digests() {
        let (v, index) = sample_v2();
        let c = parse(&v).unwrap();
        assert_eq!(c.version(), CatalogVersion::V2);
        let indexed = c.images()[0].chunks.indexed().unwrap();
        assert_eq!(
            indexed.open(&index).unwrap().chunks(),
            [Sha256Digest::of(b"hello")]
        );
        assert_eq!(Catalog::parse(&c.to_bytes().unwrap()).unwrap(), c);
    }

    #[test]
    fn each_version_keeps_its_chunks_where_its_readers_look() {
        let mut inline_in_v2 = sample();
        inline_in_v2["format"] = json!(FORMAT);
        let err = parse(&inline_in_v2).unwrap_err();
        assert!(err.message().contains("names a chunk_index"), "{err}");
        let (mut index_in_v1, _) = sample_v2();
        index_in_v1["format"] = json!(FORMAT_V1);
        let err = parse(&index_in_v1).unwrap_err();
        assert!(err.message().contains("inline"), "{err}");
        let (mut both, _) = sample_v2();
        both["images"][0]["chunks"] = json!([Sha256Digest::of(b"hello").to_hex()]);
        let err = parse(&both).unwrap_err();
        assert!(err.message().contains("both"), "{err}");
    }

    /// The bar of the format: an entry's size does not grow with the image.
    #[test]
    fn a_64_gib_entry_is_within_1_kb_of_an_8_mib_one() {
        let entry_len = |size: u64| {
            let n = size.div_ceil(8 << 20) as usize;
            let digests =
                ChunkDigests::new(size, 8 << 20, vec![Sha256Digest::of(b"x"); n]).unwrap();
            let (indexed, _) = IndexedChunks::for_digests(&digests);
            let (mut v, _) = sample_v2();
            v["images"][0]["size"] = json!(size);
            v["images"][0]["sha256"] = json!(Sha256Digest::of(b"y").to_hex());
            v["images"][0]["chunk_index"] = json!(indexed.index());
            let c = parse(&v).unwrap();
            serde_json::to_vec(&c.images()[0]).unwrap().len()
        };
        let small = entry_len(8 << 20);
        let large = entry_len(64 << 30);
        assert!(large.abs_diff(small) < 1024, "{small} vs {large}");
    }

    #[test]
    fn errors_name_the_image() {
        let mut v = sample();
        v["images"][0]["size"] = json!(20 << 20);
        let err = parse(&v).unwrap_err();
        assert!(err.message().contains("image a@1:"), "{err}");
    }

    #[test]
    fn unknown_major_version_is_named() {
        let mut v = sample();
        v["format"] = json!("vmic.catalog/3");
        let err = parse(&v).unwrap_err();
        assert!(err.message().contains("major version 3"), "{err}");
        assert!(err.message().contains("only version 1 and 2"), "{err}");
        v["format"] = json!("vmic.catalog/1.3");
        assert_eq!(parse(&v).unwrap().format(), "vmic.catalog/1.3");
        for not_one in [
            "vmic.catalog/01",
            "vmic.catalog/+1",
            "vmic.catalog/1.",
            "vmic.catalog/1.x",
            "vmic.catalog/1.2.3",
            "vmic.catalog/",
        ] {
            v["format"] = json!(not_one);
            let err = parse(&v).unwrap_err();
            assert!(
                err.message().contains("is not a vmic catalog"),
                "{not_one}: {err}"
            );
        }
    }

    #[test]
    fn times_are_utc_with_whole_seconds() {
        for bad in [
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T01:00:00+01:00",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01 00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01t00:00:00z",
        ] {
            let mut v = sample();
            v["issued"] = json!(bad);
            let err = parse(&v).unwrap_err();
            assert!(err.message().contains("RFC 3339"), "{bad}: {err}");
        }
        let mut v = sample();
        v["revoked"] =
            json!([{"id": "z", "reason": "r", "revoked_at": "2026-01-01T00:00:00.000Z"}]);
        assert!(parse(&v).is_err());
    }

    #[test]
    fn revocation_scope() {
        let mut v = sample();
        v["revoked"] = json!([
            {"id": "b", "version": "2", "reason": "bad", "revoked_at": "2026-01-01T00:00:00Z"},
            {"id": "c", "reason": "gone", "revoked_at": "2026-01-01T00:00:00Z"}
        ]);
        let c = parse(&v).unwrap();
        assert!(c.revocation_of("b", "2").is_some());
        assert!(c.revocation_of("b", "3").is_none());
        assert!(c.revocation_of("c", "anything").is_some());
        assert!(c.revocation_of("a", "1").is_none());
    }
}
