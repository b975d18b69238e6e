//! Where a published catalog is read from.
//!
//! Today: a local directory (or its catalog.json), or a `file://` URL. The
//! [`Source`] trait is the seam where HTTP(S) sources plug in for `sync`.

use std::path::{Path, PathBuf};

use crate::catalog::Image;
use crate::error::{Error, Result};
use crate::fetch::{HttpClient, Landing};
use crate::fsutil::resolve_inside;
use crate::relpath::SafeRelPath;
pub use vmic_format::limits::{DEFAULT_MAX_CATALOG_BYTES, MAX_SIGNATURE_BYTES};
use vmic_format::publication::{CATALOG_FILE, SIGNATURE_FILE};

pub trait Source {
    /// Human-readable location for messages.
    fn describe(&self) -> String;
    /// The raw bytes of catalog.json, refusing more than `max` bytes.
    fn read_catalog(&self, max: u64) -> Result<Vec<u8>>;
    /// The raw text of catalog.json.minisig.
    fn read_signature(&self) -> Result<String>;
    /// A local path for an image named by the catalog, guaranteed inside the
    /// source directory, or `None` when the source is remote.
    fn local_image(&self, rel: &SafeRelPath) -> Result<Option<PathBuf>>;
    /// Bring `image` into `landing`, continuing after the bytes it already
    /// holds; never more than the declared size.
    fn fetch_image(&self, image: &Image, landing: &mut dyn Landing) -> Result<()>;
}

/// A published directory on a local filesystem (or removable medium).
pub struct DirSource {
    root: PathBuf,
    catalog: PathBuf,
}

impl DirSource {
    /// `path` is the published directory, or its catalog.json.
    pub fn new(path: &Path) -> Result<DirSource> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("open source", path, e))?;
        let (root, catalog) = if meta.is_dir() {
            (path.to_path_buf(), path.join(CATALOG_FILE))
        } else {
            let root = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (root, path.to_path_buf())
        };
        Ok(DirSource { root, catalog })
    }

    fn signature_path(&self) -> PathBuf {
        let mut name = self.catalog.as_os_str().to_owned();
        name.push(vmic_format::publication::SIGNATURE_SUFFIX);
        PathBuf::from(name)
    }
}

impl Source for DirSource {
    fn describe(&self) -> String {
        self.catalog.display().to_string()
    }

    fn read_catalog(&self, max: u64) -> Result<Vec<u8>> {
        crate::fetch::read_file_capped(&self.describe(), &self.catalog, max)
    }

    fn read_signature(&self) -> Result<String> {
        let path = self.signature_path();
        let bytes =
            crate::fetch::read_file_capped(&path.display().to_string(), &path, MAX_SIGNATURE_BYTES)
                .map_err(|e| {
                    if !path.exists() {
                        Error::verification(format!(
                            "no signature: {} is missing, so the catalog cannot be trusted",
                            path.display()
                        ))
                    } else {
                        e
                    }
                })?;
        String::from_utf8(bytes).map_err(|_| {
            Error::verification(format!(
                "{} is not text; it is not a minisign signature",
                path.display()
            ))
        })
    }

    fn local_image(&self, rel: &SafeRelPath) -> Result<Option<PathBuf>> {
        resolve_inside(&self.root, rel).map(Some)
    }

    fn fetch_image(&self, image: &Image, landing: &mut dyn Landing) -> Result<()> {
        let src = resolve_inside(&self.root, &image.safe_path()?)?;
        crate::fetch::read_local(&src.display().to_string(), &src, image.size, landing)
    }
}

/// A published directory served over HTTP(S): the catalog next to the
/// images, and optional absolute mirror URLs per image as fallbacks.
pub struct HttpSource {
    base: String,
    client: HttpClient,
}

impl HttpSource {
    /// `url` is the directory URL or the URL of its catalog.json.
    pub fn new(url: &str, client: HttpClient) -> HttpSource {
        let base = match url.rsplit_once('/') {
            Some((dir, last)) if last.ends_with(".json") => format!("{dir}/"),
            _ => format!("{}/", url.trim_end_matches('/')),
        };
        HttpSource { base, client }
    }

    fn url_of(&self, rel: &str) -> String {
        format!("{}{}", self.base, percent_encode_path(rel))
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.url_of(CATALOG_FILE)
    }

    fn read_catalog(&self, max: u64) -> Result<Vec<u8>> {
        self.client.get_capped(&self.url_of(CATALOG_FILE), max)
    }

    fn read_signature(&self) -> Result<String> {
        let url = self.url_of(SIGNATURE_FILE);
        let bytes = self.client.get_capped(&url, MAX_SIGNATURE_BYTES)?;
        String::from_utf8(bytes).map_err(|_| {
            Error::verification(format!("{url} is not text; it is not a minisign signature"))
        })
    }

    fn local_image(&self, _rel: &SafeRelPath) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    fn fetch_image(&self, image: &Image, landing: &mut dyn Landing) -> Result<()> {
        let mut urls = vec![self.url_of(image.safe_path()?.as_str())];
        urls.extend(image.urls.iter().cloned());
        let mut last = None;
        for url in &urls {
            match self.client.download(url, image.size, landing) {
                Ok(()) => return Ok(()),
                // Too many bytes is an attack, not an outage: no fallback.
                Err(e) if e.kind() == crate::error::ErrorKind::Verification => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::io_failure(format!("no URL to fetch {}", image.label()))))
    }
}

/// Encode a validated relative path for a URL, keeping `/` separators.
fn percent_encode_path(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Open a trusted endorser's source for `sync`: http(s) URLs through the
/// HTTP client, `file://` URLs and plain paths as directories.
pub fn open_remote(url: &str, client: &HttpClient) -> Result<Box<dyn Source>> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Box::new(HttpSource::new(url, client.clone())));
    }
    open(url)
}

/// Open a source given on the command line: a directory, a catalog.json, or
/// a `file://` URL. HTTP(S) sources are read by `vmic sync`.
pub fn open(spec: &str) -> Result<Box<dyn Source>> {
    if let Some(rest) = spec.strip_prefix("file://") {
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(Error::input(format!(
                "{spec:?}: a file:// URL needs an absolute path"
            )));
        }
        return Ok(Box::new(DirSource::new(Path::new(&percent_decode(path)?))?));
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Err(Error::input(format!(
            "{spec}: HTTP sources are not supported by this command yet; download the directory or use a local path"
        )));
    }
    Ok(Box::new(DirSource::new(Path::new(spec))?))
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::input(format!("bad percent-escape in {text:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::input(format!("{text:?} decodes to invalid UTF-8")))
}
