//! Chunk indexes (catalog format 2) of the images the site imports. An
//! image's index is fetched from the endorser's sources when the image is
//! first fetched, authenticated by the digest its signed catalog entry
//! names, and kept in `SITE/chunks/<sha256>.json` (content-addressed, so
//! one file serves every endorser publishing the same bytes): `reverify`,
//! a re-import and `bundle` need it later without a network. A kept copy
//! is authenticated again every time it is read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vmic_engine::publication::Publication;
use vmic_format::catalog::{Chunks, Image};
use vmic_format::chunk_index::IndexedChunks;
use vmic_format::chunks::ChunkDigests;
use vmic_format::publication::CHUNK_INDEX_DIR;

use crate::error::{Error, Result};
use crate::fsutil::{atomic_write, remove_if_present};
use crate::model::ImageState;
use crate::site::Site;

/// Where the site keeps the index `indexed` names.
pub fn kept_path(site: &Site, indexed: &IndexedChunks) -> PathBuf {
    site.root.join(indexed.file_name())
}

/// The chunk digests `image` must have: inline, or from the kept index,
/// or (with a `source`) fetched, authenticated and kept.
pub fn digests(site: &Site, image: &Image, source: Option<&Publication>) -> Result<ChunkDigests> {
    let indexed = match &image.chunks {
        Chunks::Inline(digests) => return Ok(digests.clone()),
        Chunks::Indexed(indexed) => indexed,
    };
    if let Some(digests) = kept(site, indexed) {
        return Ok(digests);
    }
    let Some(source) = source else {
        return Err(Error::io_failure(format!(
            "image {}: its chunk index {} is not kept at {}; the next `vmic sync` fetches it again",
            image.label(),
            indexed.file_name(),
            site.root.display()
        )));
    };
    let (bytes, digests) = source
        .read_chunk_index(indexed)
        .map_err(|e| e.context(format!("image {}", image.label())))?;
    let dir = site.root.join(CHUNK_INDEX_DIR);
    crate::store::ensure_real_dir(&dir)?;
    atomic_write(&kept_path(site, indexed), &bytes)?;
    Ok(digests)
}

/// Whether a file of the index's length is kept (a cheap check for sync;
/// every use of a kept index authenticates it again).
pub fn is_kept(site: &Site, indexed: &IndexedChunks) -> bool {
    std::fs::symlink_metadata(kept_path(site, indexed))
        .is_ok_and(|m| m.is_file() && m.len() == indexed.index().size)
}

/// The kept index, if it is there and still the signed bytes. A copy that
/// is not is removed, so the next sync fetches it again.
fn kept(site: &Site, indexed: &IndexedChunks) -> Option<ChunkDigests> {
    let path = kept_path(site, indexed);
    let bytes = read_kept(&path, indexed.index().size).ok()?;
    match indexed.open(&bytes) {
        Ok(digests) => Some(digests),
        Err(_) => {
            let _ = remove_if_present(&path);
            None
        }
    }
}

/// A kept file: regular, not followed through a link, at most `max` bytes.
fn read_kept(path: &Path, max: u64) -> Result<Vec<u8>> {
    vmic_engine::fetch::read_file_capped(&path.display().to_string(), path, max)
}

/// Copy the kept index of `image` (if it has one) into the publication at
/// `dir`, as `chunks/<sha256>.json`.
pub fn copy_into(site: &Site, image: &Image, dir: &Path) -> Result<()> {
    let Some(indexed) = image.chunks.indexed() else {
        return Ok(());
    };
    let from = kept_path(site, indexed);
    let bytes = read_kept(&from, indexed.index().size)
        .ok()
        .filter(|b| indexed.open(b).is_ok())
        .ok_or_else(|| {
            Error::input(format!(
                "image {}: the site has no good copy of its chunk index {}; run `vmic sync` first",
                image.label(),
                from.display()
            ))
        })?;
    let target = dir.join(indexed.file_name());
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    atomic_write(&target, &bytes)
}

/// Remove kept indexes that no image the site holds or will fetch names.
pub fn prune(site: &Site) -> Result<()> {
    let dir = site.root.join(CHUNK_INDEX_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut needed = BTreeSet::new();
    for row in site.state.images()? {
        let live = matches!(
            row.state,
            ImageState::Imported | ImageState::Approved | ImageState::Quarantined
        ) || row.store_path.is_some();
        if let (true, Ok(image)) = (live, row.image())
            && let Some(indexed) = image.chunks.indexed()
        {
            needed.insert(indexed.file_name());
        }
    }
    for entry in entries.flatten() {
        let name = format!("{CHUNK_INDEX_DIR}/{}", entry.file_name().to_string_lossy());
        if !needed.contains(&name) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}
