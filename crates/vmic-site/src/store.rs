//! Moving images into, out of and around the site store, each move recorded
//! (state, audit, hook event) in one database transaction.
//!
//! Crash safety rests on one invariant that [`reconcile`] restores: the store
//! holds exactly the files of images in state `imported`. Files reach the
//! store by rename only after verification; the database is updated after
//! the rename (a crash in between leaves a verified file that the next run
//! re-checks and adopts); files leave the store after the database says so
//! (a crash in between leaves an orphan that the next run deletes).

use std::path::{Path, PathBuf};

use crate::catalog::Image;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::state::{ImageRow, image_state};

/// `ENDORSER/ID@VERSION.FORMAT`, relative to the store. All parts are
/// validated tokens, so this cannot escape the store.
pub fn store_rel(row: &ImageRow) -> String {
    let ext = if row.format == "unknown" {
        "img"
    } else {
        row.format.as_str()
    };
    format!("{}/{}@{}.{ext}", row.endorser, row.id, row.version)
}

/// The environment a hook gets for an event about `row`.
pub fn hook_env(
    event: &str,
    row: &ImageRow,
    store_path: Option<&Path>,
    reason: &str,
) -> Vec<(String, String)> {
    let image: Option<Image> = serde_json::from_str(&row.entry).ok();
    let field = |f: fn(&Image) -> Option<String>| image.as_ref().and_then(f).unwrap_or_default();
    vec![
        ("VMIC_EVENT".into(), event.into()),
        ("VMIC_ENDORSER".into(), row.endorser.clone()),
        ("VMIC_IMAGE_ID".into(), row.id.clone()),
        ("VMIC_IMAGE_VERSION".into(), row.version.clone()),
        (
            "VMIC_IMAGE_PATH".into(),
            store_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("VMIC_IMAGE_SHA256".into(), row.sha256.clone()),
        ("VMIC_IMAGE_SIZE".into(), row.size.to_string()),
        ("VMIC_IMAGE_FORMAT".into(), row.format.clone()),
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
    state: &str,
    reason: &str,
    event: &str,
    decided_by: &str,
) -> Result<()> {
    let was_imported = row.state == image_state::IMPORTED;
    let path = row.store_path.as_ref().map(|p| site.store().join(p));
    let tx = site.state.transaction()?;
    tx.set_state(row, state, reason, decided_by, None)?;
    tx.audit(event, Some(&row.endorser), Some(&row.label()), reason)?;
    if was_imported {
        tx.enqueue_hook(event, &hook_env(event, row, path.as_deref(), reason))?;
    }
    tx.commit()?;
    if let Some(path) = path {
        remove_if_present(&path)?;
    }
    Ok(())
}

/// Move bytes that failed verification aside, record why, fire the hook.
pub fn quarantine(site: &mut Site, row: &ImageRow, file: &Path, reason: &str) -> Result<PathBuf> {
    let dir = site.quarantine().join(&row.endorser);
    ensure_real_dir(&dir)?;
    let stamp = jiff::Timestamp::now().as_second();
    let target = dir.join(format!("{}@{}.{stamp}", row.id, row.version));
    if file.exists() {
        std::fs::rename(file, &target).map_err(|e| Error::io("move into quarantine", file, e))?;
    }
    let tx = site.state.transaction()?;
    tx.set_state(row, image_state::QUARANTINED, reason, "verification", None)?;
    tx.audit(
        "quarantined",
        Some(&row.endorser),
        Some(&row.label()),
        reason,
    )?;
    tx.enqueue_hook(
        "quarantine",
        &hook_env("quarantine", row, Some(&target), reason),
    )?;
    tx.commit()?;
    Ok(target)
}

/// Put a verified file into the store and record the import.
pub fn import(site: &mut Site, row: &ImageRow, verified: &Path) -> Result<PathBuf> {
    let rel = store_rel(row);
    let dest = site.store().join(&rel);
    ensure_real_dir(dest.parent().unwrap_or(&site.store()))?;
    std::fs::rename(verified, &dest).map_err(|e| Error::io("move into the store", &dest, e))?;
    crate::fsutil::sync_dir(dest.parent().unwrap_or(&site.store()))?;
    adopt(site, row, &rel)?;
    Ok(dest)
}

/// Record that the verified file at `store/rel` is `row`, imported.
pub fn adopt(site: &mut Site, row: &ImageRow, rel: &str) -> Result<()> {
    let dest = site.store().join(rel);
    let tx = site.state.transaction()?;
    tx.set_state(
        row,
        image_state::IMPORTED,
        "verified and imported",
        &row.decided_by,
        Some(rel),
    )?;
    tx.audit(
        "imported",
        Some(&row.endorser),
        Some(&row.label()),
        &format!("{} bytes, sha256 {}", row.size, row.sha256),
    )?;
    tx.enqueue_hook("import", &hook_env("import", row, Some(&dest), ""))?;
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

pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Restore the store invariant after a crash: delete files no imported image
/// owns (including anything planted), drop partial downloads nobody waits
/// for, and forget store paths whose file vanished (the image goes back to
/// `approved` and is fetched again).
pub fn reconcile(site: &mut Site) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let rows = site.state.images()?;
    let owned: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.state == image_state::IMPORTED)
        .filter_map(|r| r.store_path.clone())
        .collect();
    let store = site.store();
    for entry in walkdir::WalkDir::new(&store)
        .min_depth(1)
        .follow_links(false)
    {
        let entry = entry
            .map_err(|e| Error::io_failure(format!("cannot walk {}: {e}", store.display())))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&store)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        if !owned.contains(&rel) {
            remove_if_present(entry.path())?;
            notes.push(format!(
                "removed {rel} from the store: no imported image owns it"
            ));
        }
    }
    // Partial downloads are kept only for images still waiting to be fetched.
    let wanted: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r.state == image_state::APPROVED || r.state == image_state::QUARANTINED)
        .map(|r| format!("{}/{}@{}.part", r.endorser, r.id, r.version))
        .collect();
    let tmp = site.tmp();
    for entry in walkdir::WalkDir::new(&tmp).min_depth(1).follow_links(false) {
        let entry =
            entry.map_err(|e| Error::io_failure(format!("cannot walk {}: {e}", tmp.display())))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&tmp)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        if !wanted.contains(&rel) {
            remove_if_present(entry.path())?;
            notes.push(format!("removed stale partial download tmp/{rel}"));
        }
    }
    for row in rows.iter().filter(|r| r.state == image_state::IMPORTED) {
        let present = row.store_path.as_ref().is_some_and(|p| {
            std::fs::symlink_metadata(store.join(p)).is_ok_and(|m| m.file_type().is_file())
        });
        if !present {
            let tx = site.state.transaction()?;
            tx.set_state(
                row,
                image_state::APPROVED,
                "store file missing; will be fetched again",
                &row.decided_by,
                None,
            )?;
            tx.audit(
                "store-missing",
                Some(&row.endorser),
                Some(&row.label()),
                "imported file was missing from the store",
            )?;
            tx.commit()?;
            notes.push(format!(
                "{} was missing from the store; it will be fetched again",
                row.label()
            ));
        }
    }
    Ok(notes)
}
