//! Reading a VO list where it is published: `vo.json` and every
//! signature a pinned manager key may have made (`vo.json.minisig`,
//! `vo.json.<KEYID>.minisig`), through any transport. Authentication is
//! the format crate's [`authenticate_vo`].

use std::path::PathBuf;

use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::PublicKey;
use vmic_format::vo::{
    AuthenticatedVo, MAX_VO_BYTES, VO_FILE, VO_SIGNATURE_FILE, authenticate_vo, cosignature_name,
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

/// Read `vo.json` and the signatures the pinned `keys` may have made; a
/// co-signature not (yet) made is simply not there.
pub fn read_vo_files(transport: &dyn Transport, keys: &[PublicKey]) -> Result<VoFiles> {
    let name = |n: &str| SafeRelPath::parse(n).map_err(|e| Error::input(e.message()));
    let list_name = name(VO_FILE)?;
    let bytes = transport.read(&list_name, MAX_VO_BYTES)?;
    let mut files = vec![VO_SIGNATURE_FILE.to_string()];
    files.extend(keys.iter().map(|k| cosignature_name(&k.key_id)));
    let mut signatures = Vec::new();
    for file in files {
        if let Ok(text) = transport.read(&name(&file)?, MAX_SIGNATURE_BYTES) {
            signatures.push((file, String::from_utf8_lossy(&text).into_owned()));
        }
    }
    Ok(VoFiles {
        bytes,
        signatures,
        origin: transport.locate(&list_name),
    })
}
