//! `vmic build`: compile a directory of images into a signed, static catalog.
//!
//! Order of writes (each one atomic): images, static assets, the signature,
//! catalog.json, then index.html and SHA256SUMS, then removal of images no
//! longer listed. A web server serving OUT_DIR therefore never serves a
//! catalog that names a missing image, and the catalog and its signature
//! disagree for at most the time between two renames.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::cache::{CACHE_FILE, DigestCache, LEGACY_CACHE_FILE, PublishedCopy};
use vmic_format::catalog::{CatalogParts, CatalogVersion, Chunks, HttpUrl};
use vmic_format::chunk_index::IndexedChunks;
use vmic_format::ids::{ImageId, InvalidValue, Serial, Version, sanitize_token};
use vmic_format::image_format::{FormatName, ImageFormat};
use vmic_format::trusted_comment::CatalogComment;

use crate::catalog::{Catalog, Endorser, Image, Revocation};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fsutil::{self, DirLock, Placement, atomic_write};
use crate::hashing::{Engine, EngineStats, FileDigest, FileStamp, Progress};
use crate::meta::{self, CATALOG_TOML, CatalogToml, SIDECAR_SUFFIX, Sidecar};
use crate::minisign::SecretKey;
use crate::relpath::SafeRelPath;
use vmic_engine::detect;

pub use vmic_format::publication::{
    CATALOG_FILE, IMAGES_SUBDIR, INDEX_FILE, SIGNATURE_FILE, SUMS_FILE, SUMS_SIGNATURE_FILE,
};
/// The build lock, in the build's state directory.
pub(crate) const LOCK_FILE: &str = "build.lock";
/// Where versions before 0.2 kept the lock: in OUT_DIR, published with it.
const LEGACY_LOCK_FILE: &str = ".vmic-build.lock";
const DEFAULT_EXPIRY_SECS: u64 = 30 * 86_400;

/// Everything `vmic build` needs, already parsed.
pub struct BuildOptions<'a> {
    /// The directory of images (and sidecars, `catalog.toml`).
    pub images_dir: PathBuf,
    /// Where the publication is written.
    pub out_dir: PathBuf,
    /// The signing key.
    pub key: &'a SecretKey,
    /// Seconds of validity; `None` means catalog.toml's or 30 days.
    pub expires_secs: Option<u64>,
    /// Public base URL; each image gets `BASE/images/PATH` as a mirror URL.
    pub base_url: Option<String>,
    /// Base URLs of full mirrors of the publication, named in the signed
    /// catalog (`vmic mirror` keeps such a copy).
    pub mirrors: Vec<HttpUrl>,
    /// How images are put into `OUT_DIR/images`; `None` leaves them out.
    pub images: Option<Placement>,
    /// Where builds keep their state (digest cache, lock), one
    /// subdirectory per OUT_DIR; never inside OUT_DIR.
    pub state_root: PathBuf,
    /// Ignore the digest cache.
    pub rehash: bool,
    /// Chunk size for the chunk digests.
    pub chunk_size: u64,
    /// Catalog format: 2 puts chunk digests in per-image indexes, 1 inline
    /// (for sites that run a vmic older than format 2).
    pub catalog_version: CatalogVersion,
    /// Sign other bytes under an id@version the previous catalog published
    /// (an emergency; sites see the change as a rewrite).
    pub allow_rewrite: bool,
    /// Time to stamp as `issued`; `None` means now (tests pin it).
    pub now: Option<Timestamp>,
}

/// What a build did, for the CLI to print.
#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    /// The publication directory, canonical.
    pub out_dir: String,
    /// The signing key's id.
    pub key_id: String,
    /// The new catalog's serial.
    pub serial: u64,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// Images published.
    pub images: usize,
    /// Images hashed in this run.
    pub hashed: usize,
    /// Images whose digests came from the cache.
    pub reused_from_cache: usize,
    /// Bytes hashed in this run.
    pub bytes_hashed: u64,
    /// Files removed from `images/` because no longer listed.
    pub removed_images: Vec<String>,
    /// Warnings (a cache that could not be used or saved).
    pub warnings: Vec<String>,
    /// Hashing figures.
    pub hashing: EngineStats,
}

struct Candidate {
    rel: SafeRelPath,
    abs: PathBuf,
    stamp: FileStamp,
    sidecar: Sidecar,
}

/// Build `opts.images_dir` into a signed publication in `opts.out_dir`.
pub fn build(opts: &BuildOptions, engine: &Engine, progress: &dyn Progress) -> Result<BuildReport> {
    let images_dir = canonical_images_dir(&opts.images_dir)?;
    check_out_dir(&opts.out_dir, &images_dir)?;
    // Every input is read and checked before OUT_DIR is touched.
    let settings = meta::load_catalog_toml(&images_dir)?;
    let candidates = discover(&images_dir)?;
    refuse_empty(&images_dir, &candidates, &settings)?;
    let created = std::fs::symlink_metadata(&opts.out_dir).is_err();
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| Error::io("create output directory", &opts.out_dir, e))?;
    let out_dir = opts
        .out_dir
        .canonicalize()
        .map_err(|e| Error::io("resolve", &opts.out_dir, e))?;
    let result = build_into(
        opts,
        engine,
        progress,
        &images_dir,
        &out_dir,
        &settings,
        &candidates,
    );
    if result.is_err() && created {
        // A failed first build leaves no directory behind, not a half publication.
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    result
}

fn build_into(
    opts: &BuildOptions,
    engine: &Engine,
    progress: &dyn Progress,
    images_dir: &Path,
    out_dir: &Path,
    settings: &CatalogToml,
    candidates: &[Candidate],
) -> Result<BuildReport> {
    let state_dir = state_dir(&opts.state_root, out_dir)?;
    let _lock = DirLock::acquire(&state_dir, LOCK_FILE, "build")?;
    refuse_planted_images_link(out_dir)?;
    crate::rotate::refuse_rotated_key(out_dir, opts.key, "key")?;
    let previous = load_previous(out_dir)?;
    let mut warnings = Vec::new();
    let cache_path = state_dir.join(CACHE_FILE);
    let (mut cache, warning) = load_cache(&cache_path, out_dir, images_dir);
    warnings.extend(warning);
    if opts.rehash {
        cache.forget_digests();
    }
    let digests = hash_candidates(candidates, &cache, opts.chunk_size, engine, progress)?;
    let formats = candidates
        .iter()
        .map(|c| match cache.format(c.rel.as_str(), &c.stamp) {
            Some(f) => Ok(f),
            None => detect::detect(&c.abs),
        })
        .collect::<Result<Vec<_>>>()?;
    refuse_external_references(candidates, &formats)?;
    let catalog = assemble(
        opts,
        settings,
        images_dir,
        previous.as_ref(),
        candidates,
        &digests.digests,
        &formats,
    )?;
    let indexes = chunk_indexes(&catalog, &digests.digests);
    warnings.extend(check_rewrites(
        &catalog,
        previous.as_ref(),
        opts.allow_rewrite,
    )?);
    if let Some(placement) = opts.images {
        warnings.extend(publish_images(placement, out_dir, candidates, &mut cache)?);
    }
    publish(opts, out_dir, &catalog, &indexes)?;
    let removed = if opts.images.is_some() {
        remove_stale_images(out_dir, &catalog)?
    } else {
        Vec::new()
    };
    remember_digests(&mut cache, candidates, &digests.digests, &formats);
    let listed: BTreeSet<&str> = candidates.iter().map(|c| c.rel.as_str()).collect();
    cache.retain_published(|rel| listed.contains(rel));
    match cache.save(&cache_path) {
        Ok(()) => warnings.extend(remove_legacy_files(out_dir)),
        Err(e) => warnings.push(format!("could not save the digest cache: {e}")),
    }
    Ok(BuildReport {
        out_dir: out_dir.display().to_string(),
        key_id: opts.key.key_id.to_string(),
        serial: catalog.serial().get(),
        issued: catalog.issued(),
        expires: catalog.expires(),
        images: catalog.images().len(),
        hashed: digests.hashed,
        reused_from_cache: candidates.len() - digests.hashed,
        bytes_hashed: digests.stats.bytes_hashed,
        removed_images: removed,
        warnings,
        hashing: digests.stats,
    })
}

/// An image whose headers point outside it (CVE-2024-32498 and the qcow2
/// backing-file leaks) is not published unless its sidecar allows it.
/// Every offender is named, with the field and the path it points to.
fn refuse_external_references(candidates: &[Candidate], formats: &[ImageFormat]) -> Result<()> {
    let mut offenders = Vec::new();
    for (c, f) in candidates.iter().zip(formats) {
        let may_point_out = matches!(f, ImageFormat::Qcow2 | ImageFormat::Vmdk);
        if !may_point_out || c.sidecar.allow_external_references {
            continue;
        }
        let inspection = detect::inspect(&c.abs)?;
        for reference in inspection.external {
            offenders.push(format!("{}: {reference}", c.abs.display()));
        }
    }
    if offenders.is_empty() {
        return Ok(());
    }
    Err(Error::input(format!(
        "refusing to publish images that point outside themselves (a host running them would open those files): {}; if that is intended, set allow_external_references = true in the image's sidecar",
        offenders.join("; ")
    )))
}

/// The new catalog: validity window, images, revocations, chained to the
/// previous one. Every rule of the format is checked here, before anything
/// is written.
fn assemble(
    opts: &BuildOptions,
    settings: &CatalogToml,
    images_dir: &Path,
    previous: Option<&Previous>,
    candidates: &[Candidate],
    digests: &[FileDigest],
    formats: &[ImageFormat],
) -> Result<Catalog> {
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let issued = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let expires_secs = match (opts.expires_secs, &settings.catalog.expires) {
        (Some(s), _) => s,
        (None, Some(text)) => crate::duration::parse_seconds(text)
            .map_err(|e| e.context(images_dir.join(CATALOG_TOML).display()))?,
        (None, None) => DEFAULT_EXPIRY_SECS,
    };
    let expires = issued
        .checked_add(SignedDuration::from_secs(expires_secs as i64))
        .map_err(|e| Error::input(format!("expiry out of range: {e}")))?;
    let base_url = opts.base_url.clone().or(settings.catalog.base_url.clone());
    let mut images = Vec::with_capacity(candidates.len());
    for ((c, d), f) in candidates.iter().zip(digests).zip(formats) {
        images.push(describe(
            c,
            d,
            *f,
            base_url.as_deref(),
            opts.catalog_version,
        )?);
    }
    images.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
    let serial = match previous {
        None => Serial::FIRST,
        Some(p) => p.catalog.serial().next().map_err(|e| {
            Error::input(format!(
                "cannot build a catalog after serial {}: {e}",
                p.catalog.serial()
            ))
        })?,
    };
    Catalog::new(CatalogParts {
        version: opts.catalog_version,
        endorser: endorser(settings, opts.key, images_dir),
        serial,
        issued,
        expires,
        previous_sha256: previous.map(|p| p.sha256),
        images,
        revoked: revocations(settings, previous.map(|p| &p.catalog), issued),
    })
    .and_then(|catalog| catalog.with_mirrors(opts.mirrors.clone()))
    .map_err(|e| {
        Error::input(format!(
            "cannot build a valid catalog: {e} (check the sidecars and catalog.toml in {})",
            images_dir.display()
        ))
    })
}

/// An id@version names one set of bytes forever: different bytes under a
/// version the previous catalog published are refused (bump the version),
/// unless `allow_rewrite`, which is reported loudly.
fn check_rewrites(
    catalog: &Catalog,
    previous: Option<&Previous>,
    allow_rewrite: bool,
) -> Result<Vec<String>> {
    let Some(previous) = previous else {
        return Ok(Vec::new());
    };
    let rewritten: Vec<String> = catalog
        .images()
        .iter()
        .filter(|i| {
            previous
                .catalog
                .image(i.id.as_str(), i.version.as_str())
                .is_some_and(|old| old.sha256 != i.sha256)
        })
        .map(Image::label)
        .collect();
    if rewritten.is_empty() {
        return Ok(Vec::new());
    }
    if !allow_rewrite {
        return Err(Error::input(format!(
            "{} would get other bytes under a version already published (serial {}); give the changed image a new version in its sidecar, or pass --allow-rewrite if you must",
            rewritten.join(", "),
            previous.catalog.serial()
        )));
    }
    Ok(vec![format!(
        "REWRITE: {} now name other bytes than in serial {} (--allow-rewrite); sites will replace the copies they imported",
        rewritten.join(", "),
        previous.catalog.serial()
    )])
}

/// The state directory of builds into `out_dir` (canonical): a
/// subdirectory of `root` named after the path, private to its user.
pub(crate) fn state_dir(root: &Path, out_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let id = Sha256Digest::of(out_dir.as_os_str().as_encoded_bytes()).to_hex();
    let dir = root.join(&id[..16]);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("create the build state directory", &dir, e))?;
    Ok(dir)
}

/// The cache from the state directory, or (once, when moving from an
/// older version) from OUT_DIR.
fn load_cache(path: &Path, out_dir: &Path, images_dir: &Path) -> (DigestCache, Option<String>) {
    let legacy = out_dir.join(LEGACY_CACHE_FILE);
    if !path.exists() && legacy.is_file() {
        return DigestCache::load(&legacy, images_dir);
    }
    DigestCache::load(path, images_dir)
}

/// Internal files older versions left in OUT_DIR, published by mistake.
fn remove_legacy_files(out_dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    for name in [LEGACY_CACHE_FILE, LEGACY_LOCK_FILE] {
        let path = out_dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            match std::fs::remove_file(&path) {
                Ok(()) => warnings.push(format!(
                    "removed {} (internal state is no longer kept in the publication)",
                    path.display()
                )),
                Err(e) => warnings.push(format!("could not remove {}: {e}", path.display())),
            }
        }
    }
    warnings
}

/// Put each image into `OUT_DIR/images`, unless what is there is exactly
/// what vmic put there last time. A copy changed since (through the web
/// root, say) is replaced and reported.
fn publish_images(
    placement: Placement,
    out_dir: &Path,
    candidates: &[Candidate],
    cache: &mut DigestCache,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for c in candidates {
        let dst = c.rel.prefixed(IMAGES_SUBDIR)?.join_to(out_dir);
        let current = std::fs::symlink_metadata(&dst)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| FileStamp::of(&m));
        let recorded = cache.published(c.rel.as_str());
        match placement_state(placement, c.stamp, current, recorded) {
            PlacedState::Current => continue,
            PlacedState::ChangedInPublication => warnings.push(format!(
                "{} was changed in the publication since vmic put it there; replaced with {}",
                dst.display(),
                c.abs.display()
            )),
            PlacedState::Stale => {}
        }
        fsutil::place_file(&c.abs, &dst, placement)?;
        let meta = std::fs::symlink_metadata(&dst).map_err(|e| Error::io("stat", &dst, e))?;
        let copy = PublishedCopy {
            source: c.stamp,
            copy: FileStamp::of(&meta),
        };
        cache.record_published(c.rel.as_str(), copy);
    }
    Ok(warnings)
}

/// What is at an image's place in the publication, compared with its source.
#[derive(Debug, PartialEq, Eq)]
enum PlacedState {
    /// Exactly what it should be: nothing to do.
    Current,
    /// Missing, or from an older source or another placement.
    Stale,
    /// vmic's copy of this very source, written to since.
    ChangedInPublication,
}

fn placement_state(
    placement: Placement,
    source: FileStamp,
    current: Option<FileStamp>,
    recorded: Option<&PublishedCopy>,
) -> PlacedState {
    let Some(current) = current else {
        return PlacedState::Stale;
    };
    let is_source = current.dev == source.dev && current.inode == source.inode;
    match placement {
        Placement::HardLink if is_source => PlacedState::Current,
        Placement::HardLink => PlacedState::Stale,
        // A hard link left by an older version must become a copy.
        Placement::Copy if is_source => PlacedState::Stale,
        Placement::Copy => match recorded {
            Some(r) if r.source == source && r.copy == current => PlacedState::Current,
            Some(r) if r.source == source => PlacedState::ChangedInPublication,
            _ => PlacedState::Stale,
        },
    }
}

/// Assets, the signed catalog, the page and the sums (after the images).
fn publish(
    opts: &BuildOptions,
    out_dir: &Path,
    catalog: &Catalog,
    indexes: &[Vec<u8>],
) -> Result<()> {
    for (name, bytes) in crate::render::SITE_ASSETS {
        atomic_write(&out_dir.join(name), bytes)?;
    }
    for index in indexes {
        crate::generations::write_chunk_index(out_dir, index)?;
    }
    publish_catalog(out_dir, catalog, opts.key)
}

/// The chunk index files a format-2 catalog names (none for format 1),
/// made from the same digests its entries were made from.
fn chunk_indexes(catalog: &Catalog, digests: &[FileDigest]) -> Vec<Vec<u8>> {
    if catalog.version() == CatalogVersion::V1 {
        return Vec::new();
    }
    digests
        .iter()
        .map(|d| IndexedChunks::for_digests(&d.digests).1)
        .collect()
}

/// Linking changes the source's ctime; record the post-link stamp when
/// nothing else (size, mtime, inode) moved, so the next build can reuse it.
fn remember_digests(
    cache: &mut DigestCache,
    candidates: &[Candidate],
    digests: &[FileDigest],
    formats: &[ImageFormat],
) {
    for ((c, d), f) in candidates.iter().zip(digests).zip(formats) {
        let stamp = std::fs::metadata(&c.abs)
            .map(|m| FileStamp::of(&m))
            .unwrap_or(c.stamp);
        let same_content = stamp.size == d.stamp.size
            && stamp.mtime_ns == d.stamp.mtime_ns
            && stamp.inode == d.stamp.inode;
        if same_content {
            cache.insert(c.rel.as_str(), d, stamp, *f);
        }
    }
}

/// `OUT_DIR/images` must be a real directory: through a planted symlink,
/// publishing would write (and prune) wherever it points.
fn refuse_planted_images_link(out_dir: &Path) -> Result<()> {
    let images = out_dir.join(IMAGES_SUBDIR);
    match std::fs::symlink_metadata(&images) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::input(format!(
            "{} is a symbolic link; refusing to publish through it (remove it, vmic creates the directory)",
            images.display()
        ))),
        Ok(m) if !m.is_dir() => Err(Error::input(format!(
            "{} exists and is not a directory",
            images.display()
        ))),
        _ => Ok(()),
    }
}

fn canonical_images_dir(dir: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("open images directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::input(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    dir.canonicalize().map_err(|e| Error::io("resolve", dir, e))
}

fn check_out_dir(out: &Path, images_dir: &Path) -> Result<()> {
    // Check containment before creating anything, on the lexically absolute path.
    let absolute = std::path::absolute(out).map_err(|e| Error::io("resolve", out, e))?;
    let resolved = resolve_existing_prefix(&absolute);
    if resolved.starts_with(images_dir) {
        return Err(Error::input(format!(
            "output directory {} is inside the images directory {}; choose a directory outside it",
            out.display(),
            images_dir.display()
        )));
    }
    if images_dir.starts_with(&resolved) {
        return Err(Error::input(format!(
            "images directory {} is inside the output directory {}; choose another output directory",
            images_dir.display(),
            out.display()
        )));
    }
    Ok(())
}

/// Canonicalise the longest existing ancestor, keeping the rest as written.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

/// Every image file under `dir`: regular files (or links to them), not
/// hidden, not `catalog.toml`, not sidecars. Sidecars are paired here.
fn discover(dir: &Path) -> Result<Vec<Candidate>> {
    let mut files = Vec::new();
    let mut sidecars = BTreeSet::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.to_path_buf());
            match e.into_io_error() {
                Some(io) => Error::io("read", &path, io),
                None => Error::input(format!("filesystem loop at {}", path.display())),
            }
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if meta.is_dir() {
            if entry.path_is_symlink() {
                return Err(Error::input(format!(
                    "{} is a symbolic link to a directory; vmic does not follow those",
                    path.display()
                )));
            }
            continue;
        }
        if !meta.is_file() {
            return Err(Error::input(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let name = rel.to_string_lossy();
        if name == CATALOG_TOML {
            continue;
        }
        if name.ends_with(SIDECAR_SUFFIX) {
            sidecars.insert(path.to_path_buf());
            continue;
        }
        files.push((path.to_path_buf(), SafeRelPath::from_path(rel)?, meta));
    }
    pair_sidecars(files, sidecars)
}

/// A catalog without images withdraws everything at every site. That is how
/// an endorser retires (VMIC use case 1.2), so it needs revocations written
/// on purpose in catalog.toml; an images directory that is merely empty
/// (an unmounted disk, a wrong path) is refused.
fn refuse_empty(dir: &Path, candidates: &[Candidate], settings: &CatalogToml) -> Result<()> {
    if candidates.is_empty() && settings.revoke.is_empty() {
        return Err(Error::input(format!(
            "no images found in {} (hidden files, catalog.toml and *.toml sidecars are not images); to retire, publish a catalog of [[revoke]] entries in catalog.toml",
            dir.display()
        )));
    }
    Ok(())
}

/// Give every image its sidecar (or the defaults); a sidecar left over
/// belongs to no image and is an error.
fn pair_sidecars(
    files: Vec<(PathBuf, SafeRelPath, std::fs::Metadata)>,
    mut sidecars: BTreeSet<PathBuf>,
) -> Result<Vec<Candidate>> {
    let mut candidates = Vec::with_capacity(files.len());
    for (abs, rel, meta) in files {
        let sidecar_path = meta::sidecar_path(&abs);
        let sidecar = if sidecars.remove(&sidecar_path) {
            meta::load_sidecar(&sidecar_path)?
        } else {
            Sidecar::default()
        };
        candidates.push(Candidate {
            rel,
            abs,
            stamp: FileStamp::of(&meta),
            sidecar,
        });
    }
    if let Some(orphan) = sidecars.into_iter().next() {
        return Err(Error::input(format!(
            "sidecar {} has no image next to it (expected {})",
            orphan.display(),
            orphan.with_extension("").display()
        )));
    }
    Ok(candidates)
}

struct Previous {
    catalog: Catalog,
    sha256: Sha256Digest,
}

/// The catalog already in OUT_DIR decides the next serial. A corrupt one is an
/// error: silently restarting at serial 1 would make every site refuse us.
fn load_previous(out_dir: &Path) -> Result<Option<Previous>> {
    let path = out_dir.join(CATALOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let catalog = Catalog::parse(&bytes).map_err(|e| {
        Error::input(format!(
            "the existing {} cannot be read ({}); it decides the next serial, so fix or move it away first",
            path.display(),
            e.message()
        ))
    })?;
    Ok(Some(Previous {
        catalog,
        sha256: Sha256Digest::of(&bytes),
    }))
}

struct Digests {
    digests: Vec<FileDigest>,
    hashed: usize,
    stats: EngineStats,
}

fn hash_candidates(
    candidates: &[Candidate],
    cache: &DigestCache,
    chunk_size: u64,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<Digests> {
    let mut digests: Vec<Option<FileDigest>> = candidates
        .iter()
        .map(|c| cache.lookup(c.rel.as_str(), &c.stamp, chunk_size))
        .collect();
    let todo: Vec<usize> = (0..candidates.len())
        .filter(|&i| digests[i].is_none())
        .collect();
    let files: Vec<(PathBuf, u64)> = todo
        .iter()
        .map(|&i| (candidates[i].abs.clone(), candidates[i].stamp.size))
        .collect();
    let (results, stats) = engine.digest_files(&files, chunk_size, progress);
    for (&i, result) in todo.iter().zip(results) {
        digests[i] = Some(result?);
    }
    Ok(Digests {
        digests: digests.into_iter().flatten().collect(),
        hashed: todo.len(),
        stats,
    })
}

fn describe(
    c: &Candidate,
    d: &FileDigest,
    format: ImageFormat,
    base_url: Option<&str>,
    catalog_version: CatalogVersion,
) -> Result<Image> {
    let s = &c.sidecar;
    let path = c.rel.prefixed(IMAGES_SUBDIR)?;
    let invalid = |e: InvalidValue| Error::input(format!("{}: {e}", c.abs.display()));
    let id = match &s.id {
        Some(id) => id.clone(),
        None => ImageId::parse(&id_from_file_name(&c.rel)).map_err(invalid)?,
    };
    let version = match &s.version {
        Some(v) => v.clone(),
        None => Version::parse(&d.sha256.to_hex()[..12]).map_err(invalid)?,
    };
    let urls = match base_url {
        Some(b) => vec![
            HttpUrl::parse(&format!("{}/{}", b.trim_end_matches('/'), path)).map_err(invalid)?,
        ],
        None => Vec::new(),
    };
    Ok(Image {
        id,
        version,
        title: s.title.clone(),
        description: s.description.clone(),
        path,
        urls,
        sha256: d.sha256,
        chunks: match catalog_version {
            CatalogVersion::V1 => Chunks::Inline(d.digests.clone()),
            CatalogVersion::V2 => Chunks::Indexed(IndexedChunks::for_digests(&d.digests).0),
        },
        format: FormatName::known(format),
        arch: s.arch.clone(),
        os_family: s.os_family.clone(),
        os: s.os.clone(),
        os_version: s.os_version.clone(),
        hypervisor: s.hypervisor.clone(),
        min_cores: s.min_cores,
        min_memory_mb: s.min_memory_mb,
        tags: s.tags.clone(),
    })
}

/// `sub/CentOS 7.qcow2` → `sub-CentOS-7`: the path without its extension,
/// with anything outside the id alphabet replaced by '-'.
fn id_from_file_name(rel: &SafeRelPath) -> String {
    let text = rel.as_str();
    let stem = match text.rfind('.') {
        Some(dot) if dot > text.rfind('/').map_or(0, |s| s + 1) => &text[..dot],
        _ => text,
    };
    sanitize_token(stem, "image")
}

fn endorser(settings: &CatalogToml, key: &SecretKey, images_dir: &Path) -> Endorser {
    let fallback = images_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vmic endorser".into());
    Endorser {
        name: settings.endorser.name.clone().unwrap_or(fallback),
        contact: settings.endorser.contact.clone(),
        vo: settings.endorser.vo.clone(),
        key_id: key.key_id,
    }
}

/// Revocations come from catalog.toml; a revocation already published keeps
/// its original date.
fn revocations(
    settings: &CatalogToml,
    previous: Option<&Catalog>,
    now: Timestamp,
) -> Vec<Revocation> {
    settings
        .revoke
        .iter()
        .map(|r| {
            let earlier = previous.and_then(|p| {
                p.revoked()
                    .iter()
                    .find(|old| old.id == r.id && old.version == r.version)
            });
            Revocation {
                id: r.id.clone(),
                version: r.version.clone(),
                reason: r.reason.clone(),
                revoked_at: earlier.map_or(now, |old| old.revoked_at),
            }
        })
        .collect()
}

/// Sign and write catalog.json + signature, then the files derived from them.
pub(crate) fn publish_catalog(out_dir: &Path, catalog: &Catalog, key: &SecretKey) -> Result<()> {
    let bytes = catalog.to_bytes()?;
    let sha256 = Sha256Digest::of(&bytes);
    // The generation first, then the signature naming it, then the plain
    // entry point: a reader following the signature always finds its bytes.
    crate::generations::write_generation(out_dir, &bytes, &sha256)?;
    crate::generations::mark_superseded(out_dir, catalog.previous_sha256().as_ref());
    let mut comment = comment_fields(catalog);
    comment.sha256 = Some(sha256);
    let signature = key.sign(&bytes, &comment.render(), "signature from vmic secret key");
    atomic_write(
        &out_dir.join(SIGNATURE_FILE),
        signature.to_file_string().as_bytes(),
    )?;
    atomic_write(&out_dir.join(CATALOG_FILE), &bytes)?;
    let html = crate::render::render_index(catalog, &key.public_key().to_file_string())?;
    atomic_write(&out_dir.join(INDEX_FILE), html.as_bytes())?;
    let mut sums = String::new();
    for image in catalog.images() {
        sums.push_str(&format!("{}  {}\n", image.sha256, image.path));
    }
    sums.push_str(&format!("{}  {CATALOG_FILE}\n", Sha256Digest::of(&bytes)));
    // Signed too: without it, `sha256sum -c` would accept a tampered image
    // whose new hash was written into the file by whoever changed the image.
    let sums_signature = key.sign(
        sums.as_bytes(),
        &comment.render_for(SUMS_FILE),
        "signature from vmic secret key",
    );
    atomic_write(
        &out_dir.join(SUMS_SIGNATURE_FILE),
        sums_signature.to_file_string().as_bytes(),
    )?;
    atomic_write(&out_dir.join(SUMS_FILE), sums.as_bytes())?;
    crate::generations::prune_generations(out_dir, &sha256).map(|_| ())
}

/// The trusted comment carries what a human running `minisign -V` should
/// see, and what vmic cross-checks against the catalog.
fn comment_fields(catalog: &Catalog) -> CatalogComment {
    CatalogComment {
        timestamp: catalog.issued().as_second(),
        serial: catalog.serial(),
        expires: catalog.expires(),
        key: catalog.endorser().key_id,
        sha256: None,
    }
}

/// Remove files under OUT_DIR/images that the new catalog no longer lists.
fn remove_stale_images(out_dir: &Path, catalog: &Catalog) -> Result<Vec<String>> {
    let images_root = out_dir.join(IMAGES_SUBDIR);
    if !images_root.is_dir() {
        return Ok(Vec::new());
    }
    let listed: BTreeSet<&str> = catalog.images().iter().map(|i| i.path.as_str()).collect();
    let mut removed = Vec::new();
    for entry in walkdir::WalkDir::new(&images_root).follow_links(false) {
        let entry = entry.map_err(|e| {
            Error::io_failure(format!("cannot walk {}: {e}", images_root.display()))
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(out_dir).unwrap_or(entry.path());
        let rel_text = rel.to_string_lossy();
        if !listed.contains(rel_text.as_ref()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove stale image", entry.path(), e))?;
            removed.push(rel_text.into_owned());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_file_names() {
        let id = |p: &str| id_from_file_name(&SafeRelPath::parse(p).unwrap());
        assert_eq!(id("centos-7.qcow2"), "centos-7");
        assert_eq!(id("sub/CentOS 7.x86_64.qcow2"), "sub-CentOS-7.x86_64");
        assert_eq!(id("noext"), "noext");
        assert_eq!(id("dir.d/noext"), "dir.d-noext");
    }
}
