//! `vmic verify`: signature, format, freshness, then every image.
//!
//! Order matters: nothing in catalog.json is parsed before its exact bytes
//! verify against the trusted key; images are only touched through paths the
//! validated catalog names and that resolve inside the source.

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::{Error, ErrorKind, Result};
use crate::hashing::{CheckItem, Engine, EngineStats, Problem, Progress};
use crate::minisign::{self, PublicKey, Signature};
use crate::source::Source;

pub struct VerifyOptions<'a> {
    pub key: &'a PublicKey,
    pub catalog_only: bool,
    pub allow_expired: bool,
    pub max_catalog_bytes: u64,
    /// Time to judge expiry against; `None` means now.
    pub now: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub source: String,
    pub key_id: String,
    pub endorser: String,
    pub serial: u64,
    pub issued: Timestamp,
    pub expires: Timestamp,
    pub expired: bool,
    pub trusted_comment: String,
    pub catalog_only: bool,
    pub images: Vec<ImageResult>,
    pub warnings: Vec<String>,
    pub hashing: Option<EngineStats>,
}

#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub id: String,
    pub version: String,
    pub path: String,
    pub size: u64,
    pub ok: bool,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Exit class when images failed: I/O trouble alone is worth retrying,
    /// anything else is a verification failure.
    pub fn failure_kind(&self) -> Option<ErrorKind> {
        if self.ok {
            return None;
        }
        let only_io = self
            .images
            .iter()
            .flat_map(|i| &i.problems)
            .all(|p| matches!(p, Problem::Unreadable { .. }));
        Some(if only_io {
            ErrorKind::Io
        } else {
            ErrorKind::Verification
        })
    }
}

/// A catalog whose signature, format and content checked out.
pub struct Authenticated {
    pub catalog: Catalog,
    pub signature: Signature,
    /// SHA-256 of the exact catalog bytes (rollback memory, history chain).
    pub sha256: crate::digest::Sha256Digest,
}

/// Fetch and authenticate a catalog: signature first, then parsing and
/// validation, then the cross-checks between signature and content.
pub fn authenticate(
    source: &dyn Source,
    key: &PublicKey,
    max_catalog_bytes: u64,
) -> Result<Authenticated> {
    let bytes = source.read_catalog(max_catalog_bytes)?;
    let sig_text = source.read_signature()?;
    let signature = Signature::parse(&sig_text)
        .map_err(|e| e.context(format!("{}.minisig", source.describe())))?;
    minisign::verify(key, &bytes, &signature).map_err(|e| e.context(source.describe()))?;
    let catalog = Catalog::parse(&bytes).map_err(|e| e.context(source.describe()))?;
    cross_check(&catalog, &signature, key)?;
    Ok(Authenticated {
        catalog,
        signature,
        sha256: crate::digest::Sha256Digest::of(&bytes),
    })
}

/// The signed trusted comment and the signed catalog must tell the same story;
/// comments from stock minisign carry no such fields and pass.
fn cross_check(catalog: &Catalog, signature: &Signature, key: &PublicKey) -> Result<()> {
    if catalog.endorser.key_id != key.key_id.to_string() {
        return Err(Error::verification(format!(
            "catalog names key {} as its endorser key but is signed by {}",
            catalog.endorser.key_id, key.key_id
        )));
    }
    for field in signature.trusted_comment.split(['\t', ' ']) {
        let mismatch = |what: &str, value: &str, actual: String| {
            Error::verification(format!(
                "trusted comment says {what} {value} but catalog.json says {actual}"
            ))
        };
        if let Some(v) = field.strip_prefix("serial:") {
            if v != catalog.serial.to_string() {
                return Err(mismatch("serial", v, catalog.serial.to_string()));
            }
        } else if let Some(v) = field.strip_prefix("expires:")
            && v != catalog.expires.to_string()
        {
            return Err(mismatch("expires", v, catalog.expires.to_string()));
        }
    }
    Ok(())
}

pub fn verify(
    source: &dyn Source,
    opts: &VerifyOptions,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let Authenticated {
        catalog, signature, ..
    } = authenticate(source, opts.key, opts.max_catalog_bytes)?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let expired = catalog.is_expired_at(now);
    let mut warnings = Vec::new();
    if expired {
        if !opts.allow_expired {
            return Err(Error::verification(format!(
                "catalog {} (serial {}) expired at {}; refusing it. The endorser must publish a fresh catalog (--allow-expired overrides this, loudly)",
                source.describe(),
                catalog.serial,
                catalog.expires
            )));
        }
        warnings.push(format!(
            "CATALOG EXPIRED at {} — accepted only because of --allow-expired; its contents may be stale or withdrawn",
            catalog.expires
        ));
    }

    let mut images: Vec<ImageResult> = catalog
        .images
        .iter()
        .map(|i| ImageResult {
            id: i.id.clone(),
            version: i.version.clone(),
            path: i.path.clone(),
            size: i.size,
            ok: true,
            problems: Vec::new(),
        })
        .collect();
    let mut stats = None;
    if !opts.catalog_only {
        let mut items = Vec::new();
        let mut index = Vec::new();
        for (n, image) in catalog.images.iter().enumerate() {
            let rel = image.safe_path()?;
            match source.local_image(&rel) {
                Ok(Some(path)) => {
                    items.push(CheckItem {
                        name: image.label(),
                        path,
                        size: image.size,
                        chunk_size: image.chunk_size,
                        chunks: image.chunks.clone(),
                    });
                    index.push(n);
                }
                Ok(None) => images[n].problems.push(Problem::Unreadable {
                    path: image.path.clone(),
                    error: "remote sources cannot be verified in place".into(),
                }),
                Err(e) => images[n].problems.push(Problem::OutsideSource {
                    path: image.path.clone(),
                    error: e.message().to_string(),
                }),
            }
        }
        let (outcomes, engine_stats) = engine.check_files(&items, progress);
        for (n, outcome) in index.into_iter().zip(outcomes) {
            images[n].problems.extend(outcome.problems);
        }
        stats = Some(engine_stats);
    }
    for image in &mut images {
        image.ok = image.problems.is_empty();
    }
    Ok(VerifyReport {
        ok: images.iter().all(|i| i.ok),
        source: source.describe(),
        key_id: opts.key.key_id.to_string(),
        endorser: catalog.endorser.name.clone(),
        serial: catalog.serial,
        issued: catalog.issued,
        expires: catalog.expires,
        expired,
        trusted_comment: signature.trusted_comment,
        catalog_only: opts.catalog_only,
        images,
        warnings,
        hashing: stats,
    })
}
