//! Fetching catalogs and images over HTTP(S) and `file://`, for `vmic sync`.
//!
//! Everything a mirror sends is untrusted until its signature or digest has
//! been checked, so this module never lets the server decide how much we
//! read: small documents are capped ([`HttpClient::get_capped`]) and images
//! are limited to the size the signed catalog declares
//! ([`HttpClient::download`]). That is the "endless data" defence of TUF: a
//! malicious or broken mirror cannot fill the disk or memory by simply never
//! ending its response.
//!
//! This module only moves bytes: an image download reads the body straight
//! into the memory a [`Landing`] lends it (the `.part` file's blocks, see
//! [`crate::partfile`]), which owns the file, resumption and checking.
//! Interrupted downloads continue where the landing's bytes end, with a
//! `Range` request. Transient failures (connection errors, timeouts, 5xx)
//! are retried with exponential backoff; answers that will not change (4xx,
//! size violations) are not.
//!
//! `file://` URLs and local directories go through the same functions with
//! the same limits, so the caller treats local mirrors and remote ones alike.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::http::{HeaderMap, StatusCode};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::error::{Error, Result};
use crate::transport::Location;

/// First retry delay; doubled for every further retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// No single wait longer than this, however many retries are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Enough for http→https and a mirror hop or two; more suggests a loop.
const MAX_REDIRECTS: u32 = 5;

/// How the HTTP client behaves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest silence tolerated while sending the request or waiting for
    /// any part of the answer. Not a limit on a whole download, which may
    /// legitimately take hours.
    pub timeout: Duration,
    /// Longest time to resolve the host and establish the connection
    /// (including a proxy and the TLS handshake).
    pub connect_timeout: Duration,
    /// Longest time one attempt at a small document (a catalog, a
    /// signature) may take in all: a server trickling bytes just faster
    /// than `timeout` cannot hold the site lock for hours.
    pub document_deadline: Duration,
    /// Slowest acceptable download, in bytes per second, averaged over
    /// every `rate_window`; 0 turns the check off.
    pub min_rate: u64,
    /// The span `min_rate` is averaged over.
    pub rate_window: Duration,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    /// PEM certificates trusted in addition to the system roots, for
    /// mirrors behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// The `User-Agent` header sent.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            document_deadline: Duration::from_secs(120),
            min_rate: 4096,
            rate_window: Duration::from_secs(30),
            retries: 3,
            ca_file: None,
            user_agent: concat!("vmic/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Where [`HttpClient::download`] puts what it receives. The landing owns
/// the file, its memory and whatever checks the bytes; the client only
/// moves bytes into the room the landing lends it, in order.
pub trait Landing {
    /// Bytes of the file already held; a download continues after them.
    fn held(&self) -> u64;
    /// Everything held is void: the server is sending the file from byte 0.
    fn restart(&mut self) -> Result<()>;
    /// Room for the next bytes of the file; never empty.
    fn room(&mut self) -> Result<&mut [u8]>;
    /// The first `n` bytes of the last [`room`](Landing::room) now hold the
    /// next bytes of the file.
    fn advance(&mut self, n: usize) -> Result<()>;
    /// Another source takes over: keep only the bytes already verified,
    /// so that bytes the last source sent but that cannot be checked yet
    /// (the start of a chunk) are not completed by another source into a
    /// chunk that then fails. A landing that cannot tell keeps everything.
    fn trim_to_verified(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a server said identifies the version of a document it sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Validators {
    /// Whether there is anything to ask with.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The answer to a conditional request.
#[derive(Debug)]
pub enum Conditional {
    /// Unchanged since the validators were given (HTTP 304).
    NotModified,
    /// The body, and what identifies this version of it.
    Fresh(Vec<u8>, Validators),
}

/// Whether a document last modified at `last_modified` (an HTTP date) is
/// old enough that its one-second validators cannot hide a later change.
/// Without the header, the validators are the server's own (a content
/// hash, typically) and are kept.
fn settled(last_modified: Option<&str>) -> bool {
    let Some(text) = last_modified else {
        return true;
    };
    match jiff::fmt::rfc2822::parse(text) {
        Ok(modified) => {
            modified.timestamp() + jiff::SignedDuration::from_secs(2) < jiff::Timestamp::now()
        }
        Err(_) => false,
    }
}

/// An HTTP(S) and `file://` client; cheap to clone, connections are shared.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    retries: u32,
    document_deadline: Duration,
    min_rate: u64,
    rate_window: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `config`'s timeouts, retries and trust roots.
    pub fn new(config: &HttpConfig) -> Result<HttpClient> {
        let roots = root_certs(config.ca_file.as_deref())?;
        let agent = ureq::Agent::config_builder()
            // Status codes decide retrying, so we want to see them.
            .http_status_as_error(false)
            .max_redirects(MAX_REDIRECTS)
            .user_agent(config.user_agent.as_str())
            // Images must arrive byte for byte as hashed; never negotiate
            // a content encoding (ureq has no decoder compiled in anyway).
            .accept_encoding("")
            .proxy(ureq::Proxy::try_from_env())
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .timeout_resolve(Some(config.connect_timeout))
            .timeout_connect(Some(config.connect_timeout))
            .timeout_send_request(Some(config.timeout))
            .timeout_recv_response(Some(config.timeout))
            .timeout_per_read(Some(config.timeout))
            .timeout_per_write(Some(config.timeout))
            .build()
            .new_agent();
        Ok(HttpClient {
            agent,
            retries: config.retries,
            document_deadline: config.document_deadline,
            min_rate: config.min_rate,
            rate_window: config.rate_window,
        })
    }

    /// The body of `url` unless it is unchanged since it was fetched with
    /// `validators` (HTTP `If-None-Match` / `If-Modified-Since`; a 304
    /// costs a couple of hundred bytes). Local files are always read.
    pub fn get_conditional(
        &self,
        url: &str,
        max: u64,
        validators: &Validators,
    ) -> Result<Conditional> {
        match Location::parse(url)? {
            Location::Local(path) => read_file_capped(url, &path, max)
                .map(|b| Conditional::Fresh(b, Validators::default())),
            Location::Http(_) => {
                self.retrying(|| self.get_conditional_attempt(url, max, validators))
            }
        }
    }

    fn get_conditional_attempt(
        &self,
        url: &str,
        max: u64,
        validators: &Validators,
    ) -> Result<Conditional, Failure> {
        let mut request = self.agent.get(url);
        if let Some(etag) = &validators.etag {
            request = request.header("If-None-Match", etag.as_str());
        }
        if let Some(modified) = &validators.last_modified {
            request = request.header("If-Modified-Since", modified.as_str());
        }
        let response = request.call().map_err(|e| network_failure(url, e))?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(Conditional::NotModified);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 256 && !v.chars().any(char::is_control))
                .map(String::from)
        };
        let mut fresh = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        if !settled(fresh.last_modified.as_deref()) {
            // Servers derive validators from a one-second modification
            // time (nginx's ETag too): a file changed again within the
            // second we read it would look unchanged forever. Validators
            // of a file that young are not offered back.
            fresh = Validators::default();
        }
        let bytes = self.read_document(url, response, max)?;
        Ok(Conditional::Fresh(bytes, fresh))
    }

    /// The whole body of `url`, refusing anything larger than `max` bytes.
    pub fn get_capped(&self, url: &str, max: u64) -> Result<Vec<u8>> {
        match Location::parse(url)? {
            Location::Local(path) => read_file_capped(url, &path, max),
            Location::Http(_) => self.retrying(|| self.get_attempt(url, max)),
        }
    }

    /// Bring the file at `url` into `landing`, continuing after the bytes
    /// it already holds, and never accepting more than `expected_size`
    /// bytes in all.
    pub fn download(&self, url: &str, expected_size: u64, landing: &mut dyn Landing) -> Result<()> {
        let target = Location::parse(url)?;
        if landing.held() >= expected_size {
            return Ok(());
        }
        match target {
            Location::Local(path) => read_local(url, &path, expected_size, landing),
            Location::Http(_) => {
                let mut job = Job {
                    url,
                    expected: expected_size,
                    landing,
                    pace: Pace::new((self.min_rate, self.rate_window), None),
                };
                self.retrying(|| job.fetch_http(&self.agent))
            }
        }
    }

    /// Run `attempt` until it succeeds, fails for good, or the retries are
    /// used up; each retry waits twice as long as the one before.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        let mut retried = 0u32;
        loop {
            crate::cancel::check()?;
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if failure.transient && retried < self.retries => {
                    sleep_unless_cancelled(backoff(retried));
                    retried += 1;
                }
                Err(failure) if retried > 0 => {
                    return Err(failure
                        .error
                        .context(format!("gave up after {} attempts", retried + 1)));
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    fn get_attempt(&self, url: &str, max: u64) -> Result<Vec<u8>, Failure> {
        let response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| network_failure(url, e))?;
        self.read_document(url, response, max)
    }

    /// A small document's whole body, within the deadline and the cap.
    fn read_document(
        &self,
        url: &str,
        response: ureq::http::Response<ureq::Body>,
        max: u64,
    ) -> Result<Vec<u8>, Failure> {
        check_status(url, response.status())?;
        let declared = response.body().content_length();
        if declared.is_some_and(|len| len > max) {
            return Err(Failure::fatal(too_large(url, max)));
        }
        // The declared length is only a hint: a liar must not make us
        // reserve gigabytes up front.
        let capacity = declared.unwrap_or(0).min(max).min(16 << 20);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut body = response
            .into_body()
            .into_reader()
            .take(max.saturating_add(1));
        let mut pace = Pace::new(
            (self.min_rate, self.rate_window),
            Some(self.document_deadline),
        );
        let read = read_paced(&mut body, &mut bytes, &mut pace, url)?;
        let got = bytes.len() as u64;
        match (read, declared) {
            (Err(e), Some(len)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(Failure::transient(ended_early(url, got, len)))
            }
            (Err(e), _) => Err(read_failure(url, e)),
            (Ok(_), _) if got > max => Err(Failure::fatal(too_large(url, max))),
            (Ok(_), Some(len)) if got < len => Err(Failure::transient(ended_early(url, got, len))),
            (Ok(_), _) => Ok(bytes),
        }
    }
}

/// Copy the local file at `path` (named `label` in messages) into
/// `landing` with the same guarantees as a download: it continues after the
/// bytes already held, a file whose size is not `expected` is refused
/// before anything is read, and one that grows while read is cut off.
pub fn read_local(
    label: &str,
    path: &Path,
    expected: u64,
    landing: &mut dyn Landing,
) -> Result<()> {
    if landing.held() >= expected {
        return Ok(());
    }
    let named = Path::new(label);
    let mut source = crate::fsutil::open_regular(path, named)?;
    let len = source
        .metadata()
        .map_err(|e| Error::io("inspect", named, e))?
        .len();
    if len != expected {
        // A local file does not grow by waiting: a wrong size is a wrong
        // image (quarantined by the caller), not an outage.
        return Err(Error::verification(format!(
            "{label} is {len} bytes, not the declared {expected}"
        )));
    }
    source
        .seek(SeekFrom::Start(landing.held()))
        .map_err(|e| Error::io("read", named, e))?;
    let mut job = Job {
        url: label,
        expected,
        landing,
        // A local file is as fast as its disk; only a stop request ends it.
        pace: Pace::new((0, Duration::MAX), None),
    };
    job.stream(&mut source, |e| Failure::fatal(Error::io("read", named, e)))
        .map_err(|f| f.error)
}

/// One download in progress: between attempts, the landing holds exactly
/// the bytes received so far, so a retry continues with a range request.
struct Job<'j> {
    url: &'j str,
    expected: u64,
    landing: &'j mut dyn Landing,
    pace: Pace,
}

impl Job<'_> {
    fn fetch_http(&mut self, agent: &ureq::Agent) -> Result<(), Failure> {
        let url = self.url;
        let have = self.landing.held();
        let mut request = agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| network_failure(url, e))?;
        let status = response.status();
        if status == StatusCode::PARTIAL_CONTENT {
            if content_range_start(response.headers()) != Some(have) {
                // We cannot tell where these bytes belong; a fresh full
                // download on the next attempt is the safe way out.
                self.restart()?;
                return Err(Failure::transient(Error::io_failure(format!(
                    "{url} answered a range request with an unusable Content-Range"
                ))));
            }
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            // The server's file is not longer than our partial copy, so the
            // copy is not a prefix of it; start over without a range.
            self.restart()?;
            return Err(Failure::transient(Error::io_failure(format!(
                "{url} refused to resume at byte {have}"
            ))));
        } else {
            check_status(url, status)?;
            if have > 0 {
                // Range ignored: the body starts at byte 0.
                self.restart()?;
            }
        }
        let remaining = self.expected - self.landing.held();
        if response
            .body()
            .content_length()
            .is_some_and(|len| len > remaining)
        {
            return Err(Failure::fatal(too_much(url, self.expected)));
        }
        let mut body = response.into_body().into_reader();
        self.pace = Pace::new((self.pace.min_rate, self.pace.window), None);
        self.stream(&mut body, |e| read_failure(url, e))
    }

    /// Move `body` into the landing until it ends.
    fn stream(
        &mut self,
        body: &mut dyn Read,
        read_error: impl Fn(io::Error) -> Failure,
    ) -> Result<(), Failure> {
        let url = self.url;
        // Once everything expected is here, one more byte would prove the
        // sender is sending too much; the landing has no room for it.
        let mut probe = [0u8; 1];
        loop {
            self.pace.check(url).map_err(Failure::fatal_or_transient)?;
            let have = self.landing.held();
            let room = if have < self.expected {
                self.landing.room().map_err(Failure::fatal)?
            } else {
                &mut probe[..]
            };
            let n = match body.read(room) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(Failure::transient(ended_early(url, have, self.expected)));
                }
                Err(e) => return Err(read_error(e)),
            };
            self.pace.received(n);
            if have + n as u64 > self.expected {
                // Not even the fitting part is kept: the next run then
                // asks this server again rather than trusting it.
                return Err(Failure::fatal(too_much(url, self.expected)));
            }
            self.landing.advance(n).map_err(Failure::fatal)?;
        }
        let have = self.landing.held();
        if have < self.expected {
            return Err(Failure::transient(ended_early(url, have, self.expected)));
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<(), Failure> {
        self.landing.restart().map_err(Failure::fatal)
    }
}

/// An attempt's error, and whether trying again could change the outcome.
struct Failure {
    error: Error,
    transient: bool,
}

impl Failure {
    fn fatal(error: Error) -> Failure {
        Failure {
            error,
            transient: false,
        }
    }

    fn transient(error: Error) -> Failure {
        Failure {
            error,
            transient: true,
        }
    }

    /// A slow server is worth another attempt (or another mirror); a stop
    /// request is not.
    fn fatal_or_transient(stop: Stop) -> Failure {
        match stop {
            Stop::Cancelled(error) => Failure::fatal(error),
            Stop::TooSlow(error) => Failure::transient(error),
        }
    }
}

/// Why a transfer must stop before its end.
enum Stop {
    /// SIGTERM/SIGINT: see [`crate::cancel`].
    Cancelled(Error),
    /// Slower than the minimum rate, or past the deadline.
    TooSlow(Error),
}

/// The clock of one transfer attempt: a deadline for the whole attempt (if
/// any) and a minimum rate over every window.
struct Pace {
    min_rate: u64,
    window: Duration,
    deadline: Option<(Instant, Duration)>,
    window_start: Instant,
    window_bytes: u64,
}

impl Pace {
    fn new((min_rate, window): (u64, Duration), deadline: Option<Duration>) -> Pace {
        let now = Instant::now();
        Pace {
            min_rate,
            window,
            deadline: deadline.map(|d| (now, d)),
            window_start: now,
            window_bytes: 0,
        }
    }

    fn received(&mut self, n: usize) {
        self.window_bytes += n as u64;
    }

    /// Called before every read; a read itself blocks at most the
    /// per-read timeout, so the check runs at least that often.
    fn check(&mut self, url: &str) -> Result<(), Stop> {
        crate::cancel::check().map_err(Stop::Cancelled)?;
        let now = Instant::now();
        if let Some((start, limit)) = self.deadline
            && now.duration_since(start) > limit
        {
            return Err(Stop::TooSlow(Error::io_failure(format!(
                "{url} took longer than the {}s deadline for a catalog or signature (http.deadline)",
                limit.as_secs()
            ))));
        }
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= self.window {
            let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
            if self.min_rate > 0 && rate < self.min_rate as f64 {
                return Err(Stop::TooSlow(Error::io_failure(format!(
                    "{url} sent {rate:.0} bytes/s over the last {}s, below the minimum of {} bytes/s (http.min_rate)",
                    elapsed.as_secs(),
                    self.min_rate
                ))));
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

/// Read `body` to its end into `bytes`, under `pace`.
fn read_paced(
    body: &mut dyn Read,
    bytes: &mut Vec<u8>,
    pace: &mut Pace,
    url: &str,
) -> Result<io::Result<usize>, Failure> {
    let mut buf = [0u8; 64 << 10];
    let mut total = 0;
    loop {
        pace.check(url).map_err(Failure::fatal_or_transient)?;
        match body.read(&mut buf) {
            Ok(0) => return Ok(Ok(total)),
            Ok(n) => {
                pace.received(n);
                bytes.extend_from_slice(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Wait `delay`, waking early when a stop is requested.
fn sleep_unless_cancelled(delay: Duration) {
    let until = Instant::now() + delay;
    while crate::cancel::requested().is_none() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

fn backoff(retried: u32) -> Duration {
    FIRST_BACKOFF
        .checked_mul(1u32.checked_shl(retried).unwrap_or(u32::MAX))
        .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
}

fn too_large(url: &str, max: u64) -> Error {
    Error::verification(format!("{url} is larger than the {max}-byte limit"))
}

fn too_much(url: &str, expected: u64) -> Error {
    Error::verification(format!(
        "{url} sent more than the declared {expected} bytes"
    ))
}

fn ended_early(url: &str, got: u64, expected: u64) -> Error {
    Error::io_failure(format!(
        "{url} ended after {got} of the expected {expected} bytes"
    ))
}

/// 5xx is the server's trouble and may pass; other non-2xx answers won't.
fn check_status(url: &str, status: StatusCode) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let reason = status
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let message = format!(
        "{url}: the server answered HTTP {}{reason}",
        status.as_u16()
    );
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Err(Failure::fatal(Error::absent(message)));
    }
    let error = Error::io_failure(message);
    if status.is_server_error() {
        Err(Failure::transient(error))
    } else {
        Err(Failure::fatal(error))
    }
}

fn network_failure(url: &str, err: ureq::Error) -> Failure {
    ureq_failure(url, "fetch", err)
}

/// An error while reading a body; ureq wraps its own errors in io::Error.
fn read_failure(url: &str, err: io::Error) -> Failure {
    ureq_failure(url, "read", ureq::Error::from(err))
}

fn ureq_failure(url: &str, verb: &str, err: ureq::Error) -> Failure {
    use ureq::Error as U;
    let io_failure = || Error::io_failure(format!("cannot {verb} {url}: {err}"));
    match &err {
        U::BadUri(_) | U::Http(_) | U::RequireHttpsOnly(_) | U::InvalidProxyUrl => {
            Failure::fatal(Error::input(format!("{url}: {err}")))
        }
        U::Io(e) => Failure {
            // Bad data (a TLS alert, say) will be just as bad next time.
            transient: !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            ),
            error: io_failure(),
        },
        U::Timeout(_)
        | U::HostNotFound
        | U::ConnectionFailed
        | U::Protocol(_)
        | U::ConnectProxyFailed(_) => Failure::transient(io_failure()),
        _ => Failure::fatal(io_failure()),
    }
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// The system's roots (honouring SSL_CERT_FILE/SSL_CERT_DIR), or Mozilla's
/// bundled list where the system has none, plus the user's own CA file.
fn root_certs(ca_file: Option<&Path>) -> Result<RootCerts> {
    let native = rustls_native_certs::load_native_certs();
    let mut certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        certs.extend(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
        );
    }
    if let Some(path) = ca_file {
        certs.extend(read_ca_file(path)?);
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::input(format!("cannot read CA file {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::input(format!(
                    "CA file {} is not valid PEM: {e}",
                    path.display()
                )));
            }
        }
    }
    if certs.is_empty() {
        return Err(Error::input(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A local file's bytes, refusing more than `max`; `url` names it in errors.
pub fn read_file_capped(url: &str, path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = crate::fsutil::open_regular(path, Path::new(url))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspect", Path::new(url), e))?
        .len();
    if len > max {
        return Err(too_large(url, max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow while we read it; the cap holds regardless.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", Path::new(url), e))?;
    if bytes.len() as u64 > max {
        return Err(too_large(url, max));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::settled;

    #[test]
    fn validators_of_a_document_changed_within_the_last_seconds_are_not_kept() {
        assert!(settled(Some("Wed, 02 Dec 2020 12:40:03 GMT")));
        assert!(settled(None), "no date: the server's own validators");
        let now = jiff::Timestamp::now();
        let fresh = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&now)
            .unwrap();
        assert!(!settled(Some(&fresh)), "{fresh}");
        assert!(!settled(Some("yesterday")));
    }
}
