//! The VO endorser list (`vmic.vo/1`): which endorsers a virtual
//! organisation vouches for (name, whole public key, catalog sources), which
//! it has dropped and what happens to their images, signed by one or more
//! VO managers (VMIC use cases 1.1–1.4).
//!
//! Like a catalog, a list is parsed only from bytes whose signatures have
//! been counted (see [`authenticate_vo`]), and every field becomes a
//! validated type here. Several detached minisign signatures of the same
//! bytes may exist (`vo.json.minisig` and one `vo.json.<KEYID>.minisig` per
//! co-signer); a reader subscribed with a set of keys and a threshold `k`
//! accepts the list only when `k` distinct keys of that set signed it.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::ids::{EndorserName, Serial};
use crate::limits::MAX_TEXT;
use crate::minisign::{self, PublicKey, Signature};
use crate::trusted_comment;
use crate::versioned::Versioned;

/// The format string vmic writes.
pub const VO_FORMAT: &str = "vmic.vo/1";
/// VO lists as versioned documents.
const DOCUMENT: Versioned = Versioned {
    prefix: "vmic.vo/",
    majors: &[1],
    current: VO_FORMAT,
    noun: "VO list",
    file: VO_FILE,
};
/// The list's file name in a VO publication.
pub const VO_FILE: &str = "vo.json";
/// The first manager's signature, as `minisign -Vm vo.json` finds it.
pub const VO_SIGNATURE_FILE: &str = "vo.json.minisig";
/// Endorsers one list may name (listed and removed together).
pub const MAX_VO_ENDORSERS: usize = 10_000;
/// Catalog sources per endorser.
pub const MAX_SOURCES: usize = 16;
/// Keys a site may pin for one VO, and signatures it reads.
pub const MAX_VO_KEYS: usize = 32;
/// Largest vo.json accepted.
pub const MAX_VO_BYTES: u64 = 16 << 20;

/// Immutable generations of the list: `lists/<sha256>.json`, with each
/// manager's signature beside it (`lists/<sha256>.json.<KEYID>.minisig`).
/// A list being co-signed does not disturb the one before: readers find
/// every generation a signature's trusted comment names (`sha256:`), and
/// each generation's own set of signatures.
pub const VO_GENERATIONS_DIR: &str = "lists";

/// The generation file of the list whose SHA-256 is `sha256`.
pub fn vo_generation_name(sha256: &Sha256Digest) -> String {
    format!("{VO_GENERATIONS_DIR}/{sha256}.json")
}

/// The signature by `key_id` of the generation `sha256`.
pub fn vo_generation_signature_name(sha256: &Sha256Digest, key_id: &minisign::KeyId) -> String {
    format!("{}.{key_id}.minisig", vo_generation_name(sha256))
}

/// The co-signature file of the manager whose key id is `key_id`.
pub fn cosignature_name(key_id: &minisign::KeyId) -> String {
    format!("{VO_FILE}.{key_id}.minisig")
}

/// A validated VO list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawVoList")]
pub struct VoList {
    format: String,
    /// The VO's name.
    pub vo: EndorserName,
    /// One more than the previous list's.
    pub serial: Serial,
    /// When it was made.
    pub issued: Timestamp,
    /// When it stops being valid.
    pub expires: Timestamp,
    /// SHA-256 of the previous list's bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<Sha256Digest>,
    /// The endorsers the VO vouches for.
    pub endorsers: Vec<VoEndorser>,
    /// Endorsers the VO dropped, and what becomes of their images.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<VoRemoved>,
}

/// One endorser the VO vouches for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoEndorser {
    /// Its name (sites use it as theirs).
    pub name: EndorserName,
    /// Its whole minisign public key.
    #[serde(with = "wire_key")]
    pub pubkey: PublicKey,
    /// Where its catalog is published, tried in order.
    pub urls: Vec<SourceUrl>,
    /// Earlier keys of this endorser the VO declares compromised: a site
    /// pinned to one of them re-pins to `pubkey` and forgets the rollback
    /// memory an attacker may have pushed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "wire_keys")]
    pub compromised: Vec<PublicKey>,
}

/// An endorser the VO no longer vouches for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoRemoved {
    /// Its name.
    pub name: EndorserName,
    /// The key it had.
    #[serde(with = "wire_key")]
    pub pubkey: PublicKey,
    /// Why, for the sites' logs.
    pub reason: String,
    /// What sites do with the images they imported from it.
    pub images: RemovedImages,
}

/// What happens to a removed endorser's images (use cases 1.2.1, 1.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovedImages {
    /// Withdrawn at every site.
    Revoke,
    /// Kept (no new images) while the list says so, until the VO
    /// re-endorses them through another endorser and revokes these.
    Keep,
}

impl RemovedImages {
    /// As written in VO.toml and vo.json.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovedImages::Revoke => "revoke",
            RemovedImages::Keep => "keep",
        }
    }
}

/// A catalog source a VO names: an `http(s)://` or `file://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SourceUrl(String);

impl SourceUrl {
    /// Parse a source URL.
    pub fn parse(text: &str) -> std::result::Result<SourceUrl, String> {
        let scheme_ok = ["https://", "http://", "file:///"]
            .iter()
            .any(|s| text.starts_with(s));
        if !scheme_ok
            || text.len() > 4096
            || text.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "source {text:?} is not an http(s):// or file:/// URL"
            ));
        }
        Ok(SourceUrl(text.to_string()))
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SourceUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Keys travel as minisign's base64 line (what `minisign -P` takes).
mod wire_key {
    use super::*;

    pub fn serialize<S: Serializer>(key: &PublicKey, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_base64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        if text.contains('\n') {
            return Err(serde::de::Error::custom("pubkey must be one base64 line"));
        }
        PublicKey::parse(&text).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

mod wire_keys {
    use super::*;

    pub fn serialize<S: Serializer>(
        keys: &[PublicKey],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(PublicKey::to_base64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<PublicKey>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        if texts.len() > MAX_VO_KEYS {
            return Err(serde::de::Error::custom("too many compromised keys"));
        }
        texts
            .iter()
            .map(|t| PublicKey::parse(t).map_err(|e| serde::de::Error::custom(e.message())))
            .collect()
    }
}

#[derive(Deserialize)]
struct RawVoList {
    format: String,
    vo: EndorserName,
    serial: Serial,
    issued: Timestamp,
    expires: Timestamp,
    #[serde(default)]
    previous_sha256: Option<Sha256Digest>,
    endorsers: Vec<VoEndorser>,
    #[serde(default)]
    removed: Vec<VoRemoved>,
}

impl TryFrom<RawVoList> for VoList {
    type Error = String;
    fn try_from(raw: RawVoList) -> std::result::Result<VoList, String> {
        let list = VoList {
            format: raw.format,
            vo: raw.vo,
            serial: raw.serial,
            issued: raw.issued,
            expires: raw.expires,
            previous_sha256: raw.previous_sha256,
            endorsers: raw.endorsers,
            removed: raw.removed,
        };
        list.check_rules()?;
        Ok(list)
    }
}

/// Everything a writer supplies to make a list.
pub struct VoListParts {
    /// The VO's name.
    pub vo: EndorserName,
    /// The serial.
    pub serial: Serial,
    /// When it was made.
    pub issued: Timestamp,
    /// When it stops being valid.
    pub expires: Timestamp,
    /// SHA-256 of the previous list's bytes.
    pub previous_sha256: Option<Sha256Digest>,
    /// Listed endorsers.
    pub endorsers: Vec<VoEndorser>,
    /// Removed endorsers.
    pub removed: Vec<VoRemoved>,
}

impl VoList {
    /// A list from its parts, meeting every rule a reader checks.
    pub fn new(parts: VoListParts) -> Result<VoList> {
        let list = VoList {
            format: VO_FORMAT.to_string(),
            vo: parts.vo,
            serial: parts.serial,
            issued: parts.issued,
            expires: parts.expires,
            previous_sha256: parts.previous_sha256,
            endorsers: parts.endorsers,
            removed: parts.removed,
        };
        list.check_rules().map_err(Error::input)?;
        Ok(list)
    }

    /// Parse and validate `vo.json` bytes.
    pub fn parse(bytes: &[u8]) -> Result<VoList> {
        DOCUMENT.parse(bytes)
    }

    /// The exact bytes to publish and sign.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        DOCUMENT.to_bytes(self)
    }

    /// Whether the list has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires <= now
    }

    /// The listed endorser called `name`.
    pub fn endorser(&self, name: &str) -> Option<&VoEndorser> {
        self.endorsers.iter().find(|e| e.name.as_str() == name)
    }

    /// The removal entry for `name`.
    pub fn removal(&self, name: &str) -> Option<&VoRemoved> {
        self.removed.iter().find(|e| e.name.as_str() == name)
    }

    fn check_rules(&self) -> std::result::Result<(), String> {
        if self.endorsers.len() + self.removed.len() > MAX_VO_ENDORSERS {
            return Err(format!("more than {MAX_VO_ENDORSERS} endorsers"));
        }
        if self.expires <= self.issued {
            return Err(format!(
                "expires {} is not after issued {}",
                self.expires, self.issued
            ));
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for e in &self.endorsers {
            if !names.insert(e.name.as_str()) {
                return Err(format!("endorser {} is listed twice", e.name));
            }
            if !keys.insert(e.pubkey.to_base64()) {
                return Err(format!(
                    "key {} is listed for two endorsers; one key is one endorser",
                    e.pubkey.key_id
                ));
            }
            if e.urls.is_empty() || e.urls.len() > MAX_SOURCES {
                return Err(format!("endorser {} needs 1 to {MAX_SOURCES} urls", e.name));
            }
            if e.compromised.contains(&e.pubkey) {
                return Err(format!(
                    "endorser {}: its current key {} is also marked compromised",
                    e.name, e.pubkey.key_id
                ));
            }
        }
        for r in &self.removed {
            if !names.insert(r.name.as_str()) {
                return Err(format!(
                    "endorser {} is both listed and removed, or removed twice",
                    r.name
                ));
            }
            if r.reason.len() > MAX_TEXT || r.reason.chars().any(char::is_control) {
                return Err(format!(
                    "removed endorser {}: reason is not one line",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

/// The trusted comment a manager signs `vo.json` with; `sha256` (of the
/// signed bytes) names the list's generation.
pub fn vo_comment(
    list: &VoList,
    sha256: &Sha256Digest,
    key: &minisign::KeyId,
    timestamp: i64,
) -> String {
    format!(
        "timestamp:{timestamp}\tfile:{VO_FILE}\tvo:{}\tserial:{}\texpires:{}\tkey:{key}\tsha256:{sha256}",
        list.vo, list.serial, list.expires
    )
}

/// A list whose signatures reached the threshold.
#[derive(Debug)]
pub struct AuthenticatedVo {
    /// The validated list.
    pub list: VoList,
    /// SHA-256 of its exact bytes.
    pub sha256: Sha256Digest,
    /// The distinct pinned keys whose signatures counted.
    pub signed_by: Vec<minisign::KeyId>,
}

/// Count the signatures in `signature_texts` made over `bytes` by distinct
/// keys of `keys`; accept the list when at least `threshold` count, then
/// parse it and cross-check every counted signature's trusted comment.
/// A signature by a key outside the set, a bad one, or a second one by the
/// same key counts for nothing.
pub fn authenticate_vo(
    bytes: &[u8],
    signature_texts: &[String],
    keys: &[PublicKey],
    threshold: usize,
    origin: &str,
) -> Result<AuthenticatedVo> {
    let mut counted: Vec<(&PublicKey, Signature)> = Vec::new();
    let mut not_counted = Vec::new();
    for text in signature_texts.iter().take(MAX_VO_KEYS * 2) {
        let Ok(signature) = Signature::parse(text) else {
            not_counted.push("an unreadable signature".to_string());
            continue;
        };
        let key = keys.iter().find(|k| k.key_id == signature.key_id);
        match key {
            None => not_counted.push(format!("key {} (not a pinned VO key)", signature.key_id)),
            Some(k) if counted.iter().any(|(c, _)| *c == k) => {}
            Some(k) => match minisign::verify(k, bytes, &signature) {
                Ok(()) => counted.push((k, signature)),
                Err(e) => not_counted.push(format!("key {} ({})", k.key_id, e.message())),
            },
        }
    }
    if counted.len() < threshold.max(1) {
        let by: Vec<String> = counted.iter().map(|(k, _)| k.key_id.to_string()).collect();
        return Err(Error::verification(format!(
            "{origin}: {} valid signature(s) by distinct pinned VO keys{}, {} needed{}",
            counted.len(),
            if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            },
            threshold.max(1),
            if not_counted.is_empty() {
                String::new()
            } else {
                format!("; not counted: {}", not_counted.join("; "))
            }
        )));
    }
    let list = VoList::parse(bytes).map_err(|e| e.context(origin))?;
    for (key, signature) in &counted {
        cross_check(&list, signature, key).map_err(|e| e.context(origin))?;
    }
    Ok(AuthenticatedVo {
        signed_by: counted.iter().map(|(k, _)| k.key_id).collect(),
        list,
        sha256: Sha256Digest::of(bytes),
    })
}

fn cross_check(list: &VoList, signature: &Signature, key: &PublicKey) -> Result<()> {
    let fields = trusted_comment::parse(&signature.trusted_comment);
    let serial = list.serial.to_string();
    let expires = list.expires.to_string();
    let mismatch = |what: &str, value: &str, actual: &str| {
        Error::verification(format!(
            "the signature by {} says {what} {value} but {VO_FILE} says {actual}",
            key.key_id
        ))
    };
    if let Some(v) = fields.serial.filter(|v| *v != serial) {
        return Err(mismatch("serial", v, &serial));
    }
    if let Some(v) = fields.expires.filter(|v| *v != expires) {
        return Err(mismatch("expires", v, &expires));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::SecretKey;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    fn list(endorser_key: &PublicKey) -> VoList {
        VoList::new(VoListParts {
            vo: EndorserName::parse("atlas").unwrap(),
            serial: Serial::new(1).unwrap(),
            issued: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires: "2027-01-01T00:00:00Z".parse().unwrap(),
            previous_sha256: None,
            endorsers: vec![VoEndorser {
                name: EndorserName::parse("cern-it").unwrap(),
                pubkey: endorser_key.clone(),
                urls: vec![SourceUrl::parse("https://example.org/c/").unwrap()],
                compromised: vec![],
            }],
            removed: vec![],
        })
        .unwrap()
    }

    fn sign(k: &SecretKey, l: &VoList, bytes: &[u8]) -> String {
        k.sign(
            bytes,
            &vo_comment(l, &Sha256Digest::of(bytes), &k.key_id, 1),
            "sig",
        )
        .to_file_string()
    }

    #[test]
    fn round_trip_and_threshold() {
        let (a, b, c, e) = (key(), key(), key(), key());
        let l = list(&e.public_key());
        let bytes = l.to_bytes().unwrap();
        assert_eq!(VoList::parse(&bytes).unwrap(), l);
        let pins = [a.public_key(), b.public_key(), c.public_key()];
        let sa = sign(&a, &l, &bytes);
        let sb = sign(&b, &l, &bytes);
        let outsider = sign(&e, &l, &bytes);
        // One is not two; two by one key are not two; an outsider does not count.
        assert!(authenticate_vo(&bytes, std::slice::from_ref(&sa), &pins, 2, "x").is_err());
        assert!(authenticate_vo(&bytes, &[sa.clone(), sa.clone()], &pins, 2, "x").is_err());
        assert!(authenticate_vo(&bytes, &[sa.clone(), outsider], &pins, 2, "x").is_err());
        let ok = authenticate_vo(&bytes, &[sa, sb], &pins, 2, "x").unwrap();
        assert_eq!(ok.signed_by.len(), 2);
    }

    #[test]
    fn rules_refuse_duplicates_and_bad_sources() {
        let e = key().public_key();
        let mut l = list(&e);
        l.endorsers.push(l.endorsers[0].clone());
        assert!(l.check_rules().is_err());
        assert!(SourceUrl::parse("ftp://x/").is_err());
        assert!(SourceUrl::parse("https://x/ y").is_err());
        let future = br#"{"format":"vmic.vo/2"}"#;
        assert!(
            VoList::parse(future)
                .unwrap_err()
                .message()
                .contains("Upgrade vmic")
        );
    }
}
