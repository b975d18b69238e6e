//! A publication as a reader sees it: a catalog, its signature and the
//! images the catalog names, reached through a [`Transport`].
//!
//! One constructor, [`Publication::open`], takes anything a user may write
//! (a directory, its `catalog.json`, a `file://` or `http(s)://` URL).

use std::path::{Path, PathBuf};

use vmic_format::authenticate::{Authenticated, authenticate};
use vmic_format::catalog::Image;
use vmic_format::limits::MAX_SIGNATURE_BYTES;
use vmic_format::minisign::PublicKey;
use vmic_format::publication::{CATALOG_FILE, signature_name};

use crate::error::{Error, Result};
use crate::fetch::{HttpClient, Landing};
use crate::relpath::SafeRelPath;
use crate::transport::{DirTransport, Fallback, HttpTransport, Location, Transport, UrlTransport};

/// A publication reached through a transport.
pub struct Publication {
    transport: Box<dyn Transport>,
    /// The HTTP client for per-image mirror URLs.
    client: HttpClient,
    catalog: SafeRelPath,
    signature: SafeRelPath,
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

    /// Read and authenticate the catalog under `key`.
    pub fn authenticate(&self, key: &PublicKey, max_catalog_bytes: u64) -> Result<Authenticated> {
        let bytes = self.read_catalog(max_catalog_bytes)?;
        let signature = self.read_signature()?;
        authenticate(&bytes, &signature, key, &self.describe())
    }

    /// A local path for `image`, inside the publication, or `None` when the
    /// publication is remote.
    pub fn local_image(&self, image: &Image) -> Result<Option<PathBuf>> {
        self.transport.local_path(&image.path)
    }

    /// Bring `image` into `landing`: from the publication, then from the
    /// image's own mirror URLs, in order.
    pub fn fetch_image(&self, image: &Image, landing: &mut dyn Landing) -> Result<()> {
        if image.urls.is_empty() {
            return self.transport.download(&image.path, image.size(), landing);
        }
        let mut carriers: Vec<Box<dyn Transport + '_>> = vec![Box::new(Borrowed(&*self.transport))];
        for url in &image.urls {
            carriers.push(Box::new(UrlTransport::new(
                url.as_str(),
                self.client.clone(),
            )));
        }
        Fallback::new(carriers).download(&image.path, image.size(), landing)
    }
}

/// A borrowed transport in a decorator that wants to own its parts.
struct Borrowed<'t>(&'t dyn Transport);

impl Transport for Borrowed<'_> {
    fn locate(&self, name: &SafeRelPath) -> String {
        self.0.locate(name)
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        self.0.read(name, max)
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        self.0.download(name, size, landing)
    }

    fn local_path(&self, name: &SafeRelPath) -> Result<Option<PathBuf>> {
        self.0.local_path(name)
    }
}
