//! The digest cache kept in the build's state directory (never in OUT_DIR,
//! which is published), so that a rebuild re-hashes only images whose
//! (size, mtime, ctime, inode, device) changed, and re-copies only images
//! whose published copy is not exactly the one vmic put there.
//!
//! The cache is an optimisation, never an authority: a corrupt, foreign or
//! outdated cache is ignored with a warning and everything is re-hashed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::fsutil::atomic_write;
use crate::hashing::{FileDigest, FileStamp};
use vmic_format::chunks::ChunkDigests;

/// The cache's file name in the build state directory.
pub const CACHE_FILE: &str = "cache.json";
/// Where versions before 0.2 kept it: in OUT_DIR, published with it.
pub const LEGACY_CACHE_FILE: &str = ".vmic-cache.json";
const CACHE_FORMAT: &str = "vmic.digest-cache/1";

/// Digests of images by relative path and file stamp, so a rebuild re-hashes only what changed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DigestCache {
    format: String,
    /// SHA-256 of the canonical path of the images directory the entries
    /// belong to.
    images_dir: String,
    entries: BTreeMap<String, CacheEntry>,
    /// The copies in `OUT_DIR/images` as vmic left them, by relative path.
    #[serde(default)]
    published: BTreeMap<String, PublishedCopy>,
}

/// A copy vmic put into the publication: the source it was made from and
/// the copy's own stamp right after. Any later write to the copy (from the
/// web root, say) changes its ctime, which no one can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedCopy {
    /// The source as it was copied.
    pub source: FileStamp,
    /// The copy as it was left.
    pub copy: FileStamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    stamp: FileStamp,
    sha256: Sha256Digest,
    chunk_size: u64,
    chunks: Vec<Sha256Digest>,
    /// Detected image format, so an unchanged file is not even opened.
    #[serde(default)]
    format: Option<vmic_format::image_format::ImageFormat>,
}

fn dir_id(images_dir: &Path) -> String {
    Sha256Digest::of(images_dir.as_os_str().as_encoded_bytes()).to_hex()
}

impl DigestCache {
    /// An empty cache for `images_dir`.
    pub fn empty(images_dir: &Path) -> DigestCache {
        DigestCache {
            format: CACHE_FORMAT.into(),
            images_dir: dir_id(images_dir),
            entries: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }

    /// Load the cache file `path` for `images_dir`; returns a warning
    /// instead of an error when it cannot be used.
    pub fn load(path: &Path, images_dir: &Path) -> (DigestCache, Option<String>) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Self::empty(images_dir), None);
            }
            Err(e) => {
                return (
                    Self::empty(images_dir),
                    Some(format!(
                        "digest cache {} unreadable ({e}); re-hashing everything",
                        path.display()
                    )),
                );
            }
        };
        match serde_json::from_slice::<DigestCache>(&bytes) {
            Ok(c) if c.format == CACHE_FORMAT && c.images_dir == dir_id(images_dir) => (c, None),
            Ok(_) => (
                Self::empty(images_dir),
                Some(format!(
                    "digest cache {} belongs to another images directory or format; re-hashing everything",
                    path.display()
                )),
            ),
            Err(e) => (
                Self::empty(images_dir),
                Some(format!(
                    "digest cache {} is corrupt ({e}); re-hashing everything",
                    path.display()
                )),
            ),
        }
    }

    /// A cached digest, only if the file looks exactly as it did when hashed.
    pub fn lookup(&self, rel: &str, stamp: &FileStamp, chunk_size: u64) -> Option<FileDigest> {
        let e = self.entries.get(rel)?;
        if e.stamp != *stamp || e.chunk_size != chunk_size {
            return None;
        }
        // An entry whose digests do not fit the size is not used.
        let digests = ChunkDigests::new(stamp.size, chunk_size, e.chunks.clone()).ok()?;
        Some(FileDigest {
            sha256: e.sha256,
            digests,
            stamp: *stamp,
        })
    }

    /// The format detected when the file looked exactly like this.
    pub fn format(
        &self,
        rel: &str,
        stamp: &FileStamp,
    ) -> Option<vmic_format::image_format::ImageFormat> {
        self.entries
            .get(rel)
            .filter(|e| e.stamp == *stamp)
            .and_then(|e| e.format)
    }

    /// Remember the digests of `rel` as it looked (`stamp`).
    pub fn insert(
        &mut self,
        rel: &str,
        digest: &FileDigest,
        stamp: FileStamp,
        format: vmic_format::image_format::ImageFormat,
    ) {
        self.entries.insert(
            rel.to_string(),
            CacheEntry {
                stamp,
                sha256: digest.sha256,
                chunk_size: digest.digests.chunk_size(),
                chunks: digest.digests.chunks().to_vec(),
                format: Some(format),
            },
        );
    }

    /// Forget every digest (`--rehash`), keeping what is known of the
    /// published copies.
    pub fn forget_digests(&mut self) {
        self.entries.clear();
    }

    /// What vmic last put at `rel` in the publication.
    pub fn published(&self, rel: &str) -> Option<&PublishedCopy> {
        self.published.get(rel)
    }

    /// Remember the copy just put at `rel`.
    pub fn record_published(&mut self, rel: &str, copy: PublishedCopy) {
        self.published.insert(rel.to_string(), copy);
    }

    /// Forget copies of paths no longer published.
    pub fn retain_published(&mut self, keep: impl Fn(&str) -> bool) {
        self.published.retain(|rel, _| keep(rel));
    }

    /// Write the cache atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        atomic_write(path, &bytes)
    }
}
