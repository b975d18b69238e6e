//! Authenticate catalog bytes: the signature first, against the one key the
//! reader chose to trust; only then parse and validate; then check that the
//! signed trusted comment and the signed catalog tell the same story.
//!
//! Pure: the caller brings the bytes (from any transport) and the key.

use crate::catalog::Catalog;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::minisign::{self, PublicKey, Signature};
use crate::publication::signature_name;
use crate::trusted_comment;

/// A catalog whose signature, format and content checked out.
#[derive(Debug)]
pub struct Authenticated {
    /// The validated catalog.
    pub catalog: Catalog,
    /// Its signature (with the trusted comment).
    pub signature: Signature,
    /// SHA-256 of the exact catalog bytes (rollback memory, history chain).
    pub sha256: Sha256Digest,
    /// The exact bytes that were authenticated (a site keeps them, so an
    /// unchanged catalog is not downloaded again).
    pub bytes: Vec<u8>,
}

/// Authenticate `bytes` with the signature text `signature_text` under `key`.
/// `origin` names where the bytes came from in every error.
pub fn authenticate(
    bytes: &[u8],
    signature_text: &str,
    key: &PublicKey,
    origin: &str,
) -> Result<Authenticated> {
    let signature =
        Signature::parse(signature_text).map_err(|e| e.context(signature_name(origin)))?;
    minisign::verify(key, bytes, &signature).map_err(|e| e.context(origin))?;
    let catalog = Catalog::parse(bytes).map_err(|e| e.context(origin))?;
    cross_check(&catalog, &signature, key)?;
    Ok(Authenticated {
        catalog,
        signature,
        sha256: Sha256Digest::of(bytes),
        bytes: bytes.to_vec(),
    })
}

/// Comments from stock minisign carry no vmic fields and pass.
fn cross_check(catalog: &Catalog, signature: &Signature, key: &PublicKey) -> Result<()> {
    if catalog.endorser().key_id != key.key_id {
        return Err(Error::verification(format!(
            "catalog names key {} as its endorser key but is signed by {}",
            catalog.endorser().key_id,
            key.key_id
        )));
    }
    let fields = trusted_comment::parse(&signature.trusted_comment);
    let mismatch = |what: &str, value: &str, actual: String| {
        Error::verification(format!(
            "trusted comment says {what} {value} but catalog.json says {actual}"
        ))
    };
    let serial = catalog.serial().to_string();
    if let Some(v) = fields.serial.filter(|v| *v != serial) {
        return Err(mismatch("serial", v, serial));
    }
    let expires = catalog.expires().to_string();
    if let Some(v) = fields.expires.filter(|v| *v != expires) {
        return Err(mismatch("expires", v, expires));
    }
    Ok(())
}
