//! `vmic key rotate`: an endorser moves its publication to a new signing
//! key. The rotation statement (see [`vmic_format::rotation`]) goes into
//! `OUT_DIR/keys/`, signed by the old key and by the new one; the next
//! `build` signs with the new key, and `build` refuses the old one from
//! then on, so a forgotten `--key` cannot undo the rotation.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::build::{LOCK_FILE, state_dir};
use crate::error::{Error, Result};
use crate::fsutil::{DirLock, atomic_write};
use crate::minisign::{PublicKey, SecretKey};
use vmic_format::rotation::{MAX_ROTATION_BYTES, Rotation, new_key_signature_name, rotation_name};

/// What `vmic key rotate` needs.
pub struct RotateOptions<'a> {
    /// The publication.
    pub out_dir: PathBuf,
    /// The key that signs it now.
    pub old: &'a SecretKey,
    /// The key that signs it from now on.
    pub new: &'a SecretKey,
    /// Where builds keep their state (the lock shared with `build`).
    pub state_root: PathBuf,
}

/// What a rotation did.
#[derive(Debug, serde::Serialize)]
pub struct RotateReport {
    /// The statement written, relative to OUT_DIR.
    pub statement: String,
    /// The key given up.
    pub from: String,
    /// The key that signs from now on.
    pub to: String,
}

/// Write the rotation statement into the publication.
pub fn rotate(opts: &RotateOptions) -> Result<RotateReport> {
    let out_dir = opts
        .out_dir
        .canonicalize()
        .map_err(|e| Error::io("open publication", &opts.out_dir, e))?;
    // Only the key that signs this publication (or co-signs this VO list)
    // can rotate it.
    let _lock = if is_vo_publication(&out_dir) {
        let lock = DirLock::acquire(&out_dir, crate::vo::LOCK_FILE, "vo build")?;
        crate::vo::check_own_signature(&out_dir, opts.old)?;
        lock
    } else {
        let lock = DirLock::acquire(&state_dir(&opts.state_root, &out_dir)?, LOCK_FILE, "build")?;
        crate::resign::authenticate_current(&out_dir, opts.old)?;
        lock
    };
    let (old, new) = (opts.old.public_key(), opts.new.public_key());
    let name = rotation_name(&old.key_id);
    if let Some(existing) = rotated_to(&out_dir, &old)? {
        return Err(Error::input(format!(
            "key {} was already rotated to {} in {} ({name})",
            old.key_id,
            existing.key_id,
            out_dir.display()
        )));
    }
    let rotation = Rotation::new(old.clone(), new.clone(), Timestamp::now())?;
    let bytes = rotation.to_bytes()?;
    let by_old = opts.old.sign(
        &bytes,
        &rotation.comment(&old.key_id),
        "rotation signed by the old key",
    );
    let by_new = opts.new.sign(
        &bytes,
        &rotation.comment(&new.key_id),
        "rotation signed by the new key",
    );
    std::fs::create_dir_all(out_dir.join("keys"))
        .map_err(|e| Error::io("create", &out_dir.join("keys"), e))?;
    // Signatures first: a reader that finds the statement finds them too.
    atomic_write(
        &out_dir.join(format!("{name}.minisig")),
        by_old.to_file_string().as_bytes(),
    )?;
    atomic_write(
        &out_dir.join(new_key_signature_name(&old.key_id)),
        by_new.to_file_string().as_bytes(),
    )?;
    atomic_write(&out_dir.join(&name), &bytes)?;
    Ok(RotateReport {
        statement: name,
        from: old.key_id.to_string(),
        to: new.key_id.to_string(),
    })
}

/// A VO's list directory rather than an endorser's publication.
fn is_vo_publication(out_dir: &Path) -> bool {
    out_dir.join(vmic_format::vo::VO_FILE).exists()
        && !out_dir
            .join(vmic_format::publication::CATALOG_FILE)
            .exists()
}

/// After `vmic key rotate`, the old key no longer signs this publication
/// (or VO list): sites have moved on and would refuse what it signs.
/// `role` names the key in the message ("key", "VO manager key").
pub(crate) fn refuse_rotated_key(out_dir: &Path, key: &SecretKey, role: &str) -> Result<()> {
    match rotated_to(out_dir, &key.public_key())? {
        Some(new) => Err(Error::input(format!(
            "{role} {} was rotated to {} in {}; sign with the new key",
            key.key_id,
            new.key_id,
            out_dir.display()
        ))),
        None => Ok(()),
    }
}

/// The key `key` was rotated to in this publication, if it was.
pub fn rotated_to(out_dir: &Path, key: &PublicKey) -> Result<Option<PublicKey>> {
    let path = out_dir.join(rotation_name(&key.key_id));
    // OUT_DIR is a web root others may write: a planted link is refused,
    // not followed.
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = crate::resign::read_regular(&path, MAX_ROTATION_BYTES + 1)?;
    if bytes.len() as u64 > MAX_ROTATION_BYTES {
        return Err(Error::input(format!("{} is too large", path.display())));
    }
    let rotation: Rotation = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(format!("{} is invalid: {e}", path.display())))?;
    Ok((rotation.from == *key).then_some(rotation.to))
}
