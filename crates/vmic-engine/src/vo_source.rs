//! Reading a VO list where it is published: `vo.json` and every
//! signature a pinned manager key may have made (`vo.json.minisig`,
//! `vo.json.<KEYID>.minisig`), through any transport. Authentication is
//! the format crate's [`authenticate_vo`].

use std::path::PathBuf;

use vmic_format::digest::Sha256Digest;
use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::PublicKey;
use vmic_format::minisign::Signature;
use vmic_format::trusted_comment;
use vmic_format::vo::{
    AuthenticatedVo, MAX_VO_BYTES, VO_FILE, VO_SIGNATURE_FILE, authenticate_vo, cosignature_name,
    vo_generation_name, vo_generation_signature_name,
};

use crate::error::{Error, Result};
use crate::fetch::HttpClient;
use crate::relpath::SafeRelPath;
use crate::transport::{DirTransport, HttpTransport, Location, Transport};

/// The directory a VO list is published in, from a URL or path naming the
/// directory or its `vo.json`.
pub fn open_vo_source(url: &str, client: &HttpClient) -> Result<Box<dyn Transport>> {
    Ok(match Location::parse(url)? {
        Location::Http(url) => {
            let base = url.strip_suffix(VO_FILE).unwrap_or(&url).to_string();
            Box::new(HttpTransport::new(&base, client.clone()))
        }
        Location::Local(path) if path.is_dir() => Box::new(DirTransport::new(&path)),
        Location::Local(path) => {
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            Box::new(DirTransport::new(&dir))
        }
    })
}

/// A VO list's bytes and the signature files found beside it.
#[derive(Debug)]
pub struct VoFiles {
    /// `vo.json`, as served.
    pub bytes: Vec<u8>,
    /// (file name, text) of each signature file present.
    pub signatures: Vec<(String, String)>,
    /// Where `vo.json` was read, for messages.
    pub origin: String,
}

impl VoFiles {
    /// Count the signatures against `keys` and `threshold`, then parse.
    pub fn authenticate(&self, keys: &[PublicKey], threshold: u32) -> Result<AuthenticatedVo> {
        let texts: Vec<String> = self.signatures.iter().map(|(_, t)| t.clone()).collect();
        authenticate_vo(&self.bytes, &texts, keys, threshold as usize, &self.origin)
    }
}

fn rel(name: &str) -> Result<SafeRelPath> {
    SafeRelPath::parse(name).map_err(|e| Error::input(e.message()))
}

/// The signature files named `files` that are there (a co-signature not
/// (yet) made is simply not there), as (entry-point name, text).
fn read_signatures(
    transport: &dyn Transport,
    files: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut signatures = Vec::new();
    for (as_named, file) in files {
        if let Ok(text) = transport.read(&rel(&file)?, MAX_SIGNATURE_BYTES) {
            signatures.push((as_named, String::from_utf8_lossy(&text).into_owned()));
        }
    }
    Ok(signatures)
}

/// Every list a reader may take from this source: each generation that a
/// signature at the entry point names (`sha256:` in its trusted comment),
/// and the one the reader `known`s, each with its own signatures; or, with
/// no generation to be found, the plain `vo.json` with the entry-point
/// signatures. The caller keeps the newest that meets its threshold, so a
/// list being co-signed, or an upload caught half-way, leaves it on the
/// previous list instead of failing. Signature names are given as at the
/// entry point (`vo.json.<KEYID>.minisig`).
pub fn read_vo_candidates(
    transport: &dyn Transport,
    keys: &[PublicKey],
    known: Option<&Sha256Digest>,
) -> Result<Vec<VoFiles>> {
    let mut entry_files = vec![(VO_SIGNATURE_FILE.to_string(), VO_SIGNATURE_FILE.to_string())];
    entry_files.extend(keys.iter().map(|k| {
        let name = cosignature_name(&k.key_id);
        (name.clone(), name)
    }));
    let entry = read_signatures(transport, entry_files)?;
    let mut named: Vec<Sha256Digest> = Vec::new();
    let pointed = entry.iter().filter_map(|(_, text)| {
        Signature::parse(text)
            .ok()
            .and_then(|s| trusted_comment::parse(&s.trusted_comment).sha256)
    });
    for sha in pointed.chain(known.copied()) {
        if !named.contains(&sha) {
            named.push(sha);
        }
    }
    let mut candidates = Vec::new();
    for sha in named {
        let list = rel(&vo_generation_name(&sha))?;
        let bytes = match transport.read(&list, MAX_VO_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.is_absent() => continue,
            Err(e) => return Err(e),
        };
        let files = keys.iter().map(|k| {
            (
                cosignature_name(&k.key_id),
                vo_generation_signature_name(&sha, &k.key_id),
            )
        });
        candidates.push(VoFiles {
            bytes,
            signatures: read_signatures(transport, files)?,
            origin: transport.locate(&list),
        });
    }
    if candidates.is_empty() {
        let list = rel(VO_FILE)?;
        candidates.push(VoFiles {
            bytes: transport.read(&list, MAX_VO_BYTES)?,
            signatures: entry,
            origin: transport.locate(&list),
        });
    }
    Ok(candidates)
}

/// The newest list a source offers that meets the threshold.
#[derive(Debug)]
pub struct Newest {
    /// The list.
    pub list: AuthenticatedVo,
    /// Its files.
    pub files: VoFiles,
    /// A list claiming a higher serial was there but fell short under
    /// these keys (its managers may have rotated their keys).
    pub newer_refused: bool,
}

/// Of `candidates`, the newest list that meets the threshold under `keys`
/// (with its files); else the failure of the first.
pub fn newest_authentic(
    candidates: Vec<VoFiles>,
    keys: &[PublicKey],
    threshold: u32,
) -> Result<Newest> {
    let mut best: Option<(AuthenticatedVo, VoFiles)> = None;
    let mut refused_serials = Vec::new();
    let mut first_failure = None;
    for files in candidates {
        match files.authenticate(keys, threshold) {
            Ok(list) => {
                if best
                    .as_ref()
                    .is_none_or(|(b, _)| list.list.serial > b.list.serial)
                {
                    best = Some((list, files));
                }
            }
            Err(e) => {
                // Parsed only to compare serials: nothing of it is used.
                if let Ok(unverified) = vmic_format::vo::VoList::parse(&files.bytes) {
                    refused_serials.push(unverified.serial);
                }
                first_failure.get_or_insert(e);
            }
        }
    }
    match (best, first_failure) {
        (Some((list, files)), _) => Ok(Newest {
            newer_refused: refused_serials.iter().any(|s| *s > list.list.serial),
            list,
            files,
        }),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Error::absent("no VO list found")),
    }
}
