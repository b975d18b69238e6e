//! Key rotation statements (`vmic.rotation/1`): an endorser moving from one
//! signing key to the next says so in its publication, in a small JSON
//! document signed by the old key *and* by the new one
//! (`keys/rotate-<OLDKEYID>.json`, `.minisig` by the old key,
//! `.to.minisig` by the new). A site whose pinned key is the old one
//! follows the statement, and a chain of them (at most
//! [`MAX_ROTATION_CHAIN`]), to the key that signs the catalog now.
//!
//! A stolen key can sign a rotation too: statements are for routine
//! rotation. Recovery from compromise needs a higher authority (the VO's
//! list, or the site operator's `trust rekey`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::minisign::{self, KeyId, PublicKey, Signature};

/// The format string vmic writes.
pub const ROTATION_FORMAT: &str = "vmic.rotation/1";
/// Longest chain of rotations a reader follows in one go.
pub const MAX_ROTATION_CHAIN: usize = 8;
/// Largest statement accepted.
pub const MAX_ROTATION_BYTES: u64 = 16 << 10;

/// Where the statement leaving `from` lives in a publication.
pub fn rotation_name(from: &KeyId) -> String {
    format!("keys/rotate-{from}.json")
}

/// The new key's signature of the statement (the old key's is the usual
/// `.minisig`).
pub fn new_key_signature_name(from: &KeyId) -> String {
    format!("{}.to.minisig", rotation_name(from))
}

/// "The key `from` is replaced by `to`", as signed by both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Always [`ROTATION_FORMAT`] (checked when parsed).
    pub format: String,
    /// The key given up (minisign base64 line).
    #[serde(with = "wire_key")]
    pub from: PublicKey,
    /// The key that signs from now on.
    #[serde(with = "wire_key")]
    pub to: PublicKey,
    /// When the rotation was made.
    pub issued: Timestamp,
}

mod wire_key {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::minisign::PublicKey;

    pub fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_base64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        if text.contains('\n') {
            return Err(serde::de::Error::custom("a key must be one base64 line"));
        }
        PublicKey::parse(&text).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl Rotation {
    /// A statement moving from `from` to `to`.
    pub fn new(from: PublicKey, to: PublicKey, issued: Timestamp) -> Result<Rotation> {
        if from == to || from.key_id == to.key_id {
            return Err(Error::input(format!(
                "the new key {} must differ from the old key {} (and have another key id)",
                to.key_id, from.key_id
            )));
        }
        Ok(Rotation {
            format: ROTATION_FORMAT.to_string(),
            from,
            to,
            issued,
        })
    }

    /// Parse a statement's bytes (after its signatures checked).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Rotation> {
        let rotation: Rotation = serde_json::from_slice(bytes)
            .map_err(|e| Error::verification(format!("{origin} is invalid: {e}")))?;
        if rotation.format != ROTATION_FORMAT {
            return Err(Error::verification(format!(
                "{origin} has format {:?}, not {ROTATION_FORMAT}",
                rotation.format.chars().take(64).collect::<String>()
            )));
        }
        Ok(rotation)
    }

    /// The exact bytes both keys sign.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io_failure(format!("cannot serialise the rotation: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The trusted comment a key signs the statement with.
    pub fn comment(&self, signer: &KeyId) -> String {
        format!(
            "timestamp:{}\tfile:rotate-{}.json\tfrom:{}\tto:{}\tkey:{signer}",
            self.issued.as_second(),
            self.from.key_id,
            self.from.key_id,
            self.to.key_id
        )
    }
}

/// Authenticate a statement leaving `pinned`: signed by `pinned` (the
/// whole key, not an id), naming `pinned` as `from`, and signed by the key
/// it names as `to`. Returns the new key.
pub fn authenticate_rotation(
    bytes: &[u8],
    old_signature: &str,
    new_signature: &str,
    pinned: &PublicKey,
    origin: &str,
) -> Result<PublicKey> {
    let old = Signature::parse(old_signature).map_err(|e| e.context(origin))?;
    minisign::verify(pinned, bytes, &old)
        .map_err(|e| e.context(format!("{origin} (signature by the pinned key)")))?;
    let rotation = Rotation::parse(bytes, origin)?;
    if rotation.from != *pinned {
        return Err(Error::verification(format!(
            "{origin} leaves key {}, not the pinned key {}",
            rotation.from.key_id, pinned.key_id
        )));
    }
    if rotation.to == *pinned {
        return Err(Error::verification(format!(
            "{origin} rotates key {} to itself",
            pinned.key_id
        )));
    }
    let new = Signature::parse(new_signature).map_err(|e| e.context(origin))?;
    minisign::verify(&rotation.to, bytes, &new)
        .map_err(|e| e.context(format!("{origin} (signature by the new key)")))?;
    Ok(rotation.to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::SecretKey;

    fn signed(r: &Rotation, k: &SecretKey) -> String {
        k.sign(&r.to_bytes().unwrap(), &r.comment(&k.key_id), "t")
            .to_file_string()
    }

    #[test]
    fn both_keys_must_sign_and_the_pinned_key_must_be_the_one_left() {
        let (old, new, other) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let r = Rotation::new(old.public_key(), new.public_key(), Timestamp::UNIX_EPOCH).unwrap();
        let bytes = r.to_bytes().unwrap();
        let (by_old, by_new) = (signed(&r, &old), signed(&r, &new));
        let got = authenticate_rotation(&bytes, &by_old, &by_new, &old.public_key(), "x").unwrap();
        assert_eq!(got, new.public_key());
        // Without the new key's signature, or with it swapped, refused.
        assert!(authenticate_rotation(&bytes, &by_old, &by_old, &old.public_key(), "x").is_err());
        assert!(authenticate_rotation(&bytes, &by_new, &by_new, &old.public_key(), "x").is_err());
        // A statement leaving another key does not move this pin.
        assert!(authenticate_rotation(&bytes, &by_old, &by_new, &other.public_key(), "x").is_err());
        assert!(Rotation::new(old.public_key(), old.public_key(), Timestamp::UNIX_EPOCH).is_err());
    }
}
