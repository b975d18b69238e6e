//! A publication as a reader sees it: a catalog, its signature and the
//! images the catalog names, reached through a [`Transport`].
//!
//! One constructor, [`Publication::open`], takes anything a user may write
//! (a directory, its `catalog.json`, a `file://` or `http(s)://` URL).

use std::path::{Path, PathBuf};

use vmic_format::authenticate::{Authenticated, authenticate};
use vmic_format::catalog::{Chunks, Image};
use vmic_format::chunk_index::IndexedChunks;
use vmic_format::chunks::ChunkDigests;
use vmic_format::digest::Sha256Digest;
use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::PublicKey;
use vmic_format::minisign::Signature;
use vmic_format::publication::{CATALOG_FILE, generation_name, signature_name};
use vmic_format::trusted_comment;

use crate::error::{Error, Result};
use crate::fetch::{Conditional, HttpClient, Landing, Validators};
use crate::relpath::SafeRelPath;
use crate::transport::{DirTransport, Fallback, HttpTransport, Location, Transport, UrlTransport};

/// A catalog the reader accepted before, as it was signed.
pub struct CachedCatalog {
    /// SHA-256 of `bytes`.
    pub sha256: Sha256Digest,
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The signature accepted with them, and what the server said
    /// identified it: the signature is then asked for conditionally.
    pub signature: Option<(String, Validators)>,
}

/// A publication reached through a transport.
pub struct Publication {
    transport: Box<dyn Transport>,
    /// The HTTP client for per-image mirror URLs.
    client: HttpClient,
    catalog: SafeRelPath,
    signature: SafeRelPath,
    /// Full mirrors of the publication, tried for images after it.
    mirrors: Vec<String>,
}

impl Publication {
    /// Open the publication at `spec`: a directory or its catalog file, a
    /// `file://` URL, or an `http(s)://` URL of the directory or of its
    /// `catalog.json`.
    pub fn open(spec: &str, client: &HttpClient) -> Result<Publication> {
        match Location::parse(spec)? {
            Location::Http(url) => {
                let base = match url.rsplit_once('/') {
                    Some((dir, last)) if last.ends_with(".json") => dir.to_string(),
                    _ => url,
                };
                let transport = HttpTransport::new(&base, client.clone());
                Publication::new(Box::new(transport), CATALOG_FILE, client)
            }
            Location::Local(path) => Publication::open_local(&path, client),
        }
    }

    fn open_local(path: &Path, client: &HttpClient) -> Result<Publication> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("open source", path, e))?;
        if meta.is_dir() {
            return Publication::new(Box::new(DirTransport::new(path)), CATALOG_FILE, client);
        }
        let root = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::input(format!("{} is not a file name", path.display())))?;
        Publication::new(Box::new(DirTransport::new(&root)), name, client)
    }

    /// A publication whose catalog is `catalog_name` on `transport`.
    pub fn new(
        transport: Box<dyn Transport>,
        catalog_name: &str,
        client: &HttpClient,
    ) -> Result<Publication> {
        let catalog = SafeRelPath::parse(catalog_name).map_err(|e| Error::input(e.message()))?;
        let signature = SafeRelPath::parse(&signature_name(catalog_name))
            .map_err(|e| Error::input(e.message()))?;
        Ok(Publication {
            transport,
            client: client.clone(),
            catalog,
            signature,
            mirrors: Vec::new(),
        })
    }

    /// Where the catalog is, for messages.
    pub fn describe(&self) -> String {
        self.transport.locate(&self.catalog)
    }

    /// The raw catalog bytes, refusing more than `max`.
    pub fn read_catalog(&self, max: u64) -> Result<Vec<u8>> {
        self.transport.read(&self.catalog, max)
    }

    /// Another small file of the publication (`name` relative to it),
    /// refusing more than `max` bytes.
    pub fn read_file(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let name = SafeRelPath::parse(name).map_err(|e| Error::input(e.message()))?;
        self.transport.read(&name, max)
    }

    /// Where another file of the publication is, for messages.
    pub fn locate_file(&self, name: &str) -> String {
        match SafeRelPath::parse(name) {
            Ok(rel) => self.transport.locate(&rel),
            Err(_) => name.to_string(),
        }
    }

    /// The raw signature text.
    pub fn read_signature(&self) -> Result<String> {
        let location = self.transport.locate(&self.signature);
        let bytes = match self.transport.read(&self.signature, MAX_SIGNATURE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.missing_signature(&location).unwrap_or(e)),
        };
        String::from_utf8(bytes).map_err(|_| {
            Error::verification(format!(
                "{location} is not text; it is not a minisign signature"
            ))
        })
    }

    /// A catalog without its signature next to it cannot be trusted: that
    /// is a verification failure, not a missing input.
    fn missing_signature(&self, location: &str) -> Option<Error> {
        let local = self.transport.local_path(&self.signature).ok().flatten()?;
        (!local.exists()).then(|| {
            Error::verification(format!(
                "no signature: {location} is missing, so the catalog cannot be trusted"
            ))
        })
    }

    /// Read and authenticate the catalog under `key`: the signature first,
    /// then the immutable generation its signed trusted comment names (so
    /// a CDN serving a new signature with an old `catalog.json`, or the
    /// reverse, still yields one consistent catalog), else the plain
    /// `catalog.json` (publications from before generations, or re-signed
    /// by stock minisign).
    pub fn authenticate(&self, key: &PublicKey, max_catalog_bytes: u64) -> Result<Authenticated> {
        self.authenticate_cached(key, max_catalog_bytes, None)
            .map(|(authenticated, _)| authenticated)
    }

    /// [`Publication::authenticate`], with the reader's copy of a catalog
    /// it accepted before: when the signature names exactly those bytes,
    /// they are authenticated again instead of downloaded (an unchanged
    /// endorser costs one small signature request).
    pub fn authenticate_cached(
        &self,
        key: &PublicKey,
        max_catalog_bytes: u64,
        cached: Option<&CachedCatalog>,
    ) -> Result<(Authenticated, Validators)> {
        let (signature, validators) = self.read_signature_since(cached)?;
        let (bytes, origin) = self.read_named_catalog(&signature, max_catalog_bytes, cached)?;
        let authenticated = authenticate(&bytes, &signature, key, &origin)?;
        Ok((authenticated, validators))
    }

    /// The signature, with what the server said identifies it: asked for
    /// conditionally when the reader kept the one it accepted (an
    /// unchanged endorser then answers 304 with no body).
    fn read_signature_since(&self, cached: Option<&CachedCatalog>) -> Result<(String, Validators)> {
        let (kept, validators) = match cached.and_then(|c| c.signature.as_ref()) {
            Some((kept, v)) if !v.is_empty() => (Some(kept), v.clone()),
            _ => (None, Validators::default()),
        };
        let location = self.transport.locate(&self.signature);
        let answer =
            self.transport
                .read_conditional(&self.signature, MAX_SIGNATURE_BYTES, &validators);
        match answer {
            Ok(Conditional::NotModified) => match kept {
                Some(kept) => Ok((kept.clone(), validators)),
                None => Err(Error::io_failure(format!(
                    "{location}: the server answered 304 to a request that was not conditional"
                ))),
            },
            Ok(Conditional::Fresh(bytes, fresh)) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::verification(format!(
                        "{location} is not text; it is not a minisign signature"
                    ))
                })?;
                Ok((text, fresh))
            }
            Err(e) => Err(self.missing_signature(&location).unwrap_or(e)),
        }
    }

    fn read_named_catalog(
        &self,
        signature_text: &str,
        max: u64,
        cached: Option<&CachedCatalog>,
    ) -> Result<(Vec<u8>, String)> {
        let named = Signature::parse(signature_text)
            .ok()
            .and_then(|s| trusted_comment::parse(&s.trusted_comment).sha256);
        if let Some(sha256) = named {
            let rel = SafeRelPath::parse(&generation_name(&sha256))
                .map_err(|e| Error::input(e.message()))?;
            if let Some(copy) = cached.filter(|c| c.sha256 == sha256) {
                let origin = format!("{} (unchanged; local copy)", self.transport.locate(&rel));
                return Ok((copy.bytes.clone(), origin));
            }
            match self.transport.read(&rel, max) {
                Ok(bytes) => return Ok((bytes, self.transport.locate(&rel))),
                // Pruned, or a layout without generations: the plain path.
                Err(e) if e.is_absent() => {}
                Err(e) => return Err(e),
            }
        }
        Ok((self.read_catalog(max)?, self.describe()))
    }

    /// The plain `catalog.json` must be the catalog the signature names:
    /// `vmic verify` reports an edited entry point even when an intact
    /// generation exists.
    pub fn check_entry_point(&self, authenticated: &Authenticated, max: u64) -> Result<()> {
        let bytes = self.read_catalog(max)?;
        let actual = Sha256Digest::of(&bytes);
        if actual != authenticated.sha256 {
            return Err(Error::verification(format!(
                "{} (sha256 {actual}) is not the catalog its signature names (sha256 {}): edited in place, or caught mid-upload",
                self.describe(),
                authenticated.sha256
            )));
        }
        Ok(())
    }

    /// A local path for `image`, inside the publication, or `None` when the
    /// publication is remote.
    pub fn local_image(&self, image: &Image) -> Result<Option<PathBuf>> {
        self.transport.local_path(&image.path)
    }

    /// Also fetch images from these full mirrors of the publication (the
    /// signed catalog's `mirrors`), after the publication itself.
    pub fn add_mirrors(&mut self, bases: &[vmic_format::catalog::HttpUrl]) {
        self.mirrors
            .extend(bases.iter().map(|b| b.as_str().to_string()));
    }

    /// The chunk digests `image` must have: from its entry (format 1), or
    /// from its chunk index (format 2), read from the publication and then
    /// from the full mirrors, each copy authenticated by the signed digest
    /// before it is parsed. A source serving a bad index is passed over;
    /// when none serves a good one, the error names every source's fault.
    pub fn chunk_digests(&self, image: &Image) -> Result<ChunkDigests> {
        match &image.chunks {
            Chunks::Inline(digests) => Ok(digests.clone()),
            Chunks::Indexed(indexed) => self
                .read_chunk_index(indexed)
                .map(|(_, digests)| digests)
                .map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("image {}: {}", image.label(), e.message()),
                    )
                }),
        }
    }

    /// The bytes of a chunk index (authenticated by its signed digest) and
    /// the digests they hold, from the first source with a good copy.
    pub fn read_chunk_index(&self, indexed: &IndexedChunks) -> Result<(Vec<u8>, ChunkDigests)> {
        let name =
            SafeRelPath::parse(&indexed.file_name()).map_err(|e| Error::input(e.message()))?;
        let mut carriers: Vec<Box<dyn Transport + '_>> = vec![Box::new(&*self.transport)];
        for base in &self.mirrors {
            carriers.push(Box::new(HttpTransport::new(base, self.client.clone())));
        }
        let mut errors = Vec::new();
        for carrier in carriers {
            let opened = carrier
                .read(&name, indexed.index().size)
                .and_then(|bytes| match indexed.open(&bytes) {
                    Ok(digests) => Ok((bytes, digests)),
                    Err(e) => Err(Error::verification(format!(
                        "{}: {}",
                        carrier.locate(&name),
                        e.0
                    ))),
                });
            match opened {
                Ok(found) => return Ok(found),
                Err(e) => errors.push(e),
            }
        }
        let kind = crate::error::ErrorKind::most_severe(errors.iter().map(Error::kind))
            .unwrap_or(crate::error::ErrorKind::Io);
        let messages: Vec<&str> = errors.iter().map(Error::message).collect();
        Err(Error::new(
            kind,
            format!("no good chunk index: {}", messages.join("; ")),
        ))
    }

    /// Bring `image` into `landing`: from the publication, then from the
    /// full mirrors the catalog names, then from the image's own mirror
    /// URLs, in order.
    pub fn fetch_image(&self, image: &Image, landing: &mut dyn Landing) -> Result<()> {
        if image.urls.is_empty() && self.mirrors.is_empty() {
            return self.transport.download(&image.path, image.size(), landing);
        }
        let mut carriers: Vec<Box<dyn Transport + '_>> = vec![Box::new(&*self.transport)];
        for base in &self.mirrors {
            carriers.push(Box::new(HttpTransport::new(base, self.client.clone())));
        }
        for url in &image.urls {
            carriers.push(Box::new(UrlTransport::new(
                url.as_str(),
                self.client.clone(),
            )));
        }
        Fallback::new(carriers).download(&image.path, image.size(), landing)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vmic_format::digest::Sha256Digest;
    use vmic_format::error::ErrorKind;
    use vmic_format::minisign::SecretKey;

    use super::*;
    use crate::fetch::HttpConfig;

    /// A landing that keeps everything in memory.
    #[derive(Default)]
    struct Memory {
        bytes: Vec<u8>,
        room: Vec<u8>,
    }

    impl Landing for Memory {
        fn held(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn restart(&mut self) -> Result<()> {
            self.bytes.clear();
            Ok(())
        }
        fn room(&mut self) -> Result<&mut [u8]> {
            self.room.resize(4096, 0);
            Ok(&mut self.room)
        }
        fn advance(&mut self, n: usize) -> Result<()> {
            self.bytes.extend_from_slice(&self.room[..n]);
            Ok(())
        }
    }

    /// A signed publication in a temp directory: one image `a@1` holding
    /// `image`, with `urls` as its mirror URLs.
    fn publication(image: &[u8], urls: &[&str]) -> (tempfile::TempDir, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let d = Sha256Digest::of(image).to_hex();
        let catalog = json!({
            "format": "vmic.catalog/1",
            "endorser": {"name": "Test", "key_id": key.key_id.to_string()},
            "serial": 1, "issued": "2026-01-01T00:00:00Z", "expires": "2099-01-01T00:00:00Z",
            "images": [{"id": "a", "version": "1", "path": "images/a.raw", "urls": urls,
                        "size": image.len(), "sha256": d, "chunk_size": 4096, "chunks": [d],
                        "format": "raw"}]
        });
        let bytes = serde_json::to_vec(&catalog).unwrap();
        let sig = key.sign(&bytes, "serial:1", "test");
        std::fs::write(dir.path().join("catalog.json"), &bytes).unwrap();
        std::fs::write(
            dir.path().join("catalog.json.minisig"),
            sig.to_file_string(),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/a.raw"), image).unwrap();
        (dir, key)
    }

    fn client() -> HttpClient {
        HttpClient::new(&HttpConfig {
            retries: 0,
            ..HttpConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_directory_its_catalog_and_its_file_url_are_the_same_publication() {
        let (dir, key) = publication(b"image", &[]);
        let root = dir.path().display().to_string();
        for spec in [
            root.clone(),
            format!("{root}/catalog.json"),
            format!("file://{root}"),
        ] {
            let p = Publication::open(&spec, &client()).unwrap();
            let a = p.authenticate(&key.public_key(), 1 << 20).unwrap();
            assert_eq!(a.catalog.images()[0].label(), "a@1", "{spec}");
            let local = p.local_image(&a.catalog.images()[0]).unwrap().unwrap();
            assert_eq!(local, dir.path().join("images/a.raw"));
        }
    }

    #[test]
    fn a_missing_signature_is_a_verification_failure() {
        let (dir, key) = publication(b"image", &[]);
        std::fs::remove_file(dir.path().join("catalog.json.minisig")).unwrap();
        let p = Publication::open(dir.path().to_str().unwrap(), &client()).unwrap();
        let err = p.authenticate(&key.public_key(), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification);
        assert!(err.message().starts_with("no signature"), "{err}");
    }

    #[test]
    fn a_catalog_over_the_cap_is_refused_before_it_is_parsed() {
        let (dir, key) = publication(b"image", &[]);
        let p = Publication::open(dir.path().to_str().unwrap(), &client()).unwrap();
        let err = p.authenticate(&key.public_key(), 16).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
    }

    #[test]
    fn images_come_from_the_publication_then_from_their_mirror_urls() {
        let (dir, key) = publication(b"image bytes", &["http://127.0.0.1:9/a.raw"]);
        let p = Publication::open(dir.path().to_str().unwrap(), &client()).unwrap();
        let a = p.authenticate(&key.public_key(), 1 << 20).unwrap();
        let image = &a.catalog.images()[0];
        let mut landing = Memory::default();
        p.fetch_image(image, &mut landing).unwrap();
        assert_eq!(landing.bytes, b"image bytes");
        // Gone from the publication: the mirror URL is tried, and its
        // failure (nothing listens on port 9) is the one reported.
        std::fs::remove_file(dir.path().join("images/a.raw")).unwrap();
        let err = p.fetch_image(image, &mut Memory::default()).unwrap_err();
        assert!(err.message().contains("127.0.0.1:9"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    }

    #[test]
    fn other_schemes_are_refused() {
        let err = Publication::open("ftp://h/x", &client()).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Input);
    }
}
