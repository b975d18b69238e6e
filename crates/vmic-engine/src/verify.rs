//! `vmic verify`: signature, format, freshness, then every image.
//!
//! Order matters: nothing in catalog.json is parsed before its exact bytes
//! verify against the trusted key; images are only touched through paths the
//! validated catalog names and that resolve inside the source.

use jiff::Timestamp;
use serde::Serialize;

use vmic_format::authenticate::Authenticated;
use vmic_format::catalog::Catalog;
use vmic_format::ids::{ImageId, Serial, Version};
use vmic_format::minisign::{KeyId, PublicKey};

use crate::error::{Error, ErrorKind, Result};
use crate::hashing::{CheckItem, Engine, EngineStats, Problem, Progress};
use crate::publication::Publication;
use crate::relpath::SafeRelPath;

/// What to check and against which key.
pub struct VerifyOptions<'a> {
    /// The one key the catalog must be signed by.
    pub key: &'a PublicKey,
    /// Check the signed catalog only, not the images.
    pub catalog_only: bool,
    /// Accept an expired catalog (reported loudly).
    pub allow_expired: bool,
    /// Refuse catalogs larger than this.
    pub max_catalog_bytes: u64,
    /// Time to judge expiry against; `None` means now.
    pub now: Option<Timestamp>,
}

/// The result of verifying a publication (`vmic verify --json`).
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Every image verified.
    pub ok: bool,
    /// Where the catalog was read.
    pub source: String,
    /// The signing key.
    pub key_id: KeyId,
    /// The endorser's name from the catalog.
    pub endorser: String,
    /// The catalog serial.
    pub serial: Serial,
    /// When it was made.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// Whether it had expired (only with `allow_expired`).
    pub expired: bool,
    /// The signed trusted comment.
    pub trusted_comment: String,
    /// Whether images were skipped.
    pub catalog_only: bool,
    /// One result per image, in catalog order.
    pub images: Vec<ImageResult>,
    /// Loud warnings (an expired catalog accepted).
    pub warnings: Vec<String>,
    /// Hashing figures, when images were checked.
    pub hashing: Option<EngineStats>,
}

/// Fetch `image` from a remote publication and check every chunk as it
/// streams past. A transfer failure is reported as unreadable (retryable).
fn stream_check(
    publication: &Publication,
    image: &vmic_format::catalog::Image,
    engine: &Engine,
) -> Vec<Problem> {
    let digests = match publication.chunk_digests(image) {
        Ok(digests) => digests,
        Err(e) => return vec![index_problem(image, &e)],
    };
    let mut landing = crate::stream_landing::StreamLanding::new(&digests, engine);
    match publication.fetch_image(image, &mut landing) {
        Ok(()) => landing.finish(),
        Err(e) if e.kind() == ErrorKind::Verification => {
            let mut problems = landing.finish();
            if problems.is_empty() {
                problems.push(Problem::Unreadable {
                    path: image.path.to_string(),
                    error: e.message().to_string(),
                });
            }
            problems
        }
        Err(e) => vec![Problem::Unreadable {
            path: image.path.to_string(),
            error: e.message().to_string(),
        }],
    }
}

/// An image whose chunk index could not be had: unreadable when every
/// source failed to serve it (worth retrying), a chunk-index problem when a
/// copy failed its signed digest.
fn index_problem(image: &vmic_format::catalog::Image, e: &Error) -> Problem {
    let path = image
        .chunks
        .indexed()
        .map_or_else(|| image.path.to_string(), |i| i.file_name());
    let error = e.message().to_string();
    if e.kind() == ErrorKind::Verification {
        Problem::ChunkIndex { path, error }
    } else {
        Problem::Unreadable { path, error }
    }
}

/// The result for one image.
#[derive(Debug, Serialize)]
pub struct ImageResult {
    /// Image id.
    pub id: ImageId,
    /// Image version.
    pub version: Version,
    /// Path in the publication.
    pub path: SafeRelPath,
    /// Declared size.
    pub size: u64,
    /// No problem found.
    pub ok: bool,
    /// Everything wrong with it.
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

/// Authenticate the publication's catalog, judge its freshness, then check
/// the size and every chunk of every image on all cores.
pub fn verify(
    publication: &Publication,
    opts: &VerifyOptions,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let authenticated = publication.authenticate(opts.key, opts.max_catalog_bytes)?;
    publication.check_entry_point(&authenticated, opts.max_catalog_bytes)?;
    let Authenticated {
        catalog, signature, ..
    } = authenticated;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let expired = catalog.is_expired_at(now);
    let warnings = judge_expiry(&catalog, expired, opts.allow_expired, publication)?;
    let mut images: Vec<ImageResult> = catalog
        .images()
        .iter()
        .map(|i| ImageResult {
            id: i.id.clone(),
            version: i.version.clone(),
            path: i.path.clone(),
            size: i.size(),
            ok: true,
            problems: Vec::new(),
        })
        .collect();
    let stats = if opts.catalog_only {
        None
    } else {
        Some(check_images(
            publication,
            &catalog,
            &mut images,
            engine,
            progress,
        ))
    };
    for image in &mut images {
        image.ok = image.problems.is_empty();
    }
    Ok(VerifyReport {
        ok: images.iter().all(|i| i.ok),
        source: publication.describe(),
        key_id: opts.key.key_id,
        endorser: catalog.endorser().name.clone(),
        serial: catalog.serial(),
        issued: catalog.issued(),
        expires: catalog.expires(),
        expired,
        trusted_comment: signature.trusted_comment,
        catalog_only: opts.catalog_only,
        images,
        warnings,
        hashing: stats,
    })
}

/// An expired catalog is refused unless the caller allowed it, loudly.
fn judge_expiry(
    catalog: &Catalog,
    expired: bool,
    allow_expired: bool,
    publication: &Publication,
) -> Result<Vec<String>> {
    if !expired {
        return Ok(Vec::new());
    }
    if !allow_expired {
        return Err(Error::verification(format!(
            "catalog {} (serial {}) expired at {}; refusing it. The endorser must publish a fresh catalog (--allow-expired overrides this, loudly)",
            publication.describe(),
            catalog.serial(),
            catalog.expires()
        )));
    }
    Ok(vec![format!(
        "CATALOG EXPIRED at {} — accepted only because of --allow-expired; its contents may be stale or withdrawn",
        catalog.expires()
    )])
}

/// Hash every local image against its chunk digests; problems land in
/// `results` (same order as the catalog's images).
fn check_images(
    publication: &Publication,
    catalog: &Catalog,
    results: &mut [ImageResult],
    engine: &Engine,
    progress: &dyn Progress,
) -> EngineStats {
    let mut items = Vec::new();
    let mut index = Vec::new();
    for (n, image) in catalog.images().iter().enumerate() {
        let path = image.path.to_string();
        match publication.local_image(image) {
            Ok(Some(local)) => match publication.chunk_digests(image) {
                Ok(expected) => {
                    items.push(CheckItem {
                        name: image.label(),
                        path: local,
                        expected,
                    });
                    index.push(n);
                }
                Err(e) => results[n].problems.push(index_problem(image, &e)),
            },
            // Remote: streamed through the chunk check, kept nowhere.
            Ok(None) => results[n]
                .problems
                .extend(stream_check(publication, image, engine)),
            Err(e) => results[n].problems.push(Problem::OutsideSource {
                path,
                error: e.message().to_string(),
            }),
        }
    }
    let (outcomes, stats) = engine.check_files(&items, progress);
    for (n, outcome) in index.into_iter().zip(outcomes) {
        results[n].problems.extend(outcome.problems);
    }
    stats
}
