//! `vmic mirror SOURCE DEST --pubkey KEY`: a verified, incremental,
//! resumable copy of a publication, for mirror operators. The catalog is
//! authenticated first; every image is checked chunk by chunk as it
//! arrives, in a temporary file, and renamed into DEST only when whole and
//! verified; the immutable generation, the signature and `catalog.json`
//! come last. So DEST serves its previous good generation until the new
//! one is complete, whatever fails or is tampered with on the way, and a
//! `kill -9` leaves nothing half-written under a served name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vmic_engine::hashing::{CheckItem, Engine, FileStamp, Progress};
use vmic_engine::partfile::PartFile;
use vmic_engine::publication::Publication;
use vmic_format::authenticate::{Authenticated, authenticate};
use vmic_format::catalog::{Catalog, Image};
use vmic_format::chunks::ChunkDigests;
use vmic_format::digest::Sha256Digest;
use vmic_format::minisign::PublicKey;
use vmic_format::publication::{
    CATALOG_FILE, GENERATIONS_DIR, INDEX_FILE, SIGNATURE_FILE, SUMS_FILE, SUMS_SIGNATURE_FILE,
};

use crate::error::{Error, Result};
use crate::fsutil::{DirLock, atomic_write, remove_if_present};

/// Where the mirror keeps its own state inside DEST (a dotted directory:
/// serve DEST with dotfiles denied, docs/PUBLISHING.md).
const STATE_DIR: &str = ".vmic-mirror";

/// What `vmic mirror` needs.
pub struct MirrorOptions<'a> {
    /// The key the source's catalog must be signed by.
    pub key: &'a PublicKey,
    /// Where the copy goes.
    pub dest: PathBuf,
    /// Largest catalog accepted.
    pub max_catalog_bytes: u64,
}

/// What a mirror run did.
#[derive(Debug, Default, Serialize)]
pub struct MirrorReport {
    /// The source.
    pub source: String,
    /// DEST, canonical.
    pub dest: String,
    /// The serial now served at DEST.
    pub serial: u64,
    /// DEST already served this catalog.
    pub unchanged: bool,
    /// Images fetched and verified this run.
    pub copied: Vec<String>,
    /// Bytes fetched for them.
    pub bytes_copied: u64,
    /// Images DEST already held, verified before.
    pub kept: usize,
    /// Files removed: old generations past their grace time, images no
    /// kept generation names.
    pub pruned: Vec<String>,
}

/// What DEST holds that was verified, by path: size, stamp and digest.
#[derive(Default, Serialize, Deserialize)]
struct Verified {
    files: BTreeMap<String, (FileStamp, String)>,
}

/// Copy the publication to `opts.dest`, verified.
pub fn mirror(
    source: &Publication,
    opts: &MirrorOptions,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<MirrorReport> {
    std::fs::create_dir_all(opts.dest.join(STATE_DIR))
        .map_err(|e| Error::io("create", &opts.dest, e))?;
    let dest = opts
        .dest
        .canonicalize()
        .map_err(|e| Error::io("resolve", &opts.dest, e))?;
    let _lock = DirLock::acquire(&dest.join(STATE_DIR), "mirror.lock", "mirror")?;
    // An endorser that rotated its key: the chain from the operator's key
    // is followed, and copied, so sites pinned to an older key follow it at
    // the mirror too.
    let followed = vmic_engine::rotation_chain::authenticate_following(
        source,
        opts.key,
        (opts.max_catalog_bytes, None),
    )?;
    let statements =
        vmic_engine::rotation_chain::statement_files(source, opts.key, &followed.rotated)?;
    let fresh = followed.authenticated;
    let signer = followed.rotated.last().unwrap_or(opts.key).clone();
    let opts = &MirrorOptions {
        key: &signer,
        dest: opts.dest.clone(),
        max_catalog_bytes: opts.max_catalog_bytes,
    };
    refuse_older_than_dest(&dest, &fresh, opts)?;
    let mut report = MirrorReport {
        source: source.describe(),
        dest: dest.display().to_string(),
        serial: fresh.catalog.serial().get(),
        ..Default::default()
    };
    let mut verified = load_verified(&dest);
    for image in fresh.catalog.images() {
        vmic_engine::cancel::check()?;
        copy_image(
            source,
            &dest,
            image,
            (engine, progress),
            &mut verified,
            &mut report,
        )?;
        save_verified(&dest, &verified)?;
    }
    report.unchanged = current_sha(&dest).is_some_and(|sha| sha == fresh.sha256);
    for (name, bytes) in &statements {
        let path = dest.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        atomic_write(&path, bytes)?;
    }
    publish_entry_points(source, &dest, &fresh, opts)?;
    report.pruned = prune(&dest, &fresh.sha256, &mut verified)?;
    save_verified(&dest, &verified)?;
    Ok(report)
}

/// A source serving an older catalog than DEST (a replay, or a stale
/// upstream) is refused: DEST keeps what it has.
fn refuse_older_than_dest(dest: &Path, fresh: &Authenticated, opts: &MirrorOptions) -> Result<()> {
    let Some(current) = read_current(dest, opts) else {
        return Ok(());
    };
    if current.catalog.serial() > fresh.catalog.serial() {
        return Err(Error::verification(format!(
            "the source serves catalog serial {}, older than serial {} at {}; {} keeps its catalog",
            fresh.catalog.serial(),
            current.catalog.serial(),
            dest.display(),
            dest.display()
        )));
    }
    Ok(())
}

/// DEST's current catalog, if it authenticates under the key.
fn read_current(dest: &Path, opts: &MirrorOptions) -> Option<Authenticated> {
    let bytes = std::fs::read(dest.join(CATALOG_FILE)).ok()?;
    let signature = std::fs::read_to_string(dest.join(SIGNATURE_FILE)).ok()?;
    authenticate(&bytes, &signature, opts.key, &dest.display().to_string()).ok()
}

fn current_sha(dest: &Path) -> Option<Sha256Digest> {
    std::fs::read(dest.join(CATALOG_FILE))
        .ok()
        .map(|b| Sha256Digest::of(&b))
}

/// One image: kept when DEST holds it verified (same stamp, same signed
/// digest), else fetched into a temporary file, checked chunk by chunk,
/// and renamed into place only when whole and verified.
fn copy_image(
    source: &Publication,
    dest: &Path,
    image: &Image,
    (engine, progress): (&Engine, &dyn Progress),
    verified: &mut Verified,
    report: &mut MirrorReport,
) -> Result<()> {
    let expected = mirror_chunk_index(source, dest, image)?;
    let rel = image.path.as_str().to_string();
    let target = image.path.join_to(dest);
    let digest = image.sha256.to_hex();
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        let stamp = FileStamp::of(&meta);
        if meta.is_file() && verified.files.get(&rel) == Some(&(stamp, digest.clone())) {
            report.kept += 1;
            return Ok(());
        }
        // Not known to be these bytes: check what is there before fetching.
        if meta.is_file() && meta.len() == image.size() && holds(&target, image, &expected, engine)
        {
            verified.files.insert(rel, (stamp, digest));
            report.kept += 1;
            return Ok(());
        }
    }
    let part = dest.join(STATE_DIR).join(format!("{digest}.part"));
    let mut landing = PartFile::open(&part, expected, engine, progress)?;
    if let Err(e) = source.fetch_image(image, &mut landing) {
        let _ = landing.suspend();
        return Err(e.context(format!("image {} ({})", image.label(), image.path)));
    }
    let problems = landing.finish()?;
    if let Some(first) = problems.first() {
        let _ = std::fs::remove_file(&part);
        return Err(Error::verification(format!(
            "image {} ({}) from {}: {}; {} keeps its previous catalog",
            image.label(),
            image.path,
            source.describe(),
            first.describe(),
            dest.display()
        )));
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    std::fs::rename(&part, &target).map_err(|e| Error::io("move into place", &target, e))?;
    let meta = std::fs::metadata(&target).map_err(|e| Error::io("stat", &target, e))?;
    verified.files.insert(rel, (FileStamp::of(&meta), digest));
    report.copied.push(image.label());
    report.bytes_copied += image.size();
    Ok(())
}

/// The chunk digests of `image`. A format-2 image's index is taken from
/// DEST when it holds a good copy, else fetched (authenticated by its signed
/// digest) and written to DEST, before the generation that names it.
fn mirror_chunk_index(source: &Publication, dest: &Path, image: &Image) -> Result<ChunkDigests> {
    let Some(indexed) = image.chunks.indexed() else {
        return source.chunk_digests(image);
    };
    let local = dest.join(indexed.file_name());
    let label = local.display().to_string();
    if let Ok(bytes) = vmic_engine::fetch::read_file_capped(&label, &local, indexed.index().size)
        && let Ok(digests) = indexed.open(&bytes)
    {
        return Ok(digests);
    }
    let (bytes, digests) = source
        .read_chunk_index(indexed)
        .map_err(|e| e.context(format!("image {}", image.label())))?;
    crate::generations::write_chunk_index(dest, &bytes)?;
    Ok(digests)
}

fn holds(path: &Path, image: &Image, expected: &ChunkDigests, engine: &Engine) -> bool {
    let item = CheckItem {
        name: image.label(),
        path: path.to_path_buf(),
        expected: expected.clone(),
    };
    let (outcomes, _) = engine.check_files(&[item], &vmic_engine::hashing::NoProgress);
    outcomes.iter().all(|o| o.problems.is_empty())
}

/// The generation first, then the signature naming it, then the plain
/// entry point; `SHA256SUMS` and its signature only when they verify under
/// the key and name this catalog; the page rendered here, not copied.
fn publish_entry_points(
    source: &Publication,
    dest: &Path,
    fresh: &Authenticated,
    opts: &MirrorOptions,
) -> Result<()> {
    crate::generations::write_generation(dest, &fresh.bytes, &fresh.sha256)?;
    crate::generations::mark_superseded(dest, current_sha(dest).as_ref());
    atomic_write(
        &dest.join(SIGNATURE_FILE),
        fresh.signature.to_file_string().as_bytes(),
    )?;
    atomic_write(&dest.join(CATALOG_FILE), &fresh.bytes)?;
    copy_sums(source, dest, fresh, opts.key)?;
    let html = crate::render::render_index(&fresh.catalog, &opts.key.to_file_string())?;
    atomic_write(&dest.join(INDEX_FILE), html.as_bytes())?;
    for (name, bytes) in crate::render::SITE_ASSETS {
        atomic_write(&dest.join(name), bytes)?;
    }
    Ok(())
}

fn copy_sums(
    source: &Publication,
    dest: &Path,
    fresh: &Authenticated,
    key: &PublicKey,
) -> Result<()> {
    let read = |name: &str| source.read_file(name, 64 << 20).ok();
    let (Some(sums), Some(signature)) = (read(SUMS_FILE), read(SUMS_SIGNATURE_FILE)) else {
        return remove_sums(dest);
    };
    let signed = String::from_utf8(signature.clone())
        .ok()
        .and_then(|text| vmic_format::minisign::Signature::parse(&text).ok())
        .is_some_and(|s| vmic_format::minisign::verify(key, &sums, &s).is_ok());
    let names_catalog =
        String::from_utf8_lossy(&sums).contains(&format!("{}  {CATALOG_FILE}", fresh.sha256));
    if !(signed && names_catalog) {
        return remove_sums(dest);
    }
    atomic_write(&dest.join(SUMS_SIGNATURE_FILE), &signature)?;
    atomic_write(&dest.join(SUMS_FILE), &sums)
}

/// Stale checksums would contradict the new catalog: better none.
fn remove_sums(dest: &Path) -> Result<()> {
    for name in [SUMS_FILE, SUMS_SIGNATURE_FILE] {
        remove_if_present(&dest.join(name))?;
    }
    Ok(())
}

/// Old generations past their grace time go; then every image that no
/// remaining generation names.
fn prune(dest: &Path, current: &Sha256Digest, verified: &mut Verified) -> Result<Vec<String>> {
    let mut pruned = crate::generations::prune_generations(dest, current)?;
    let mut named: BTreeSet<String> = BTreeSet::new();
    let generations = dest.join(GENERATIONS_DIR);
    for entry in std::fs::read_dir(&generations)
        .map_err(|e| Error::io("list", &generations, e))?
        .flatten()
    {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        // Every generation here was authenticated before it was written.
        if let Ok(catalog) = Catalog::parse(&bytes) {
            named.extend(catalog.images().iter().map(|i| i.path.as_str().to_string()));
        }
    }
    let stale: Vec<String> = verified
        .files
        .keys()
        .filter(|rel| !named.contains(*rel))
        .cloned()
        .collect();
    for rel in stale {
        remove_if_present(&dest.join(&rel))?;
        verified.files.remove(&rel);
        pruned.push(rel);
    }
    Ok(pruned)
}

fn load_verified(dest: &Path) -> Verified {
    std::fs::read(dest.join(STATE_DIR).join("verified.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_verified(dest: &Path, verified: &Verified) -> Result<()> {
    let bytes = serde_json::to_vec(verified)
        .map_err(|e| Error::io_failure(format!("cannot serialise the mirror state: {e}")))?;
    atomic_write(&dest.join(STATE_DIR).join("verified.json"), &bytes)
}

/// Copy a VO list (`vmic mirror --vo`): authenticated against the managers'
/// keys and threshold first; an older serial than DEST's is refused; the
/// signatures are written before the list, and the page is rendered here.
pub fn mirror_vo(
    source: &dyn vmic_engine::transport::Transport,
    dest: &Path,
    (keys, threshold): (&[PublicKey], u32),
) -> Result<MirrorReport> {
    std::fs::create_dir_all(dest.join(STATE_DIR)).map_err(|e| Error::io("create", dest, e))?;
    let dest = dest
        .canonicalize()
        .map_err(|e| Error::io("resolve", dest, e))?;
    let _lock = DirLock::acquire(&dest.join(STATE_DIR), "mirror.lock", "mirror")?;
    let list_path = dest.join(vmic_format::vo::VO_FILE);
    let current = std::fs::read(&list_path).ok();
    let known = current.as_deref().map(Sha256Digest::of);
    let candidates = vmic_engine::vo_source::read_vo_candidates(source, keys, known.as_ref())?;
    let newest = vmic_engine::vo_source::newest_authentic(candidates, keys, threshold)?;
    let (fresh, files) = (newest.list, newest.files);
    let held = current
        .as_deref()
        .and_then(|b| vmic_format::vo::VoList::parse(b).ok());
    if let Some(old) = held.filter(|old| old.serial > fresh.list.serial) {
        return Err(Error::verification(format!(
            "the source serves VO list serial {}, older than serial {} at {}; it keeps its list",
            fresh.list.serial,
            old.serial,
            dest.display()
        )));
    }
    let unchanged = current.as_deref() == Some(files.bytes.as_slice());
    for (name, text) in &files.signatures {
        atomic_write(&dest.join(name), text.as_bytes())?;
    }
    atomic_write(&list_path, &files.bytes)?;
    let html = crate::vo::render(&fresh.list)?;
    atomic_write(&dest.join(INDEX_FILE), html.as_bytes())?;
    for (name, bytes) in crate::render::SITE_ASSETS {
        atomic_write(&dest.join(name), bytes)?;
    }
    let kept: Vec<&str> = files.signatures.iter().map(|(n, _)| n.as_str()).collect();
    let pruned = crate::vo::remove_cosignatures(&dest, &kept)?;
    Ok(MirrorReport {
        source: files.origin,
        dest: dest.display().to_string(),
        serial: fresh.list.serial.get(),
        unchanged,
        pruned,
        ..Default::default()
    })
}
