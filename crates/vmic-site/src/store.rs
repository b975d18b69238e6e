//! Moving images into, out of and around the site store, each move recorded
//! (state, audit, hook event) in one database transaction.
//!
//! Crash safety rests on one invariant that [`reconcile`] restores: the store
//! holds exactly the files of images in state `imported`. Files reach the
//! store by rename only after verification; the database is updated after
//! the rename (a crash in between leaves a verified file that the next run
//! re-checks and adopts); files leave the store after the database says so
//! (a crash in between leaves an orphan that the next run deletes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vmic_format::catalog::Image;
use vmic_format::image_format::ImageFormat;

use crate::error::{Error, Result};
use crate::model::{Decider, HookEvent, ImageState, StoredText};
use crate::site::Site;
use crate::state::{ImageRow, Tx};

/// `ENDORSER/ID@VERSION.EXT`, relative to the store. All parts are
/// validated tokens, so this cannot escape the store. EXT is the name of a
/// format vmic knows, else `img`: a fixed set of dot-free names, so the last
/// `.` always splits version from extension and two images can never share
/// a file (a catalog's own format name such as `x.qcow2` never reaches it).
pub fn store_rel(row: &ImageRow) -> String {
    let ext = match row.format.known_format() {
        Some(ImageFormat::Unknown) | None => "img",
        Some(known) => known.as_str(),
    };
    format!("{}/{}@{}.{ext}", row.endorser, row.id, row.version)
}

/// `ID@VERSION.part`, the partial download of `row` under `tmp/ENDORSER/`.
pub fn part_name(row: &ImageRow) -> String {
    format!("{}@{}{PART_SUFFIX}", row.id, row.version)
}

/// The suffix of partial downloads.
const PART_SUFFIX: &str = ".part";

/// An event about an endorser, not an image, in `tx`: the log entry
/// `action`, and the hook `event` with only `VMIC_EVENT`, `VMIC_ENDORSER`
/// and `VMIC_REASON` set.
pub fn endorser_event(
    tx: &Tx<'_>,
    action: &str,
    event: HookEvent,
    endorser: &str,
    reason: &str,
) -> Result<()> {
    tx.audit(action, Some(endorser), None, reason)?;
    tx.enqueue_hook(
        event,
        &[
            ("VMIC_EVENT".into(), event.as_str().into()),
            ("VMIC_ENDORSER".into(), endorser.into()),
            ("VMIC_REASON".into(), reason.into()),
        ],
    )
}

/// The environment a hook gets for an event about `row`.
pub fn hook_env(
    event: HookEvent,
    row: &ImageRow,
    store_path: Option<&Path>,
    reason: &str,
) -> Vec<(String, String)> {
    let image: Option<Image> = row.image().ok();
    let field = |f: fn(&Image) -> Option<String>| image.as_ref().and_then(f).unwrap_or_default();
    vec![
        ("VMIC_EVENT".into(), event.as_str().into()),
        ("VMIC_ENDORSER".into(), row.endorser.to_string()),
        ("VMIC_IMAGE_ID".into(), row.id.to_string()),
        ("VMIC_IMAGE_VERSION".into(), row.version.to_string()),
        (
            "VMIC_IMAGE_PATH".into(),
            store_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("VMIC_IMAGE_SHA256".into(), row.sha256.to_hex()),
        ("VMIC_IMAGE_SIZE".into(), row.size.to_string()),
        ("VMIC_IMAGE_FORMAT".into(), row.format.to_string()),
        ("VMIC_IMAGE_OS".into(), field(|i| i.os.clone())),
        (
            "VMIC_IMAGE_OS_VERSION".into(),
            field(|i| i.os_version.clone()),
        ),
        ("VMIC_IMAGE_ARCH".into(), field(|i| i.arch.clone())),
        ("VMIC_IMAGE_TITLE".into(), field(|i| i.title.clone())),
        ("VMIC_REASON".into(), reason.into()),
    ]
}

/// Take an image out of use: new state + audit + hook (if it was in use) in
/// one transaction, then the store file is removed.
pub fn withdraw(
    site: &mut Site,
    row: &ImageRow,
    state: ImageState,
    reason: &str,
    event: HookEvent,
    decided_by: Decider,
) -> Result<()> {
    // A copy in the store (imported, or kept while a rewrite waits) leaves:
    // the hook hears of it.
    let path = row.store_path.as_ref().map(|p| site.store().join(p));
    let was_imported = path.is_some();
    let tx = site.state.transaction()?;
    tx.set_state(row, state, reason, decided_by, None)?;
    tx.audit(
        event.as_str(),
        Some(row.endorser.as_str()),
        Some(&row.label()),
        reason,
    )?;
    if was_imported {
        tx.enqueue_hook(event, &hook_env(event, row, path.as_deref(), reason))?;
    }
    tx.commit()?;
    if let Some(path) = path {
        remove_if_present(&path)?;
    }
    remove_leftovers(site, row)
}

/// A withdrawn image leaves no copy behind: its quarantined bytes and an
/// interrupted download go too, and the log says which files were deleted.
fn remove_leftovers(site: &mut Site, row: &ImageRow) -> Result<()> {
    let tmp = site.tmp().join(row.endorser.as_str());
    let mut candidates = quarantined_copies(site, row)?;
    candidates.push(tmp.join(part_name(row)));
    candidates.push(tmp.join(format!("{}.reuse", part_name(row))));
    let mut deleted = Vec::new();
    for path in candidates {
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_if_present(&path)?;
            deleted.push(path.display().to_string());
        }
    }
    if deleted.is_empty() {
        return Ok(());
    }
    let tx = site.state.transaction()?;
    tx.audit(
        "deleted",
        Some(row.endorser.as_str()),
        Some(&row.label()),
        &format!("withdrawn image: deleted {}", deleted.join(", ")),
    )?;
    tx.commit()
}

/// Move bytes that failed verification aside, record why, fire the hook.
pub fn quarantine(site: &mut Site, row: &ImageRow, file: &Path, reason: &str) -> Result<PathBuf> {
    let dir = site.quarantine().join(row.endorser.as_str());
    ensure_real_dir(&dir)?;
    let stamp = jiff::Timestamp::now().as_second();
    let target = dir.join(format!("{}@{}.{stamp}", row.id, row.version));
    if file.exists() {
        std::fs::rename(file, &target).map_err(|e| Error::io("move into quarantine", file, e))?;
    }
    // One copy per image is evidence enough; an endless series of bad
    // downloads must not fill the disk.
    for older in quarantined_copies(site, row)? {
        if older != target {
            remove_if_present(&older)?;
        }
    }
    let logged = format!("{reason} (bytes kept in {})", target.display());
    let tx = site.state.transaction()?;
    // A copy already in the store (old bytes of a rewritten version)
    // stays until good new bytes replace it.
    tx.set_state(
        row,
        ImageState::Quarantined,
        reason,
        Decider::Verification,
        row.store_path.as_deref(),
    )?;
    tx.audit(
        "quarantined",
        Some(row.endorser.as_str()),
        Some(&row.label()),
        &logged,
    )?;
    tx.enqueue_hook(
        HookEvent::Quarantine,
        &hook_env(HookEvent::Quarantine, row, Some(&target), reason),
    )?;
    tx.commit()?;
    Ok(target)
}

/// The quarantined copies of `row`: `quarantine/ENDORSER/ID@VERSION.SECONDS`.
fn quarantined_copies(site: &Site, row: &ImageRow) -> Result<Vec<PathBuf>> {
    let dir = site.quarantine().join(row.endorser.as_str());
    let prefix = format!("{}@{}.", row.id, row.version);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let mut copies = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let name = entry.file_name();
        let is_copy = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()));
        if is_copy {
            copies.push(entry.path());
        }
    }
    Ok(copies)
}

/// Put a verified file into the store and record the import.
pub fn import(site: &mut Site, row: &ImageRow, verified: &Path) -> Result<PathBuf> {
    let rel = store_rel(row);
    let dest = site.store().join(&rel);
    ensure_real_dir(dest.parent().unwrap_or(&site.store()))?;
    // Over the old copy of a rewritten version, if it has the same name:
    // the rename replaces it atomically, with no gap.
    std::fs::rename(verified, &dest).map_err(|e| Error::io("move into the store", &dest, e))?;
    crate::fsutil::sync_dir(dest.parent().unwrap_or(&site.store()))?;
    adopt(site, row, &rel)?;
    if let Some(old) = row.store_path.as_ref().filter(|old| **old != rel) {
        remove_if_present(&site.store().join(old))?;
    }
    Ok(dest)
}

/// Record that the verified file at `store/rel` is `row`, imported.
pub fn adopt(site: &mut Site, row: &ImageRow, rel: &str) -> Result<()> {
    // The image is good now: the evidence of earlier bad downloads goes.
    for copy in quarantined_copies(site, row)? {
        remove_if_present(&copy)?;
    }
    let dest = site.store().join(rel);
    let tx = site.state.transaction()?;
    tx.set_state(
        row,
        ImageState::Imported,
        "verified and imported",
        row.decided_by,
        Some(rel),
    )?;
    tx.audit(
        "imported",
        Some(row.endorser.as_str()),
        Some(&row.label()),
        &format!("{} bytes, sha256 {}", row.size, row.sha256),
    )?;
    tx.enqueue_hook(
        HookEvent::Import,
        &hook_env(HookEvent::Import, row, Some(&dest), ""),
    )?;
    tx.commit()
}

/// A directory we may write into: create it, and refuse a planted symlink.
pub fn ensure_real_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::verification(format!(
            "{} is a symbolic link; refusing to write through it",
            dir.display()
        ))),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::input(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e)),
    }
}

pub use crate::fsutil::remove_if_present;

/// Restore the store invariant after a crash: delete files no imported image
/// owns (including anything planted), drop partial downloads nobody waits
/// for, and forget store paths whose file vanished (the image goes back to
/// `approved` and is fetched again).
pub fn reconcile(site: &mut Site) -> Result<Vec<String>> {
    let rows = site.state.images()?;
    // Imported images own their file; so does a rewritten version's old
    // copy, kept until its new bytes arrive or the operator decides.
    let owned: BTreeSet<String> = rows.iter().filter_map(|r| r.store_path.clone()).collect();
    let mut notes = remove_unowned(&site.store(), &owned, |rel| {
        format!("removed {rel} from the store: no image owns it")
    })?;
    // Partial downloads are kept only for images still waiting to be fetched.
    let wanted: BTreeSet<String> = rows
        .iter()
        .filter(|r| matches!(r.state, ImageState::Approved | ImageState::Quarantined))
        .map(|r| format!("{}/{}", r.endorser, part_name(r)))
        .collect();
    notes.extend(remove_unowned(&site.tmp(), &wanted, |rel| {
        format!("removed stale partial download tmp/{rel}")
    })?);
    notes.extend(forget_missing(site, &rows)?);
    Ok(notes)
}

/// Delete every file under `root` whose relative path is not in `keep`,
/// without following links; one note per file, made by `note`.
fn remove_unowned(
    root: &Path,
    keep: &BTreeSet<String>,
    note: impl Fn(&str) -> String,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry =
            entry.map_err(|e| Error::io_failure(format!("cannot walk {}: {e}", root.display())))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        if !keep.contains(&rel) {
            remove_if_present(entry.path())?;
            notes.push(note(&rel));
        }
    }
    Ok(notes)
}

/// Imported images whose store file vanished go back to `approved`, to be
/// fetched again.
fn forget_missing(site: &mut Site, rows: &[ImageRow]) -> Result<Vec<String>> {
    let store = site.store();
    let mut notes = Vec::new();
    for row in rows.iter().filter(|r| r.state == ImageState::Imported) {
        let present = row.store_path.as_ref().is_some_and(|p| {
            std::fs::symlink_metadata(store.join(p)).is_ok_and(|m| m.file_type().is_file())
        });
        if present {
            continue;
        }
        let tx = site.state.transaction()?;
        tx.set_state(
            row,
            ImageState::Approved,
            "store file missing; will be fetched again",
            row.decided_by,
            None,
        )?;
        tx.audit(
            "store-missing",
            Some(row.endorser.as_str()),
            Some(&row.label()),
            "imported file was missing from the store",
        )?;
        tx.commit()?;
        notes.push(format!(
            "{} was missing from the store; it will be fetched again",
            row.label()
        ));
    }
    Ok(notes)
}

/// Replacement without re-download (VMIC use cases 1.3, 3.8): when the
/// site already holds bytes identical to `image` (same signed SHA-256 and
/// size) under another name, hard-link them (one copy on disk, one name
/// per endorser) and check every chunk against `image`'s own signed
/// digests before anything is imported. `None` when there is no such copy,
/// it cannot be linked, or it fails the check (the caller downloads).
pub fn reuse_identical(
    site: &mut Site,
    row: &ImageRow,
    image: &Image,
    expected: &vmic_format::chunks::ChunkDigests,
    engine: &crate::hashing::Engine,
) -> Result<Option<(PathBuf, String)>> {
    let store = site.store();
    // One query for the rows holding these bytes, not a scan of every
    // image at every download.
    let holders = site.state.imported_with(&image.sha256, image.size())?;
    let same_bytes = holders.into_iter().find(|other| {
        (other.endorser != row.endorser || other.id != row.id || other.version != row.version)
            && other.store_path.is_some()
    });
    let Some(other) = same_bytes else {
        return Ok(None);
    };
    let source = store.join(other.store_path.as_deref().unwrap_or_default());
    let tmp_dir = site.tmp().join(row.endorser.as_str());
    ensure_real_dir(&tmp_dir)?;
    let link = tmp_dir.join(format!("{}.reuse", part_name(row)));
    remove_if_present(&link)?;
    if std::fs::hard_link(&source, &link).is_err() {
        return Ok(None);
    }
    let item = crate::hashing::CheckItem {
        name: row.label(),
        path: link.clone(),
        expected: expected.clone(),
    };
    let (outcomes, _) = engine.check_files(&[item], &crate::hashing::NoProgress);
    if outcomes.iter().any(|o| !o.problems.is_empty()) {
        remove_if_present(&link)?;
        return Ok(None);
    }
    Ok(Some((
        link,
        format!("{}/{}", other.endorser, other.label()),
    )))
}

/// Where the site keeps the catalog it accepted last from `endorser`:
/// `catalogs/<endorser>/<sha256>.json`.
fn catalog_cache_dir(site: &Site, endorser: &str) -> PathBuf {
    site.root.join("catalogs").join(endorser)
}

/// The copy of the catalog with hash `sha256` accepted from `endorser`, if
/// the site kept it and it is still those bytes, with the signature it
/// came with and the server's validators for that signature.
pub fn cached_catalog(
    site: &Site,
    endorser: &str,
    sha256: &vmic_format::digest::Sha256Digest,
    max: u64,
) -> Option<vmic_engine::publication::CachedCatalog> {
    let dir = catalog_cache_dir(site, endorser);
    let path = dir.join(format!("{sha256}.json"));
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    if vmic_format::digest::Sha256Digest::of(&bytes) != *sha256 {
        return None;
    }
    let signature = std::fs::read_to_string(dir.join(format!("{sha256}.json.minisig"))).ok();
    let validators = std::fs::read(dir.join(VALIDATORS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Some(vmic_engine::publication::CachedCatalog {
        sha256: *sha256,
        bytes,
        signature: signature.zip(validators),
    })
}

/// What the server said identified the kept signature.
const VALIDATORS_FILE: &str = "validators.json";

/// Drop the kept catalog of an endorser no longer trusted.
pub fn forget_catalog(site: &Site, endorser: &str) -> Result<()> {
    for dir in [
        catalog_cache_dir(site, endorser),
        rotations_dir(site, endorser),
    ] {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &dir, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where the rotation statements an endorser's publication held are kept.
pub fn rotations_dir(site: &Site, endorser: &str) -> PathBuf {
    site.root.join("rotations").join(endorser)
}

/// Keep the rotation statements (and their signatures) followed for
/// `endorser`; `files` are named as in the publication (`keys/…`).
pub fn keep_rotations(site: &Site, endorser: &str, files: &[(String, Vec<u8>)]) -> Result<()> {
    let dir = rotations_dir(site, endorser);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    for (name, bytes) in files {
        let base = name.rsplit('/').next().unwrap_or(name);
        crate::fsutil::atomic_write(&dir.join(base), bytes)?;
    }
    Ok(())
}

/// Keep the catalog just accepted from `endorser` (and only that one), so
/// the next sync of an unchanged endorser fetches its signature alone.
pub fn keep_catalog(
    site: &Site,
    endorser: &str,
    sha256: &vmic_format::digest::Sha256Digest,
    (bytes, signature, validators): (&[u8], String, vmic_engine::fetch::Validators),
) -> Result<()> {
    let dir = catalog_cache_dir(site, endorser);
    let name = format!("{sha256}.json");
    let signature_name = format!("{name}.minisig");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    // The signature too: `vmic bundle` hands both on, exactly as signed,
    // and the next sync asks for the signature conditionally.
    let validators = serde_json::to_vec(&validators)
        .map_err(|e| Error::io_failure(format!("cannot serialise validators: {e}")))?;
    for (file, content) in [
        (signature_name.as_str(), signature.as_bytes()),
        (VALIDATORS_FILE, validators.as_slice()),
    ] {
        // An unchanged endorser costs no write either.
        if std::fs::read(dir.join(file)).ok().as_deref() != Some(content) {
            crate::fsutil::atomic_write(&dir.join(file), content)?;
        }
    }
    if !dir.join(&name).is_file() {
        crate::fsutil::atomic_write(&dir.join(&name), bytes)?;
    }
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| Error::io("list", &dir, e))?
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file != name && file != signature_name && file != VALIDATORS_FILE {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

/// The kept catalog with hash `sha256` of `endorser` and its signature.
pub fn kept_catalog_files(
    site: &Site,
    endorser: &str,
    sha256: &vmic_format::digest::Sha256Digest,
) -> Option<(PathBuf, PathBuf)> {
    let dir = catalog_cache_dir(site, endorser);
    let catalog = dir.join(format!("{sha256}.json"));
    let signature = dir.join(format!("{sha256}.json.minisig"));
    (catalog.is_file() && signature.is_file()).then_some((catalog, signature))
}

/// Where the site keeps the VO list it accepted last from `vo`.
pub fn vo_list_dir(site: &Site, vo: &str) -> PathBuf {
    site.root.join("vos").join(vo)
}

/// Keep the VO list just accepted, with its signature files, exactly as
/// served (for `vmic bundle`); the files of earlier lists go.
pub fn keep_vo_list(site: &Site, vo: &str, files: &vmic_engine::vo_source::VoFiles) -> Result<()> {
    let dir = vo_list_dir(site, vo);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let mut names = vec![vmic_format::vo::VO_FILE.to_string()];
    for (name, text) in &files.signatures {
        crate::fsutil::atomic_write(&dir.join(name), text.as_bytes())?;
        names.push(name.clone());
    }
    crate::fsutil::atomic_write(&dir.join(vmic_format::vo::VO_FILE), &files.bytes)?;
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| Error::io("list", &dir, e))?
        .flatten()
    {
        if !names.contains(&entry.file_name().to_string_lossy().into_owned()) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{catalog, row};

    fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::init(&dir.path().join("site")).unwrap();
        (dir, site)
    }

    fn put(site: &mut Site, rows: &[&ImageRow]) {
        let tx = site.state.transaction().unwrap();
        for r in rows {
            tx.put_image(r).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn import_then_withdraw_moves_the_file_and_queues_both_events() {
        let (dir, mut site) = site();
        let c = catalog(&[("a", "1", b"one")], &[]);
        let approved = row(&c, "a", "1", ImageState::Approved, Decider::Policy);
        put(&mut site, &[&approved]);
        let verified = dir.path().join("verified");
        std::fs::write(&verified, b"one").unwrap();
        let dest = import(&mut site, &approved, &verified).unwrap();
        assert_eq!(dest, site.store().join("lab/a@1.raw"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        let imported = site.state.images().unwrap().remove(0);
        assert_eq!(imported.state, ImageState::Imported);
        assert_eq!(imported.store_path.as_deref(), Some("lab/a@1.raw"));
        withdraw(
            &mut site,
            &imported,
            ImageState::Revoked,
            "gone",
            HookEvent::Revoke,
            Decider::Sync,
        )
        .unwrap();
        assert!(!dest.exists());
        let events: Vec<String> = site
            .state
            .outbox()
            .unwrap()
            .into_iter()
            .map(|o| o.event)
            .collect();
        assert_eq!(events, ["import", "revoke"]);
    }

    #[test]
    fn reconcile_restores_store_equals_imported_rows() {
        let (_dir, mut site) = site();
        let c = catalog(&[("a", "1", b"1"), ("b", "1", b"2"), ("c", "1", b"3")], &[]);
        let mut kept = row(&c, "a", "1", ImageState::Imported, Decider::Policy);
        kept.store_path = Some(store_rel(&kept));
        let mut vanished = row(&c, "b", "1", ImageState::Imported, Decider::Policy);
        vanished.store_path = Some(store_rel(&vanished));
        let waiting = row(&c, "c", "1", ImageState::Approved, Decider::Policy);
        put(&mut site, &[&kept, &vanished, &waiting]);
        ensure_real_dir(&site.store().join("lab")).unwrap();
        ensure_real_dir(&site.tmp().join("lab")).unwrap();
        std::fs::write(site.store().join("lab/a@1.raw"), b"1").unwrap();
        std::fs::write(site.store().join("lab/planted.raw"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", site.store().join("lab/link.raw")).unwrap();
        std::fs::write(site.tmp().join("lab").join(part_name(&waiting)), b"3").unwrap();
        std::fs::write(site.tmp().join("lab/old@9.part"), b"x").unwrap();
        let notes = reconcile(&mut site).unwrap();
        assert_eq!(notes.len(), 4, "{notes:?}");
        let mut store: Vec<_> = std::fs::read_dir(site.store().join("lab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        store.sort();
        assert_eq!(store, ["a@1.raw"]);
        assert!(site.tmp().join("lab/c@1.part").exists());
        assert!(!site.tmp().join("lab/old@9.part").exists());
        let b = site
            .state
            .images()
            .unwrap()
            .into_iter()
            .find(|r| r.id == *"b")
            .unwrap();
        assert_eq!((b.state, b.store_path), (ImageState::Approved, None));
        assert!(
            std::path::Path::new("/etc/passwd").exists(),
            "the link was removed, not its target"
        );
    }

    #[test]
    fn store_names_cannot_collide_between_versions_and_formats() {
        use vmic_format::image_format::FormatName;
        let c = catalog(&[("a", "1.x", b"1"), ("a", "1", b"2")], &[]);
        let mut qcow2 = row(&c, "a", "1.x", ImageState::Approved, Decider::Policy);
        qcow2.format = FormatName::parse("qcow2").unwrap();
        let mut odd = row(&c, "a", "1", ImageState::Approved, Decider::Policy);
        odd.format = FormatName::parse("x.qcow2").unwrap();
        assert_eq!(store_rel(&qcow2), "lab/a@1.x.qcow2");
        assert_eq!(store_rel(&odd), "lab/a@1.img");
        odd.format = FormatName::parse("unknown").unwrap();
        assert_eq!(store_rel(&odd), "lab/a@1.img");
    }

    #[test]
    fn one_quarantined_copy_per_image_and_none_once_it_imports() {
        let (dir, mut site) = site();
        let c = catalog(&[("a", "1", b"one"), ("a", "1.2", b"two")], &[]);
        let approved = row(&c, "a", "1", ImageState::Approved, Decider::Policy);
        let other = row(&c, "a", "1.2", ImageState::Approved, Decider::Policy);
        put(&mut site, &[&approved, &other]);
        ensure_real_dir(&site.quarantine().join("lab")).unwrap();
        // Older evidence of a@1, and a copy of a@1.2 that must stay.
        std::fs::write(site.quarantine().join("lab/a@1.100"), b"x").unwrap();
        std::fs::write(site.quarantine().join("lab/a@1.2.100"), b"y").unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"bad").unwrap();
        let kept = quarantine(&mut site, &approved, &bad, "chunk 0 differs").unwrap();
        let mut names: Vec<_> = std::fs::read_dir(site.quarantine().join("lab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"a@1.2.100".to_string()));
        assert!(kept.exists());
        let log = site.state.audit().unwrap();
        assert!(
            log.last()
                .unwrap()
                .detail
                .contains(&kept.display().to_string())
        );
        let good = dir.path().join("good");
        std::fs::write(&good, b"one").unwrap();
        import(&mut site, &approved, &good).unwrap();
        assert!(!kept.exists());
        assert!(site.quarantine().join("lab/a@1.2.100").exists());
    }

    #[test]
    fn a_planted_symlink_directory_is_refused() {
        let (dir, site) = site();
        std::os::unix::fs::symlink(dir.path(), site.quarantine().join("lab")).unwrap();
        let err = ensure_real_dir(&site.quarantine().join("lab")).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Verification, "{err}");
    }
}
