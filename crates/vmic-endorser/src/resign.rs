//! `vmic resign`: keep a publication valid without rebuilding it. The
//! current catalog is authenticated with the signing key first (a catalog
//! changed in the web root must not get a fresh signature), then signed
//! again, unchanged but for a new serial, issue time, expiry and
//! predecessor. Nothing is hashed, so it takes seconds whatever the size of
//! the images: cron-able before expiry.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::build::{CATALOG_FILE, LOCK_FILE, SIGNATURE_FILE, publish_catalog, state_dir};
use crate::catalog::{Catalog, CatalogParts};
use crate::error::{Error, Result};
use crate::fsutil::{DirLock, open_regular};
use crate::minisign::SecretKey;
use vmic_format::authenticate::{Authenticated, authenticate};
use vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES;

/// What `vmic resign` needs.
pub struct ResignOptions<'a> {
    /// The publication to re-sign.
    pub out_dir: PathBuf,
    /// The key that signed it, and signs it again.
    pub key: &'a SecretKey,
    /// Validity of the new signature, in seconds from now.
    pub expires_secs: u64,
    /// Where builds keep their state (the lock shared with `build`).
    pub state_root: PathBuf,
    /// Time to stamp as `issued`; `None` means now (tests pin it).
    pub now: Option<Timestamp>,
}

/// What a re-signing did, for the CLI to print.
#[derive(Debug, serde::Serialize)]
pub struct ResignReport {
    /// The publication directory, canonical.
    pub out_dir: String,
    /// The signing key's id.
    pub key_id: String,
    /// The serial that was current.
    pub previous_serial: u64,
    /// The new catalog's serial.
    pub serial: u64,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// Images it lists (unchanged).
    pub images: usize,
}

/// Re-sign the publication in `opts.out_dir` with a new serial and expiry.
pub fn resign(opts: &ResignOptions) -> Result<ResignReport> {
    let out_dir = opts
        .out_dir
        .canonicalize()
        .map_err(|e| Error::io("open publication", &opts.out_dir, e))?;
    let _lock = DirLock::acquire(&state_dir(&opts.state_root, &out_dir)?, LOCK_FILE, "build")?;
    let current = authenticate_current(&out_dir, opts.key)?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let issued = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let expires = i64::try_from(opts.expires_secs)
        .ok()
        .and_then(|secs| issued.checked_add(SignedDuration::from_secs(secs)).ok())
        .ok_or_else(|| Error::input("expiry out of range"))?;
    let old = &current.catalog;
    let serial = old
        .serial()
        .next()
        .map_err(|e| Error::input(format!("cannot re-sign after serial {}: {e}", old.serial())))?;
    refuse_missing_chunk_indexes(&out_dir, old)?;
    let catalog = Catalog::new(CatalogParts {
        version: old.version(),
        endorser: old.endorser().clone(),
        serial,
        issued,
        expires,
        previous_sha256: Some(current.sha256),
        images: old.images().to_vec(),
        revoked: old.revoked().to_vec(),
    })
    .and_then(|catalog| catalog.with_mirrors(old.mirrors().to_vec()))
    .map_err(|e| Error::input(format!("cannot re-sign the catalog: {e}")))?;
    publish_catalog(&out_dir, &catalog, opts.key)?;
    Ok(ResignReport {
        out_dir: out_dir.display().to_string(),
        key_id: opts.key.key_id.to_string(),
        previous_serial: old.serial().get(),
        serial: serial.get(),
        issued,
        expires,
        images: catalog.images().len(),
    })
}

/// Re-signing names the same chunk indexes again: they must still be
/// there, or every site would fail to import (run `vmic build` instead).
fn refuse_missing_chunk_indexes(out_dir: &Path, catalog: &Catalog) -> Result<()> {
    for image in catalog.images() {
        let Some(indexed) = image.chunks.indexed() else {
            continue;
        };
        let path = out_dir.join(indexed.file_name());
        let present = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() == indexed.index().size);
        if !present {
            return Err(Error::input(format!(
                "image {}: its chunk index {} is missing; run `vmic build` to publish it again",
                image.label(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// The publication's catalog, verified with the public half of `key`:
/// only what this key signed is signed again.
pub(crate) fn authenticate_current(out_dir: &Path, key: &SecretKey) -> Result<Authenticated> {
    let catalog_path = out_dir.join(CATALOG_FILE);
    let bytes = read_regular(&catalog_path, DEFAULT_MAX_CATALOG_BYTES)?;
    let signature = read_regular(&out_dir.join(SIGNATURE_FILE), DEFAULT_MAX_CATALOG_BYTES)?;
    let signature = String::from_utf8(signature).map_err(|_| {
        Error::verification(format!(
            "{} is not a minisign signature",
            out_dir.join(SIGNATURE_FILE).display()
        ))
    })?;
    let origin = catalog_path.display().to_string();
    authenticate(&bytes, &signature, &key.public_key(), &origin).map_err(|e| {
        Error::new(
            e.kind(),
            format!(
                "{}; refusing to re-sign a catalog this key ({}) did not sign as it is",
                e.message(),
                key.key_id
            ),
        )
    })
}

/// A regular file of the publication (no symlink followed, no FIFO
/// waited on), at most `max` bytes of it.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path, path)?
        .take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}
