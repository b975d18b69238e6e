//! Immutable catalog generations: every catalog a build or re-signing
//! publishes is also written as `catalogs/<sha256>.json`, never
//! overwritten, before the signature that names it. A reader that takes
//! the signature first and then the generation it names sees one
//! consistent catalog whatever mix of old and new entry points a CDN
//! serves. A generation is pruned [`GENERATION_GRACE_SECS`] after it was
//! superseded (its mtime is set when a newer one is published).
//!
//! Chunk indexes (catalog format 2, `chunks/<sha256>.json`) are immutable
//! the same way, written before the generation that names them, and pruned
//! once no remaining generation names them.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use vmic_format::catalog::Catalog;
use vmic_format::digest::Sha256Digest;
use vmic_format::publication::{
    CHUNK_INDEX_DIR, GENERATIONS_DIR, chunk_index_name, generation_name,
};

use crate::error::{Error, Result};
use crate::fsutil::atomic_write;

/// How long a generation stays after a newer one is published: longer
/// than any sensible CDN cache time for the entry points.
pub const GENERATION_GRACE_SECS: u64 = 7 * 86_400;

/// Write the generation for `bytes` (a no-op if it exists: it is
/// immutable), refusing a planted link in place of the directory.
pub fn write_generation(out_dir: &Path, bytes: &[u8], sha256: &Sha256Digest) -> Result<()> {
    write_immutable(out_dir, GENERATIONS_DIR, &generation_name(sha256), bytes)
}

/// Write a chunk index (a no-op if it exists: it is immutable).
pub fn write_chunk_index(out_dir: &Path, bytes: &[u8]) -> Result<()> {
    let name = chunk_index_name(&Sha256Digest::of(bytes));
    write_immutable(out_dir, CHUNK_INDEX_DIR, &name, bytes)
}

/// Write `name` (inside `dir`) unless a file of that length is there: its
/// name is its digest, so the same name means the same bytes.
fn write_immutable(out_dir: &Path, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = out_dir.join(dir);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(Error::input(format!(
                "{} is not a plain directory; refusing to publish through it (remove it, vmic creates the directory)",
                dir.display()
            )));
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?,
    }
    let path = out_dir.join(name);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    {
        return Ok(());
    }
    atomic_write(&path, bytes)
}

/// The generation `previous` stops being current now: its grace time
/// starts, whenever it was written. (A weekly builder's generation is a
/// week old when superseded; CDN edges may still name it for a while.)
pub fn mark_superseded(out_dir: &Path, previous: Option<&Sha256Digest>) {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(previous) = previous else { return };
    let path = out_dir.join(generation_name(previous));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    // Best effort: at worst the generation is pruned early, and readers
    // fall back to the plain entry point.
    if let Ok(file) = file {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Remove generations superseded more than the grace time ago (never
/// `current`), then chunk indexes no remaining generation names. Returns
/// the names removed.
pub fn prune_generations(out_dir: &Path, current: &Sha256Digest) -> Result<Vec<String>> {
    let dir = out_dir.join(GENERATIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let keep = format!("{current}.json");
    let cutoff = SystemTime::now() - Duration::from_secs(GENERATION_GRACE_SECS);
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_generation = name.len() == 69 && name.ends_with(".json");
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if is_generation && name != keep && old {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove", &entry.path(), e))?;
            removed.push(format!("{GENERATIONS_DIR}/{name}"));
        }
    }
    removed.extend(prune_chunk_indexes(out_dir)?);
    Ok(removed)
}

/// The catalogs of the generations in `out_dir` (each was authenticated
/// or signed before it was written; an unreadable one names nothing).
pub fn kept_generations(out_dir: &Path) -> Vec<Catalog> {
    let dir = out_dir.join(GENERATIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| Catalog::parse(&bytes).ok())
        .collect()
}

/// Chunk indexes that no kept generation names.
fn prune_chunk_indexes(out_dir: &Path) -> Result<Vec<String>> {
    let dir = out_dir.join(CHUNK_INDEX_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let named: BTreeSet<String> = kept_generations(out_dir)
        .iter()
        .flat_map(|c| c.images().iter())
        .filter_map(|i| i.chunks.indexed().map(|x| x.file_name()))
        .collect();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = format!("{CHUNK_INDEX_DIR}/{}", entry.file_name().to_string_lossy());
        let is_index = name.len() == CHUNK_INDEX_DIR.len() + 70 && name.ends_with(".json");
        if is_index && !named.contains(&name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove", &entry.path(), e))?;
            removed.push(name);
        }
    }
    Ok(removed)
}
