//! Following an endorser's key rotation statements: when the catalog is
//! signed by another key than the pinned one, the publication may say,
//! under signatures of both keys, that the pinned key was replaced — and
//! the new one perhaps again, up to [`MAX_ROTATION_CHAIN`] steps.

use vmic_engine::publication::Publication;
use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::{KeyId, PublicKey};
use vmic_format::rotation::{
    MAX_ROTATION_BYTES, MAX_ROTATION_CHAIN, authenticate_rotation, new_key_signature_name,
    rotation_name,
};

use crate::error::{Error, Result};

/// The keys from `pinned` to the one whose id is `target`, each step
/// authenticated by both keys; empty is never returned.
pub(crate) fn follow(
    publication: &Publication,
    pinned: &PublicKey,
    target: KeyId,
) -> Result<Vec<PublicKey>> {
    let mut chain: Vec<PublicKey> = Vec::new();
    let mut key = pinned.clone();
    for _ in 0..MAX_ROTATION_CHAIN {
        let next = step(publication, &key).map_err(|e| {
            // No statement at all: the catalog is simply not authenticated.
            let kind = match e.is_absent() {
                true => crate::error::ErrorKind::Verification,
                false => e.kind(),
            };
            Error::new(
                kind,
                format!(
                    "the catalog is signed by key {target}, not by the pinned key {}, and no valid rotation leads there from key {}: {}",
                    pinned.key_id,
                    key.key_id,
                    e.message()
                ),
            )
        })?;
        if next == *pinned || chain.contains(&next) {
            return Err(Error::verification(format!(
                "the rotation statements of this publication go round in a circle at key {}",
                next.key_id
            )));
        }
        chain.push(next.clone());
        if next.key_id == target {
            return Ok(chain);
        }
        key = next;
    }
    Err(Error::verification(format!(
        "more than {MAX_ROTATION_CHAIN} key rotations from the pinned key {} without reaching key {target}",
        pinned.key_id
    )))
}

/// The key the statement leaving `key` names, authenticated.
fn step(publication: &Publication, key: &PublicKey) -> Result<PublicKey> {
    let name = rotation_name(&key.key_id);
    let bytes = publication.read_file(&name, MAX_ROTATION_BYTES)?;
    let text = |file: &str| -> Result<String> {
        let bytes = publication.read_file(file, MAX_SIGNATURE_BYTES)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let by_old = text(&format!("{name}.minisig"))?;
    let by_new = text(&new_key_signature_name(&key.key_id))?;
    authenticate_rotation(
        &bytes,
        &by_old,
        &by_new,
        key,
        &publication.locate_file(&name),
    )
}
