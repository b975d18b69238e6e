//! Minisign-compatible keys and signatures, written from the format spec.
//!
//! Public keys, secret keys (scrypt-encrypted or not) and signatures are
//! byte-for-byte what `minisign` reads and writes, so a stock `minisign -V`
//! verifies what vmic signs, and keys move freely between the two tools.
//!
//! Layouts (all base64 on the second line of the file):
//! - public key: `"Ed" | key_id[8] | ed25519_pk[32]`
//! - secret key: `"Ed" | kdf "Sc" or 0,0 | "B2" | salt[32] | opslimit u64le |
//!   memlimit u64le | (key_id[8] | ed25519 seed+pk[64] | blake2b-256 checksum[32])`
//!   where the last 104 bytes are XOR-ed with scrypt(password) when encrypted
//! - signature: `"ED" | key_id[8] | ed25519(blake2b-512(message))[64]` (or
//!   `"Ed"` and a signature of the raw message for legacy signatures), then
//!   the trusted comment and a global signature over `signature | comment`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b, Blake2b512, Digest, digest::consts::U32};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};

const SIG_ALG: [u8; 2] = *b"Ed";
const SIG_ALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_ALG: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_ALG: [u8; 2] = *b"B2";
const KEYNUM_SK_LEN: usize = 8 + 64 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + KEYNUM_SK_LEN;
const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SIGNATURE_LEN: usize = 2 + 8 + 64;
/// minisign's defaults (libsodium's "sensitive" scrypt limits: N=2^20, r=8, p=1).
const DEFAULT_OPSLIMIT: u64 = 33_554_432;
const DEFAULT_MEMLIMIT: u64 = 1_073_741_824;
/// Refuse key files that ask for more than 4 GiB of scrypt memory: a hostile
/// or corrupt key file must not be able to exhaust the machine.
const MAX_SCRYPT_LOG_N: u32 = 22;
/// Refuse key files that ask for more scrypt work (N × r × p) than four
/// times minisign's own (2^20 × 8 × 1): unlocking must not take minutes.
const MAX_SCRYPT_WORK: u64 = 1 << 25;
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";

/// The 8-byte key id that ties signatures to keys. Displayed like minisign
/// does: the little-endian u64 in 16 uppercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl KeyId {
    /// Parse the 16 hex digits minisign shows (either case).
    pub fn parse(text: &str) -> Option<KeyId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16)
            .ok()
            .map(|n| KeyId(n.to_le_bytes()))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        KeyId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("key id {text:?} is not 16 hex digits"))
        })
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An Ed25519 public key with its minisign key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id minisign shows and signatures name.
    pub key_id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parse a minisign public key file (comment line optional) or a bare
    /// base64 key as given to `minisign -P`.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX))
            .ok_or_else(|| Error::input("public key file holds no key"))?;
        let bytes = decode_exact(line, PUBLIC_KEY_LEN, "public key")?;
        if bytes[0..2] != SIG_ALG {
            return Err(Error::input(
                "public key: unsupported signature algorithm (expected Ed25519)",
            ));
        }
        let key_id = KeyId(bytes[2..10].try_into().expect("8 bytes"));
        let raw: [u8; 32] = bytes[10..42].try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| Error::input(format!("public key {key_id}: not a valid Ed25519 point")))?;
        Ok(PublicKey { key_id, key })
    }

    /// The whole key as minisign's base64 line (`minisign -P` takes it):
    /// the identity of a signer, which a key id alone is not.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(&SIG_ALG);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        B64.encode(bytes)
    }

    /// The public key in minisign's two-line file format.
    pub fn to_file_string(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(&SIG_ALG);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id,
            B64.encode(bytes)
        )
    }
}

/// An Ed25519 signing key with its minisign key id.
pub struct SecretKey {
    /// The key id of the key pair.
    pub key_id: KeyId,
    signing: SigningKey,
}

impl SecretKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        let mut key_id = [0u8; 8];
        random(&mut seed)?;
        random(&mut key_id)?;
        Ok(SecretKey {
            key_id: KeyId(key_id),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half of the key pair.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
        }
    }

    /// Serialise in minisign's secret key format; encrypted with scrypt when
    /// a password is given.
    pub fn to_file_string(&self, password: Option<&[u8]>, comment: &str) -> Result<String> {
        let mut keynum_sk = [0u8; KEYNUM_SK_LEN];
        keynum_sk[0..8].copy_from_slice(&self.key_id.0);
        keynum_sk[8..72].copy_from_slice(&self.signing.to_keypair_bytes());
        let chk = checksum(&self.key_id, &keynum_sk[8..72]);
        keynum_sk[72..].copy_from_slice(&chk);

        let mut salt = [0u8; 32];
        random(&mut salt)?;
        let kdf_alg = match password {
            Some(password) => {
                let stream = kdf_stream(password, &salt, DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT)?;
                xor_in_place(&mut keynum_sk, &stream);
                KDF_ALG
            }
            None => KDF_NONE,
        };
        let mut bytes = Vec::with_capacity(SECRET_KEY_LEN);
        bytes.extend_from_slice(&SIG_ALG);
        bytes.extend_from_slice(&kdf_alg);
        bytes.extend_from_slice(&CHK_ALG);
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(&DEFAULT_OPSLIMIT.to_le_bytes());
        bytes.extend_from_slice(&DEFAULT_MEMLIMIT.to_le_bytes());
        bytes.extend_from_slice(&keynum_sk);
        let comment = single_line(comment);
        Ok(format!(
            "{UNTRUSTED_PREFIX}{comment}\n{}\n",
            B64.encode(bytes)
        ))
    }

    /// Whether a secret key file needs a password to open.
    pub fn is_encrypted(text: &str) -> Result<bool> {
        let bytes = decode_secret(text)?;
        Ok(bytes[2..4] != KDF_NONE)
    }

    /// Parse (and decrypt, for encrypted keys) a minisign secret key file.
    pub fn parse(text: &str, password: Option<&[u8]>) -> Result<SecretKey> {
        let bytes = decode_secret(text)?;
        let encrypted = match bytes[2..4].try_into().expect("2 bytes") {
            KDF_NONE => false,
            KDF_ALG => true,
            _ => {
                return Err(Error::input(
                    "secret key: unsupported key derivation function",
                ));
            }
        };
        if bytes[4..6] != CHK_ALG {
            return Err(Error::input("secret key: unsupported checksum algorithm"));
        }
        let mut keynum_sk: [u8; KEYNUM_SK_LEN] = bytes[54..].try_into().expect("104 bytes");
        if encrypted {
            let password = password
                .ok_or_else(|| Error::input("secret key is encrypted and no password was given"))?;
            let salt = &bytes[6..38];
            let opslimit = u64::from_le_bytes(bytes[38..46].try_into().expect("8 bytes"));
            let memlimit = u64::from_le_bytes(bytes[46..54].try_into().expect("8 bytes"));
            let stream = kdf_stream(password, salt, opslimit, memlimit)?;
            xor_in_place(&mut keynum_sk, &stream);
        }
        let key_id = KeyId(keynum_sk[0..8].try_into().expect("8 bytes"));
        // minisign 0.11 leaves the checksum of unencrypted (-W) keys zeroed;
        // for those, the key-pair consistency check below is the integrity check.
        let unchecked = !encrypted && keynum_sk[72..].iter().all(|&b| b == 0);
        if !unchecked && checksum(&key_id, &keynum_sk[8..72]) != keynum_sk[72..] {
            return Err(if encrypted {
                Error::input("wrong password for the secret key (checksum mismatch)")
            } else {
                Error::input("secret key is corrupt (checksum mismatch)")
            });
        }
        let keypair: [u8; 64] = keynum_sk[8..72].try_into().expect("64 bytes");
        let signing = SigningKey::from_keypair_bytes(&keypair).map_err(|_| {
            Error::input(format!(
                "secret key {key_id} is corrupt (inconsistent key pair)"
            ))
        })?;
        Ok(SecretKey { key_id, signing })
    }

    /// Sign `message` the way `minisign -S` does by default (prehashed with
    /// BLAKE2b-512), with a trusted comment covered by the global signature.
    pub fn sign(
        &self,
        message: &[u8],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Signature {
        let prehash = Blake2b512::digest(message);
        let signature = self.signing.sign(&prehash).to_bytes();
        let trusted_comment = single_line(trusted_comment);
        let global = self
            .signing
            .sign(&global_message(&signature, &trusted_comment))
            .to_bytes();
        Signature {
            prehashed: true,
            key_id: self.key_id,
            signature,
            untrusted_comment: single_line(untrusted_comment),
            trusted_comment,
            global_signature: global,
        }
    }
}

/// A parsed `.minisig` file. Parsing checks only its shape; [`verify`] checks
/// it against a key and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// `ED` (BLAKE2b-512 prehashed, minisign's default) rather than legacy `Ed`.
    pub prehashed: bool,
    /// The id of the key that made the signature.
    pub key_id: KeyId,
    signature: [u8; 64],
    /// The first line's comment; not covered by any signature.
    pub untrusted_comment: String,
    /// The trusted comment, covered by the global signature.
    pub trusted_comment: String,
    global_signature: [u8; 64],
}

impl Signature {
    /// Parse a four-line minisign signature file.
    pub fn parse(text: &str) -> Result<Signature> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let untrusted = lines
            .next()
            .and_then(|l| l.strip_prefix(UNTRUSTED_PREFIX))
            .ok_or_else(|| {
                Error::verification("signature: first line is not an untrusted comment")
            })?;
        let sig_line = lines
            .next()
            .ok_or_else(|| Error::verification("signature is truncated (no signature line)"))?;
        let bytes = decode_exact(sig_line.trim(), SIGNATURE_LEN, "signature")
            .map_err(|e| Error::verification(e.message()))?;
        let prehashed = match bytes[0..2].try_into().expect("2 bytes") {
            SIG_ALG_PREHASHED => true,
            SIG_ALG => false,
            _ => return Err(Error::verification("signature: unsupported algorithm")),
        };
        let trusted = lines
            .next()
            .and_then(|l| l.strip_prefix(TRUSTED_PREFIX))
            .ok_or_else(|| Error::verification("signature is truncated (no trusted comment)"))?;
        let global_line = lines
            .next()
            .ok_or_else(|| Error::verification("signature is truncated (no global signature)"))?;
        let global = decode_exact(global_line.trim(), 64, "global signature")
            .map_err(|e| Error::verification(e.message()))?;
        Ok(Signature {
            prehashed,
            key_id: KeyId(bytes[2..10].try_into().expect("8 bytes")),
            signature: bytes[10..74].try_into().expect("64 bytes"),
            untrusted_comment: untrusted.to_string(),
            trusted_comment: trusted.to_string(),
            global_signature: global.try_into().expect("64 bytes"),
        })
    }

    /// The signature in minisign's four-line file format.
    pub fn to_file_string(&self) -> String {
        let mut bytes = Vec::with_capacity(SIGNATURE_LEN);
        bytes.extend_from_slice(if self.prehashed {
            &SIG_ALG_PREHASHED
        } else {
            &SIG_ALG
        });
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(bytes),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// Check `signature` over `message` with `key`: key id, message signature,
/// then the global signature that covers the trusted comment.
pub fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> Result<()> {
    if signature.key_id != key.key_id {
        return Err(Error::verification(format!(
            "signature was made by key {} but the trusted key is {}",
            signature.key_id, key.key_id
        )));
    }
    let sig = ed25519_dalek::Signature::from_bytes(&signature.signature);
    let checked = if signature.prehashed {
        key.key.verify_strict(&Blake2b512::digest(message), &sig)
    } else {
        key.key.verify_strict(message, &sig)
    };
    checked.map_err(|_| {
        Error::verification(format!(
            "signature by key {} does not match the signed data (the file was modified or the signature belongs to another file)",
            key.key_id
        ))
    })?;
    let global = ed25519_dalek::Signature::from_bytes(&signature.global_signature);
    key.key
        .verify_strict(
            &global_message(&signature.signature, &signature.trusted_comment),
            &global,
        )
        .map_err(|_| {
            Error::verification(format!(
                "trusted comment of the signature by key {} was altered (global signature mismatch)",
                key.key_id
            ))
        })
}

fn global_message(signature: &[u8; 64], trusted_comment: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + trusted_comment.len());
    m.extend_from_slice(signature);
    m.extend_from_slice(trusted_comment.as_bytes());
    m
}

fn checksum(key_id: &KeyId, keypair: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(SIG_ALG);
    h.update(key_id.0);
    h.update(keypair);
    h.finalize().into()
}

fn decode_secret(text: &str) -> Result<Vec<u8>> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX))
        .ok_or_else(|| Error::input("secret key file holds no key"))?;
    if B64.decode(line).is_ok_and(|b| b.len() == PUBLIC_KEY_LEN) {
        return Err(Error::input(
            "this is a public key, not a secret key; give the secret key file (minisign names it without .pub)",
        ));
    }
    let bytes = decode_exact(line, SECRET_KEY_LEN, "secret key")?;
    if bytes[0..2] != SIG_ALG {
        return Err(Error::input(
            "secret key: unsupported signature algorithm (expected Ed25519)",
        ));
    }
    Ok(bytes)
}

fn decode_exact(line: &str, len: usize, what: &str) -> Result<Vec<u8>> {
    let bytes = B64.decode(line).map_err(|e| {
        Error::input(format!(
            "{what} is not valid base64 ({e}); the file is corrupt or truncated"
        ))
    })?;
    if bytes.len() != len {
        return Err(Error::input(format!(
            "{what} has {} bytes, expected {len}; the file is corrupt or truncated",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// libsodium's crypto_pwhash_scryptsalsa208sha256 parameter choice
/// (`pickparams`), which minisign relies on to turn limits into N, r, p.
fn scrypt_params(opslimit: u64, memlimit: u64) -> (u32, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u32 = 8;
    let log_n_for = |max_n: u64| {
        let mut log_n = 1u32;
        while log_n < 63 && (1u64 << log_n) <= max_n / 2 {
            log_n += 1;
        }
        log_n
    };
    if opslimit < memlimit / 32 {
        let log_n = log_n_for(opslimit / (u64::from(r) * 4));
        (log_n, r, 1)
    } else {
        let log_n = log_n_for(memlimit / (u64::from(r) * 128));
        let max_rp = ((opslimit / 4) / (1u64 << log_n)).min(0x3fff_ffff);
        (log_n, r, (max_rp as u32) / r)
    }
}

fn kdf_stream(
    password: &[u8],
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
) -> Result<[u8; KEYNUM_SK_LEN]> {
    let (log_n, r, p) = scrypt_params(opslimit, memlimit);
    let work = (1u64 << log_n.min(63))
        .saturating_mul(u64::from(r))
        .saturating_mul(u64::from(p));
    if log_n > MAX_SCRYPT_LOG_N || p == 0 || work > MAX_SCRYPT_WORK {
        return Err(Error::input(format!(
            "secret key asks for unreasonable scrypt parameters (N=2^{log_n}, r={r}, p={p}); refusing"
        )));
    }
    let params = scrypt::Params::new(log_n as u8, r, p)
        .map_err(|_| Error::input("secret key has invalid scrypt parameters"))?;
    let mut out = [0u8; KEYNUM_SK_LEN];
    scrypt::scrypt(password, salt, &params, &mut out)
        .map_err(|_| Error::input("scrypt failed on the secret key parameters"))?;
    Ok(out)
}

fn xor_in_place(data: &mut [u8], stream: &[u8]) {
    for (d, s) in data.iter_mut().zip(stream) {
        *d ^= s;
    }
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| Error::io_failure(format!("the operating system random source failed: {e}")))
}

/// Comments are single lines in every minisign file; a newline would let a
/// comment forge the structure of the file.
fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_asking_for_minutes_of_work_is_refused_before_scrypt_runs() {
        // memlimit 1 GiB gives N = 2^20; this opslimit gives p = 16.
        let started = std::time::Instant::now();
        let err = kdf_stream(b"pw", &[0; 32], 1 << 29, 1 << 30).unwrap_err();
        assert!(err.message().contains("p=16"), "{err}");
        assert!(err.message().contains("unreasonable"), "{err}");
        // And N above the memory cap (2^23 × 8 × 128 = 8 GiB).
        let err = kdf_stream(b"pw", &[0; 32], 1 << 40, 1 << 33).unwrap_err();
        assert!(err.message().contains("N=2^23"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_public_key_given_as_the_secret_key_is_named_as_such() {
        let sk = SecretKey::generate().unwrap();
        let err = SecretKey::parse(&sk.public_key().to_file_string(), None)
            .err()
            .unwrap();
        assert_eq!(err.kind(), crate::error::ErrorKind::Input);
        assert!(err.message().contains("this is a public key"), "{err}");
    }

    #[test]
    fn sensitive_limits_map_to_minisign_parameters() {
        assert_eq!(
            scrypt_params(DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT),
            (20, 8, 1)
        );
    }

    #[test]
    fn sign_then_verify_and_detect_changes() {
        let sk = SecretKey::generate().unwrap();
        let pk = PublicKey::parse(&sk.public_key().to_file_string()).unwrap();
        let sig = sk.sign(b"hello", "serial:1", "test");
        let parsed = Signature::parse(&sig.to_file_string()).unwrap();
        verify(&pk, b"hello", &parsed).unwrap();
        assert!(verify(&pk, b"hellp", &parsed).is_err());
        let mut altered = parsed.clone();
        altered.trusted_comment = "serial:2".into();
        assert!(verify(&pk, b"hello", &altered).is_err());
    }

    #[test]
    fn unencrypted_secret_key_round_trips() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.to_file_string(None, "demo").unwrap();
        assert!(!SecretKey::is_encrypted(&text).unwrap());
        let back = SecretKey::parse(&text, None).unwrap();
        assert_eq!(back.key_id, sk.key_id);
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn comments_cannot_inject_lines() {
        let sk = SecretKey::generate().unwrap();
        let sig = sk.sign(b"x", "a\ntrusted comment: evil", "b\nc");
        assert_eq!(sig.to_file_string().lines().count(), 4);
    }
}
