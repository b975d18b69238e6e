//! Transports: where bytes come from. One trait — "the bytes of this
//! relative name, whole (capped) or streamed into a landing from where it
//! stopped" — with implementations for HTTP(S), local directories (plain
//! paths and `file://` URLs) and one absolute URL, composed by decorators:
//! an ordered [`Fallback`] list and a size [`Capped`] limit.
//!
//! Transports are untrusted byte carriers: nothing here decides whether
//! bytes are good. Callers authenticate catalogs and check every chunk of
//! every image, so a mirror, a CDN or a USB stick can be plugged in here
//! without touching what is verified.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Conditional, HttpClient, Landing, Validators, read_file_capped, read_local};
use crate::fsutil::resolve_inside;
use crate::relpath::SafeRelPath;

/// Something that can hand over the bytes of a relative name.
pub trait Transport: Send + Sync {
    /// Where `name` is, for messages (a URL or a path).
    fn locate(&self, name: &SafeRelPath) -> String;
    /// The whole content of `name`, refusing more than `max` bytes.
    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>>;
    /// Bring `name` into `landing`, continuing after the bytes it already
    /// holds, and never accepting more than `size` bytes in all.
    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()>;
    /// A local path for `name`, guaranteed inside the transport's root, or
    /// `None` when the bytes are not on a local filesystem.
    fn local_path(&self, _name: &SafeRelPath) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    /// `name` unless it is unchanged since `validators` were given; a
    /// transport without validators always reads it.
    fn read_conditional(
        &self,
        name: &SafeRelPath,
        max: u64,
        _validators: &Validators,
    ) -> Result<Conditional> {
        self.read(name, max)
            .map(|b| Conditional::Fresh(b, Validators::default()))
    }
}

/// A borrowed transport is one too, so decorators can hold carriers they do
/// not own.
impl<T: Transport + ?Sized> Transport for &T {
    fn locate(&self, name: &SafeRelPath) -> String {
        (**self).locate(name)
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        (**self).read(name, max)
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        (**self).download(name, size, landing)
    }

    fn local_path(&self, name: &SafeRelPath) -> Result<Option<PathBuf>> {
        (**self).local_path(name)
    }

    fn read_conditional(
        &self,
        name: &SafeRelPath,
        max: u64,
        validators: &Validators,
    ) -> Result<Conditional> {
        (**self).read_conditional(name, max, validators)
    }
}

/// Where a publication is, as a user writes it: an `http(s)://` URL, a
/// `file://` URL or a plain path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An HTTP(S) URL.
    Http(String),
    /// A local path (from a plain path or a `file://` URL).
    Local(PathBuf),
}

impl Location {
    /// Parse a location. Other URL schemes are refused.
    pub fn parse(spec: &str) -> Result<Location> {
        let scheme = spec.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http" | "https") => Ok(Location::Http(spec.to_string())),
            Some("file") => file_url_path(spec).map(Location::Local),
            Some(_) => Err(Error::input(format!(
                "{spec}: only http://, https://, file:// URLs or a directory are supported"
            ))),
            None => Ok(Location::Local(PathBuf::from(spec))),
        }
    }
}

/// The path of a `file://` URL (`file:///p` or `file://localhost/p`).
pub fn file_url_path(url: &str) -> Result<PathBuf> {
    let rest = url.get("file://".len()..).unwrap_or_default();
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(Error::input(format!(
            "{url:?}: a file:// URL needs an absolute path"
        )));
    }
    percent_decode(path)
        .map(PathBuf::from)
        .ok_or_else(|| Error::input(format!("{url}: bad percent-escape or non-UTF-8 path")))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encode a validated relative path for a URL, keeping `/` separators.
pub fn percent_encode_path(rel: &str) -> String {
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

/// A directory on a local filesystem (or removable medium). Names resolve
/// inside it; a symlink that leads out is refused, not followed.
pub struct DirTransport {
    root: PathBuf,
}

impl DirTransport {
    /// Bytes under `root`.
    pub fn new(root: &Path) -> DirTransport {
        DirTransport {
            root: root.to_path_buf(),
        }
    }
}

impl Transport for DirTransport {
    fn locate(&self, name: &SafeRelPath) -> String {
        name.join_to(&self.root).display().to_string()
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        let path = resolve_inside(&self.root, name)?;
        read_file_capped(&self.locate(name), &path, max)
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        let path = resolve_inside(&self.root, name)?;
        read_local(&path.display().to_string(), &path, size, landing)
    }

    fn local_path(&self, name: &SafeRelPath) -> Result<Option<PathBuf>> {
        resolve_inside(&self.root, name).map(Some)
    }
}

/// A directory served over HTTP(S).
pub struct HttpTransport {
    base: String,
    client: HttpClient,
}

impl HttpTransport {
    /// Names resolve under `base` (a trailing `/` is added if missing).
    pub fn new(base: &str, client: HttpClient) -> HttpTransport {
        HttpTransport {
            base: format!("{}/", base.trim_end_matches('/')),
            client,
        }
    }
}

impl Transport for HttpTransport {
    fn locate(&self, name: &SafeRelPath) -> String {
        format!("{}{}", self.base, percent_encode_path(name.as_str()))
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        self.client.get_capped(&self.locate(name), max)
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        self.client.download(&self.locate(name), size, landing)
    }

    fn read_conditional(
        &self,
        name: &SafeRelPath,
        max: u64,
        validators: &Validators,
    ) -> Result<Conditional> {
        self.client
            .get_conditional(&self.locate(name), max, validators)
    }
}

/// One absolute URL that stands for one file whatever the name asked for:
/// a catalog's per-image mirror URL.
pub struct UrlTransport {
    url: String,
    client: HttpClient,
}

impl UrlTransport {
    /// The file at `url`.
    pub fn new(url: &str, client: HttpClient) -> UrlTransport {
        UrlTransport {
            url: url.to_string(),
            client,
        }
    }
}

impl Transport for UrlTransport {
    fn locate(&self, _name: &SafeRelPath) -> String {
        self.url.clone()
    }

    fn read(&self, _name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        self.client.get_capped(&self.url, max)
    }

    fn download(&self, _name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        self.client.download(&self.url, size, landing)
    }
}

/// Transports tried in order: the next one is asked only when the one
/// before failed in a way another carrier may not (an outage, a missing
/// file). A verification failure — too many bytes, a wrong size — is an
/// attack or a bad image, not an outage, and is returned at once.
pub struct Fallback<'t> {
    transports: Vec<Box<dyn Transport + 't>>,
}

impl<'t> Fallback<'t> {
    /// Try `transports` in this order.
    pub fn new(transports: Vec<Box<dyn Transport + 't>>) -> Fallback<'t> {
        Fallback { transports }
    }

    fn attempt<T>(
        &self,
        name: &SafeRelPath,
        mut once: impl FnMut(&dyn Transport) -> Result<T>,
    ) -> Result<T> {
        // The last failure is the one reported: earlier carriers were tried
        // first because they are preferred, the last one is what is left.
        let mut last = None;
        for transport in &self.transports {
            match once(transport.as_ref()) {
                Ok(value) => return Ok(value),
                Err(e) if e.kind() == ErrorKind::Verification => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::io_failure(format!("no source to fetch {name} from"))))
    }
}

impl Transport for Fallback<'_> {
    fn locate(&self, name: &SafeRelPath) -> String {
        self.transports
            .first()
            .map_or_else(|| name.to_string(), |t| t.locate(name))
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        self.attempt(name, |t| t.read(name, max))
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        let mut first = true;
        self.attempt(name, |t| {
            if !std::mem::take(&mut first) {
                landing.trim_to_verified()?;
            }
            t.download(name, size, landing)
        })
    }

    fn local_path(&self, name: &SafeRelPath) -> Result<Option<PathBuf>> {
        self.transports
            .first()
            .map_or(Ok(None), |t| t.local_path(name))
    }
}

/// A cap on whole reads, whatever the caller asks for: the endless-data
/// guard for every catalog-sized read through `inner`.
pub struct Capped<T> {
    inner: T,
    max: u64,
}

impl<T: Transport> Capped<T> {
    /// Reads through `inner` refuse more than `max` bytes.
    pub fn new(inner: T, max: u64) -> Capped<T> {
        Capped { inner, max }
    }
}

impl<T: Transport> Transport for Capped<T> {
    fn locate(&self, name: &SafeRelPath) -> String {
        self.inner.locate(name)
    }

    fn read(&self, name: &SafeRelPath, max: u64) -> Result<Vec<u8>> {
        self.inner.read(name, max.min(self.max))
    }

    fn download(&self, name: &SafeRelPath, size: u64, landing: &mut dyn Landing) -> Result<()> {
        self.inner.download(name, size, landing)
    }

    fn local_path(&self, name: &SafeRelPath) -> Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A carrier that always fails with `kind` (a real outage or attack
    /// cannot be staged for a unit test; the HTTP ones are in tests/).
    struct Failing(ErrorKind);

    impl Transport for Failing {
        fn locate(&self, name: &SafeRelPath) -> String {
            format!("failing:{name}")
        }
        fn read(&self, name: &SafeRelPath, _max: u64) -> Result<Vec<u8>> {
            Err(Error::new(self.0, format!("{name} unavailable")))
        }
        fn download(&self, name: &SafeRelPath, _size: u64, _l: &mut dyn Landing) -> Result<()> {
            Err(Error::new(self.0, format!("{name} unavailable")))
        }
    }

    fn dir_with(name: &str, bytes: &[u8]) -> (tempfile::TempDir, DirTransport) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(name), bytes).unwrap();
        let t = DirTransport::new(tmp.path());
        (tmp, t)
    }

    fn rel(text: &str) -> SafeRelPath {
        SafeRelPath::parse(text).unwrap()
    }

    #[test]
    fn fallback_moves_on_after_an_outage() {
        let (_tmp, dir) = dir_with("catalog.json", b"{}");
        let chain = Fallback::new(vec![Box::new(Failing(ErrorKind::Io)), Box::new(dir)]);
        assert_eq!(chain.read(&rel("catalog.json"), 10).unwrap(), b"{}");
        assert!(chain.locate(&rel("x")).starts_with("failing:"));
    }

    #[test]
    fn fallback_stops_at_a_verification_failure() {
        let (_tmp, dir) = dir_with("catalog.json", b"{}");
        let chain = Fallback::new(vec![
            Box::new(Failing(ErrorKind::Verification)),
            Box::new(dir),
        ]);
        let err = chain.read(&rel("catalog.json"), 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification);
    }

    #[test]
    fn fallback_reports_the_last_failure_and_an_empty_list_fails() {
        let chain = Fallback::new(vec![
            Box::new(Failing(ErrorKind::Input)),
            Box::new(Failing(ErrorKind::Io)),
        ]);
        assert_eq!(chain.read(&rel("a"), 1).unwrap_err().kind(), ErrorKind::Io);
        let empty = Fallback::new(Vec::new());
        assert!(empty.read(&rel("a"), 1).is_err());
    }

    #[test]
    fn capped_refuses_more_than_its_limit_whatever_the_caller_asks() {
        let (_tmp, dir) = dir_with("big", &[7u8; 100]);
        let capped = Capped::new(dir, 10);
        let err = capped.read(&rel("big"), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
        let (_tmp2, dir) = dir_with("small", &[7u8; 5]);
        assert_eq!(
            Capped::new(dir, 10)
                .read(&rel("small"), 1 << 20)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn dir_transport_refuses_a_symlink_out_of_its_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let (tmp, dir) = dir_with("ok", b"x");
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link")).unwrap();
        let err = dir.read(&rel("link"), 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
        assert!(err.message().contains("outside"), "{err}");
    }

    #[test]
    fn locations_and_urls() {
        assert_eq!(
            Location::parse("https://h/x/").unwrap(),
            Location::Http("https://h/x/".into())
        );
        assert_eq!(
            Location::parse("file://localhost/a%20b").unwrap(),
            Location::Local(PathBuf::from("/a b"))
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        assert!(Location::parse("ftp://h/x").is_err());
        assert!(Location::parse("file://relative").is_err());
        assert!(Location::parse("file:///bad%zz").is_err());
        assert_eq!(
            percent_encode_path("images/a b+c.qcow2"),
            "images/a%20b%2Bc.qcow2"
        );
        let http = HttpTransport::new(
            "https://h/pub",
            HttpClient::new(&Default::default()).unwrap(),
        );
        assert_eq!(
            http.locate(&rel("images/a b")),
            "https://h/pub/images/a%20b"
        );
    }
}
