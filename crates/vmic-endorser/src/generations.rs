//! Immutable catalog generations: every catalog a build or re-signing
//! publishes is also written as `catalogs/<sha256>.json`, never
//! overwritten, before the signature that names it. A reader that takes
//! the signature first and then the generation it names sees one
//! consistent catalog whatever mix of old and new entry points a CDN
//! serves. Generations older than [`GENERATION_GRACE_SECS`] (other than
//! the current one) are pruned.

use std::path::Path;
use std::time::{Duration, SystemTime};

use vmic_format::digest::Sha256Digest;
use vmic_format::publication::{GENERATIONS_DIR, generation_name};

use crate::error::{Error, Result};
use crate::fsutil::atomic_write;

/// How long a generation stays after a newer one is published: longer
/// than any sensible CDN cache time for the entry points.
pub const GENERATION_GRACE_SECS: u64 = 7 * 86_400;

/// Write the generation for `bytes` (a no-op if it exists: it is
/// immutable), refusing a planted link in place of the directory.
pub fn write_generation(out_dir: &Path, bytes: &[u8], sha256: &Sha256Digest) -> Result<()> {
    let dir = out_dir.join(GENERATIONS_DIR);
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
    let path = out_dir.join(generation_name(sha256));
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
    {
        return Ok(());
    }
    atomic_write(&path, bytes)
}

/// Remove generations older than the grace time, except `current`.
/// Returns the names removed.
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
    Ok(removed)
}
