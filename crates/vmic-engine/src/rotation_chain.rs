//! Following key rotation statements (an endorser's, or a VO manager's):
//! when a document is signed by another key than the pinned one, the
//! publication may say, under signatures of both keys, that the pinned key
//! was replaced — and the new one perhaps again, up to
//! [`MAX_ROTATION_CHAIN`] steps.

use crate::publication::Publication;
use crate::transport::Transport;
use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::{KeyId, PublicKey};
use vmic_format::relpath::SafeRelPath;
use vmic_format::rotation::{
    MAX_ROTATION_BYTES, MAX_ROTATION_CHAIN, authenticate_rotation, new_key_signature_name,
    rotation_name,
};

use crate::error::{Error, ErrorKind, Result};

/// Where rotation statements are read from.
pub trait Files {
    /// The bytes of `name` (relative to the publication), at most `max`.
    fn read(&self, name: &str, max: u64) -> Result<Vec<u8>>;
    /// Where `name` is, for messages.
    fn locate(&self, name: &str) -> String;
}

impl Files for Publication {
    fn read(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        self.read_file(name, max)
    }
    fn locate(&self, name: &str) -> String {
        self.locate_file(name)
    }
}

/// The files of a transport's root (a VO list's directory).
pub struct TransportFiles<'a>(pub &'a dyn Transport);

impl Files for TransportFiles<'_> {
    fn read(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let rel = SafeRelPath::parse(name).map_err(|e| Error::input(e.message()))?;
        self.0.read(&rel, max)
    }
    fn locate(&self, name: &str) -> String {
        match SafeRelPath::parse(name) {
            Ok(rel) => self.0.locate(&rel),
            Err(_) => name.to_string(),
        }
    }
}

/// The keys from `pinned` to the one whose id is `target`, each step
/// authenticated by both keys; never empty.
pub fn follow(files: &dyn Files, pinned: &PublicKey, target: KeyId) -> Result<Vec<PublicKey>> {
    let mut chain: Vec<PublicKey> = Vec::new();
    let mut key = pinned.clone();
    for _ in 0..MAX_ROTATION_CHAIN {
        let next = step(files, &key).map_err(|e| {
            // No statement at all: the document is simply not authenticated.
            let kind = match e.is_absent() {
                true => ErrorKind::Verification,
                false => e.kind(),
            };
            Error::new(
                kind,
                format!(
                    "signed by key {target}, not by the pinned key {}, and no valid rotation leads there from key {}: {}",
                    pinned.key_id,
                    key.key_id,
                    e.message()
                ),
            )
        })?;
        push_new(&mut chain, pinned, next.clone())?;
        if next.key_id == target {
            return Ok(chain);
        }
        key = next;
    }
    Err(too_long(pinned))
}

/// The keys `pinned` was rotated to, as far as statements go (empty: not
/// rotated).
pub fn follow_to_end(files: &dyn Files, pinned: &PublicKey) -> Result<Vec<PublicKey>> {
    let mut chain: Vec<PublicKey> = Vec::new();
    let mut key = pinned.clone();
    for _ in 0..MAX_ROTATION_CHAIN {
        match step(files, &key) {
            Ok(next) => {
                push_new(&mut chain, pinned, next.clone())?;
                key = next;
            }
            Err(e) if e.is_absent() => return Ok(chain),
            Err(e) => return Err(e),
        }
    }
    Err(too_long(pinned))
}

fn push_new(chain: &mut Vec<PublicKey>, pinned: &PublicKey, next: PublicKey) -> Result<()> {
    if next == *pinned || chain.contains(&next) {
        return Err(Error::verification(format!(
            "the rotation statements go round in a circle at key {}",
            next.key_id
        )));
    }
    chain.push(next);
    Ok(())
}

fn too_long(pinned: &PublicKey) -> Error {
    Error::verification(format!(
        "more than {MAX_ROTATION_CHAIN} key rotations from the pinned key {}",
        pinned.key_id
    ))
}

/// The key the statement leaving `key` names, authenticated.
fn step(files: &dyn Files, key: &PublicKey) -> Result<PublicKey> {
    let name = rotation_name(&key.key_id);
    let bytes = files.read(&name, MAX_ROTATION_BYTES)?;
    let text = |file: &str| -> Result<String> {
        let bytes = files.read(file, MAX_SIGNATURE_BYTES)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let by_old = text(&format!("{name}.minisig"))?;
    let by_new = text(&new_key_signature_name(&key.key_id))?;
    authenticate_rotation(&bytes, &by_old, &by_new, key, &files.locate(&name))
}

/// A catalog authenticated under the pinned key or, when it is signed by
/// another key, at the end of a chain of rotation statements from it.
pub struct Followed {
    /// The catalog.
    pub authenticated: vmic_format::authenticate::Authenticated,
    /// What the server said identifies the signature (conditional polling).
    pub validators: crate::fetch::Validators,
    /// The keys rotated to since the pinned one (empty: none).
    pub rotated: Vec<PublicKey>,
}

/// Authenticate `publication`'s catalog under `pinned`, following rotation
/// statements to the key that signs it now if need be.
pub fn authenticate_following(
    publication: &Publication,
    pinned: &PublicKey,
    (max_catalog, cached): (u64, Option<&crate::publication::CachedCatalog>),
) -> Result<Followed> {
    let refused = match publication.authenticate_cached(pinned, max_catalog, cached) {
        Ok((authenticated, validators)) => {
            return Ok(Followed {
                authenticated,
                validators,
                rotated: Vec::new(),
            });
        }
        Err(e) => e,
    };
    let signer = publication
        .read_signature()
        .ok()
        .and_then(|text| vmic_format::minisign::Signature::parse(&text).ok())
        .map(|s| s.key_id)
        .filter(|id| *id != pinned.key_id);
    let Some(signer) = signer else {
        return Err(refused);
    };
    let rotated = follow(publication, pinned, signer)?;
    let newest = rotated.last().unwrap_or(pinned);
    Ok(Followed {
        authenticated: publication.authenticate(newest, max_catalog)?,
        validators: crate::fetch::Validators::default(),
        rotated,
    })
}

/// The statement files (statement, old-key and new-key signatures) that
/// lead from `pinned` along `chain`, named as in the publication.
pub fn statement_files(
    publication: &Publication,
    pinned: &PublicKey,
    chain: &[PublicKey],
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for key in std::iter::once(pinned)
        .chain(chain.iter())
        .take(chain.len())
    {
        let statement = rotation_name(&key.key_id);
        for name in [
            statement.clone(),
            format!("{statement}.minisig"),
            new_key_signature_name(&key.key_id),
        ] {
            let bytes = publication.read_file(&name, MAX_ROTATION_BYTES)?;
            files.push((name, bytes));
        }
    }
    Ok(files)
}
