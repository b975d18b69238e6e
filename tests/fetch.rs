//! The HTTP(S)/file:// client, against a tiny HTTP/1.1 server on loopback.
//!
//! Each test starts its own server on 127.0.0.1:0. The server answers a
//! bounded number of connections (one request each, `Connection: close`),
//! gives up after a deadline, and uses socket timeouts, so its thread always
//! ends by itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vmic_engine::fetch::*;
use vmic_engine::hashing::{Engine, NoProgress, Problem};
use vmic_engine::partfile::{Expected, PartFile};
use vmic_format::ErrorKind;
use vmic_format::digest::Sha256Digest;

// ---------------------------------------------------------------- server

#[derive(Debug, Clone)]
struct Req {
    target: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    /// Write these bytes, then close.
    Send(Vec<u8>),
    /// Write these bytes, then go silent until the client hangs up.
    SendThenStall(Vec<u8>),
}

struct Server {
    base: String,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serve at most `max` connections, calling `handler(index, request)`.
fn serve(max: usize, handler: impl Fn(usize, &Req) -> Reply + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < max && Instant::now() < deadline {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            let index = served;
            served += 1;
            let _ = handle(stream, index, &handler, &log);
        }
    });
    Server { base, requests }
}

fn handle(
    mut stream: TcpStream,
    index: usize,
    handler: &impl Fn(usize, &Req) -> Reply,
    log: &Mutex<Vec<Req>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = read_request(&mut stream)?;
    log.lock().unwrap().push(req.clone());
    match handler(index, &req) {
        Reply::Send(bytes) => {
            stream.write_all(&bytes)?;
            stream.flush()?;
        }
        Reply::SendThenStall(bytes) => {
            stream.write_all(&bytes)?;
            stream.flush()?;
            // Returns when the client gives up (or the read timeout hits).
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink)? > 0 {}
        }
    }
    Ok(())
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Req> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let target = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Req { target, headers })
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn ok(body: &[u8]) -> Vec<u8> {
    response(
        "200 OK",
        &[("Content-Length", body.len().to_string())],
        body,
    )
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = response(
        "200 OK",
        &[("Transfer-Encoding", "chunked".to_string())],
        b"",
    );
    for chunk in body.chunks(16 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// No length at all: the body ends when the connection closes.
fn close_delimited(body: &[u8]) -> Vec<u8> {
    response("200 OK", &[], body)
}

/// Announce all of `body` but send only its first `sent` bytes.
fn cut_short(body: &[u8], sent: usize) -> Vec<u8> {
    response(
        "200 OK",
        &[("Content-Length", body.len().to_string())],
        &body[..sent],
    )
}

/// A server that understands `Range: bytes=N-`.
fn ranged(data: &[u8], req: &Req) -> Vec<u8> {
    let start = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(start) => response(
            "206 Partial Content",
            &[
                ("Content-Length", (data.len() - start).to_string()),
                (
                    "Content-Range",
                    format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
                ),
            ],
            &data[start..],
        ),
        None => ok(data),
    }
}

// ---------------------------------------------------------------- helpers

/// A server whose first answer stops after `cut` bytes of `body` and whose
/// second honours the range request that resumes it.
fn cut_once_then_ranged(body: &[u8], cut: usize) -> Server {
    let reply = body.to_vec();
    serve(2, move |i, req| {
        Reply::Send(if i == 0 {
            cut_short(&reply, cut)
        } else {
            ranged(&reply, req)
        })
    })
}

fn client() -> HttpClient {
    client_with(|_| {})
}

fn client_with(tweak: impl FnOnce(&mut HttpConfig)) -> HttpClient {
    let mut config = HttpConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retries: 2,
        ca_file: None,
        user_agent: "vmic-test".to_string(),
        ..HttpConfig::default()
    };
    tweak(&mut config);
    HttpClient::new(&config).unwrap()
}

/// Deterministic, incompressible-looking bytes.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Chunk size of the images these tests download: small, so that even
/// short bodies have several chunks (blocks stay 8 MiB).
const CHUNK: usize = 4096;

/// The signed description of `truth` in chunks of `chunk` bytes, as a
/// catalog would declare it.
fn expected(truth: &[u8], chunk: usize) -> Expected {
    Expected::new(
        truth.len() as u64,
        chunk as u64,
        truth.chunks(chunk).map(Sha256Digest::of).collect(),
    )
    .unwrap()
}

/// How a download into a `.part` file ended.
struct Outcome {
    restarts: u32,
    discarded: u64,
    /// What the check found once the download succeeded (empty: the file
    /// is exactly `truth`).
    problems: Vec<Problem>,
}

/// Download `url` into the `.part` file `dest` for an image whose content
/// must be `truth`, as `vmic sync` does: keep what arrived on failure,
/// check and fsync on success.
fn download(
    client: &HttpClient,
    url: &str,
    dest: &Path,
    truth: &[u8],
) -> (vmic_format::Result<()>, Outcome) {
    download_in_chunks(client, url, dest, truth, CHUNK)
}

fn download_in_chunks(
    client: &HttpClient,
    url: &str,
    dest: &Path,
    truth: &[u8],
    chunk: usize,
) -> (vmic_format::Result<()>, Outcome) {
    let engine = Engine::new(Some(2)).unwrap();
    let mut part = PartFile::open(dest, expected(truth, chunk), &engine, &NoProgress).unwrap();
    let result = client.download(url, truth.len() as u64, &mut part);
    let mut outcome = Outcome {
        restarts: part.restarts(),
        discarded: part.discarded(),
        problems: Vec::new(),
    };
    match result {
        Ok(()) => outcome.problems = part.finish().unwrap(),
        Err(_) => part.suspend().unwrap(),
    }
    (result, outcome)
}

// ---------------------------------------------------------------- get_capped

#[test]
fn get_capped_returns_the_body() {
    let body = data(10_000);
    let reply = body.clone();
    let server = serve(1, move |_, _| Reply::Send(ok(&reply)));
    let got = client().get_capped(&server.url("/c.json"), 10_000).unwrap();
    assert_eq!(got, body);
    let reqs = server.requests();
    assert_eq!(reqs[0].target, "/c.json");
    assert_eq!(reqs[0].header("user-agent"), Some("vmic-test"));
}

#[test]
fn get_capped_refuses_a_declared_length_over_the_cap() {
    let server = serve(3, |_, _| Reply::Send(ok(&data(50_000))));
    let url = server.url("/big");
    let err = client().get_capped(&url, 10_000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification);
    assert_eq!(
        err.message(),
        format!("{url} is larger than the 10000-byte limit")
    );
    assert_eq!(
        server.requests().len(),
        1,
        "a size violation is not retried"
    );
}

#[test]
fn get_capped_refuses_an_unannounced_body_over_the_cap() {
    let server = serve(1, |_, _| Reply::Send(chunked(&data(1 << 20))));
    let err = client()
        .get_capped(&server.url("/chunked"), 64 << 10)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
    assert!(err.message().contains("65536-byte limit"), "{err}");

    let server = serve(1, |_, _| Reply::Send(close_delimited(&data(1 << 20))));
    let err = client()
        .get_capped(&server.url("/closed"), 64 << 10)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
}

#[test]
fn get_capped_accepts_unannounced_bodies_within_the_cap() {
    let body = data(100_000);
    let reply = body.clone();
    let server = serve(1, move |_, _| Reply::Send(chunked(&reply)));
    assert_eq!(
        client().get_capped(&server.url("/x"), 100_000).unwrap(),
        body
    );
}

#[test]
fn get_capped_reports_a_body_cut_short() {
    let server = serve(1, |_, _| Reply::Send(cut_short(&data(5000), 1000)));
    let url = server.url("/x");
    let err = client_with(|c| c.retries = 0)
        .get_capped(&url, 10_000)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(
        err.message(),
        format!("{url} ended after 1000 of the expected 5000 bytes")
    );
}

#[test]
fn server_errors_are_retried() {
    let body = data(1000);
    let reply = body.clone();
    let server = serve(2, move |i, _| {
        Reply::Send(if i == 0 {
            response(
                "500 Internal Server Error",
                &[("Content-Length", "0".into())],
                b"",
            )
        } else {
            ok(&reply)
        })
    });
    let started = Instant::now();
    assert_eq!(client().get_capped(&server.url("/x"), 1000).unwrap(), body);
    assert_eq!(server.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "no backoff"
    );
}

#[test]
fn persistent_server_errors_give_up_after_the_retries() {
    let server = serve(5, |_, _| {
        Reply::Send(response(
            "503 Service Unavailable",
            &[("Content-Length", "0".into())],
            b"",
        ))
    });
    let url = server.url("/x");
    let err = client_with(|c| c.retries = 1)
        .get_capped(&url, 1000)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.message().contains(&url) && err.message().contains("503"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn not_found_fails_without_retry() {
    let server = serve(3, |_, _| {
        Reply::Send(response(
            "404 Not Found",
            &[("Content-Length", "0".into())],
            b"",
        ))
    });
    let url = server.url("/missing");
    let err = client().get_capped(&url, 1000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.message().contains(&url), "{err}");
    assert!(err.message().contains("404"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn redirects_are_followed() {
    let server = serve(2, |i, _| {
        Reply::Send(if i == 0 {
            response(
                "302 Found",
                &[
                    ("Location", "/real".to_string()),
                    ("Content-Length", "0".into()),
                ],
                b"",
            )
        } else {
            ok(b"moved")
        })
    });
    assert_eq!(
        client().get_capped(&server.url("/old"), 100).unwrap(),
        b"moved"
    );
    assert_eq!(server.requests()[1].target, "/real");
}

#[test]
fn a_stalled_server_times_out() {
    let server = serve(1, |_, _| Reply::SendThenStall(Vec::new()));
    let client = client_with(|c| {
        c.timeout = Duration::from_secs(1);
        c.retries = 0;
    });
    let started = Instant::now();
    let err = client.get_capped(&server.url("/slow"), 1000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains("timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- download

#[test]
fn download_writes_the_whole_file() {
    let body = data(3 << 20);
    let reply = body.clone();
    let server = serve(1, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    assert_eq!(seen.restarts, 0);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.requests()[0].header("range"), None);
}

#[test]
fn download_resumes_a_partial_file() {
    let body = data((2 << 20) + 12345);
    let half = body.len() / 2;
    let reply = body.clone();
    let server = serve(1, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    std::fs::write(&dest, &body[..half]).unwrap();

    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    // The incomplete chunk at the end cannot be checked: it is fetched again.
    let verified = half / CHUNK * CHUNK;
    assert_eq!(
        server.requests()[0].header("range"),
        Some(format!("bytes={verified}-").as_str())
    );
    assert_eq!(seen.restarts, 0);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_complete_file_needs_no_request() {
    let body = data(5000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    std::fs::write(&dest, &body).unwrap();
    // Nothing listens here; a request would fail.
    let (result, seen) = download(&client(), "http://127.0.0.1:9/x", &dest, &body);
    result.unwrap();
    assert_eq!(seen.problems, []);
}

#[test]
fn a_longer_partial_file_is_discarded() {
    let body = data(5000);
    let reply = body.clone();
    let server = serve(1, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    std::fs::write(&dest, data(6000)).unwrap();
    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    assert_eq!(server.requests()[0].header("range"), None);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_server_ignoring_range_restarts_the_sink() {
    let body = data(300_000);
    let half = body.len() / 2;
    let reply = body.clone();
    let server = serve(1, move |_, _| Reply::Send(ok(&reply)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    std::fs::write(&dest, &body[..half]).unwrap();

    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    assert!(server.requests()[0].header("range").is_some());
    assert_eq!(seen.restarts, 1);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_wrong_content_range_starts_over() {
    let body = data(300_000);
    let half = body.len() / 2;
    let reply = body.clone();
    let server = serve(2, move |i, req| {
        Reply::Send(if i == 0 {
            // Claims the rest starts at 0: unusable.
            response(
                "206 Partial Content",
                &[
                    ("Content-Length", "100".into()),
                    ("Content-Range", format!("bytes 0-99/{}", reply.len())),
                ],
                &reply[..100],
            )
        } else {
            ranged(&reply, req)
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    std::fs::write(&dest, &body[..half]).unwrap();

    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("range"), None);
    assert_eq!(seen.restarts, 1);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_cut_body_keeps_the_partial_file_for_the_next_call() {
    let body = data(1 << 20);
    let sent = 400_000;
    let server = cut_once_then_ranged(&body, sent);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let url = server.url("/img");
    let no_retry = client_with(|c| c.retries = 0);

    let (result, _) = download(&no_retry, &url, &dest, &body);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        err.message().contains(&format!("{url} ended after")),
        "{err}"
    );
    let partial = std::fs::read(&dest).unwrap();
    assert!(!partial.is_empty() && partial.len() <= sent);
    assert_eq!(partial, body[..partial.len()]);

    let (result, seen) = download(&no_retry, &url, &dest, &body);
    result.unwrap();
    assert_eq!(
        server.requests()[1].header("range"),
        Some(format!("bytes={}-", partial.len() / CHUNK * CHUNK).as_str())
    );
    assert_eq!(seen.restarts, 0);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_retry_resumes_where_the_cut_body_ended() {
    let body = data(1 << 20);
    let server = cut_once_then_ranged(&body, 300_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let client = client_with(|c| c.retries = 1);
    let (result, seen) = download(&client, &server.url("/img"), &dest, &body);
    result.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].header("range").is_some_and(|r| r != "bytes=0-"));
    assert_eq!(seen.restarts, 0);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_download_of_several_blocks_cut_midway_resumes_after_its_last_whole_chunk() {
    // Three 8 MiB blocks: the first is written whole (direct I/O where the
    // filesystem allows), the cut leaves part of the second in memory,
    // which is kept when the download is suspended. The next run resumes
    // after the last whole (verified) chunk, without counting the rest of
    // the file as damage.
    let body = data((20 << 20) + 777);
    let cut = (13 << 20) + 5;
    let server = cut_once_then_ranged(&body, cut);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let url = server.url("/img");
    let no_retry = client_with(|c| c.retries = 0);

    let (result, _) = download(&no_retry, &url, &dest, &body);
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Io);
    assert_eq!(std::fs::read(&dest).unwrap(), body[..cut]);

    let (result, seen) = download(&no_retry, &url, &dest, &body);
    result.unwrap();
    assert_eq!(
        server.requests()[1].header("range"),
        Some(format!("bytes={}-", cut / CHUNK * CHUNK).as_str())
    );
    assert_eq!((seen.restarts, seen.discarded), (0, 0));
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_damaged_partial_file_is_cut_back_to_its_last_intact_chunk() {
    // What an earlier run left has a bad byte in its second block (a crash
    // that lost a write, or a mirror that sent garbage): the chunks before
    // the damaged one are kept, everything from it on is fetched again.
    let body = data((20 << 20) + 777);
    let reply = body.clone();
    let server = serve(1, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let mut partial = body[..18 << 20].to_vec();
    partial[(9 << 20) + 5] ^= 0x40;
    std::fs::write(&dest, &partial).unwrap();

    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    let damaged_chunk_start = ((9 << 20) + 5) / CHUNK * CHUNK;
    assert_eq!(
        server.requests()[0].header("range"),
        Some(format!("bytes={damaged_chunk_start}-").as_str())
    );
    assert_eq!(seen.discarded, (18 << 20) - damaged_chunk_start as u64);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_wrong_byte_from_the_server_is_pinpointed_after_the_download() {
    let body = data((9 << 20) + 3);
    let mut tampered = body.clone();
    tampered[(8 << 20) + 4097] ^= 1;
    let server = serve(1, move |_, req| Reply::Send(ranged(&tampered, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let (result, seen) = download(&client(), &server.url("/img"), &dest, &body);
    result.unwrap();
    let chunk = ((8 << 20) + 4097) / CHUNK as u64;
    assert!(
        matches!(seen.problems[..], [Problem::ChunkMismatch { index, .. }] if index == chunk),
        "{:?}",
        seen.problems
    );
}

#[test]
fn chunks_larger_than_a_block_are_checked_and_resumed() {
    // 20,000,005-byte chunks (not a page multiple) span three 8 MiB blocks;
    // memory stays at a few blocks however large the chunks are.
    let chunk = 20_000_005;
    let body = data(45 << 20);
    let reply = body.clone();
    let server = serve(2, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    // An earlier run left 42 MiB (two whole chunks) with a bad byte in the
    // second chunk: the file is cut back to that chunk's start, in the
    // middle of a block, whose intact bytes are read back from disk.
    let mut partial = body[..42 << 20].to_vec();
    partial[25 << 20] ^= 4;
    std::fs::write(&dest, &partial).unwrap();
    let (result, seen) = download_in_chunks(&client(), &server.url("/img"), &dest, &body, chunk);
    result.unwrap();
    assert_eq!(
        server.requests()[0].header("range"),
        Some(format!("bytes={chunk}-").as_str())
    );
    assert_eq!(seen.discarded, (42 << 20) - chunk as u64);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    // The server's copy is tampered with in the third chunk.
    let mut tampered = body.clone();
    tampered[(41 << 20) + 3] ^= 1;
    let server = serve(1, move |_, req| Reply::Send(ranged(&tampered, req)));
    let dest = dir.path().join("tampered");
    let (result, seen) = download_in_chunks(&client(), &server.url("/img"), &dest, &body, chunk);
    result.unwrap();
    assert!(
        matches!(seen.problems[..], [Problem::ChunkMismatch { index: 2, .. }]),
        "{:?}",
        seen.problems
    );
}

#[test]
fn a_body_stalling_midway_times_out_and_keeps_the_partial_file() {
    let body = data(200_000);
    let reply = body.clone();
    let server = serve(1, move |_, _| {
        Reply::SendThenStall(cut_short(&reply, 50_000))
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let client = client_with(|c| {
        c.timeout = Duration::from_secs(1);
        c.retries = 0;
    });
    let started = Instant::now();
    let (result, _) = download(&client, &server.url("/img"), &dest, &body);
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Io);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(std::fs::read(&dest).unwrap(), body[..50_000]);
}

#[test]
fn more_than_the_expected_size_is_refused() {
    let body = data(100_000);
    let expected = 60_000u64;
    let dir = tempfile::tempdir().unwrap();

    // Announced up front.
    let reply = body.clone();
    let server = serve(3, move |_, _| Reply::Send(ok(&reply)));
    let url = server.url("/img");
    let dest = dir.path().join("announced");
    let (result, _) = download(&client(), &url, &dest, &body[..expected as usize]);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification);
    assert_eq!(
        err.message(),
        format!("{url} sent more than the declared {expected} bytes")
    );
    assert_eq!(server.requests().len(), 1, "not retried");

    // Discovered while streaming: chunked, and close-delimited.
    for (name, reply) in [
        ("chunked", chunked(&body)),
        ("closed", close_delimited(&body)),
    ] {
        let server = serve(3, move |_, _| Reply::Send(reply.clone()));
        let dest = dir.path().join(name);
        let (result, _) = download(
            &client(),
            &server.url("/img"),
            &dest,
            &body[..expected as usize],
        );
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification, "{name}: {err}");
        assert!(
            err.message().contains("sent more than the declared"),
            "{err}"
        );
        assert!(std::fs::metadata(&dest).unwrap().len() <= expected);
        assert_eq!(server.requests().len(), 1, "not retried");
    }
}

/// A landing whose disk is full.
struct Refusing {
    buf: Vec<u8>,
}

impl Landing for Refusing {
    fn held(&self) -> u64 {
        0
    }
    fn restart(&mut self) -> vmic_format::Result<()> {
        Ok(())
    }
    fn room(&mut self) -> vmic_format::Result<&mut [u8]> {
        Ok(&mut self.buf)
    }
    fn advance(&mut self, _: usize) -> vmic_format::Result<()> {
        Err(vmic_format::Error::input("disk quota"))
    }
}

#[test]
fn landing_errors_stop_the_download_without_retry() {
    let body = data(100_000);
    let reply = body.clone();
    let server = serve(3, move |_, req| Reply::Send(ranged(&reply, req)));
    let mut landing = Refusing {
        buf: vec![0; 65536],
    };
    let err = client()
        .download(&server.url("/img"), body.len() as u64, &mut landing)
        .unwrap_err();
    assert_eq!(err.message(), "disk quota");
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------- file://

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display()).replace(' ', "%20")
}

#[test]
fn file_urls_are_read_with_the_same_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cata log.json");
    std::fs::write(&path, b"{\"hello\": 1}").unwrap();
    let url = file_url(&path);
    assert!(url.contains("%20"));
    let client = client();
    assert_eq!(client.get_capped(&url, 12).unwrap(), b"{\"hello\": 1}");
    let err = client.get_capped(&url, 11).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification);
    assert_eq!(
        err.message(),
        format!("{url} is larger than the 11-byte limit")
    );

    let missing = file_url(&dir.path().join("nope"));
    let err = client.get_capped(&missing, 100).unwrap_err();
    assert!(err.message().contains(&missing), "{err}");
}

#[test]
fn file_urls_download_and_resume() {
    let body = data((1 << 20) + 777);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.img");
    std::fs::write(&source, &body).unwrap();
    let url = file_url(&source);
    let client = client();

    let dest = dir.path().join("full.img");
    let (result, seen) = download(&client, &url, &dest, &body);
    result.unwrap();
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    let dest = dir.path().join("resumed.img");
    std::fs::write(&dest, &body[..1000]).unwrap();
    let (result, seen) = download(&client, &url, &dest, &body);
    result.unwrap();
    assert_eq!(seen.restarts, 0);
    assert_eq!(seen.problems, []);
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    // A local file of another size is a wrong image, refused before
    // anything is read: shorter than declared as much as longer.
    for (name, truth) in [
        ("short.img", body[..body.len() - 1].to_vec()),
        ("long.img", [&body[..], b"x"].concat()),
    ] {
        let dest = dir.path().join(name);
        let (result, _) = download(&client, &url, &dest, &truth);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Verification, "{name}: {err}");
        assert_eq!(
            err.message(),
            format!(
                "{url} is {} bytes, not the declared {}",
                body.len(),
                truth.len()
            )
        );
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 0, "{name}");
    }
}

// ---------------------------------------------------------------- setup

#[test]
fn bad_ca_files_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate").unwrap();
    for path in [missing, garbage] {
        let config = HttpConfig {
            ca_file: Some(path.clone()),
            ..HttpConfig::default()
        };
        let err = HttpClient::new(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Input);
        assert!(err.message().contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn defaults_and_unsupported_schemes() {
    let config = HttpConfig::default();
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.retries, 3);
    assert!(config.user_agent.starts_with("vmic/"));
    let err = client().get_capped("ftp://example.org/x", 10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Input);
}

#[test]
fn a_ca_file_is_trusted_and_tls_garbage_is_not_retried() {
    use base64::Engine;
    let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let client = client_with(|c| c.ca_file = Some(ca));

    // A plain-HTTP server answering a TLS hello: the handshake sees garbage,
    // which no retry can fix.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/x", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let accepted = thread::spawn(move || {
        // Watch long enough after the first connection for a wrongful
        // retry (0.5 s backoff) to show up.
        let mut stop = Instant::now() + Duration::from_secs(10);
        let mut count = 0;
        while Instant::now() < stop {
            let Ok((mut stream, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            if count == 0 {
                stop = Instant::now() + Duration::from_millis(1500);
            }
            count += 1;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.write_all(&ok(b"plain"));
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        count
    });
    let started = Instant::now();
    let err = client.get_capped(&url, 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    assert_eq!(accepted.join().unwrap(), 1, "retried: {err}");
}

/// A mirror sends bad bytes and hangs up inside a chunk; the next mirror
/// takes over. Without trimming, the next mirror would complete that chunk
/// and the image would fail. The landing keeps only verified chunks (here
/// the first 8 MiB block) and the next mirror continues from there.
#[test]
fn a_bad_mirror_that_hangs_up_mid_chunk_does_not_spoil_the_next_mirrors_bytes() {
    use vmic_engine::transport::{Fallback, Transport, UrlTransport};
    let body = data(20 << 20);
    let cut = (9 << 20) + 1000;
    let mut garbage = body.clone();
    garbage[(9 << 20) + 500] ^= 0x55;
    let bad = serve(1, move |_, _| Reply::Send(cut_short(&garbage, cut)));
    let reply = body.clone();
    let good = serve(1, move |_, req| Reply::Send(ranged(&reply, req)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let engine = Engine::new(Some(2)).unwrap();
    let mut part = PartFile::open(&dest, expected(&body, CHUNK), &engine, &NoProgress).unwrap();
    let no_retry = client_with(|c| c.retries = 0);
    let carriers: Vec<Box<dyn Transport>> = vec![
        Box::new(UrlTransport::new(&bad.url("/img"), no_retry.clone())),
        Box::new(UrlTransport::new(&good.url("/img"), no_retry)),
    ];
    let name = vmic_format::relpath::SafeRelPath::parse("img").unwrap();
    Fallback::new(carriers)
        .download(&name, body.len() as u64, &mut part)
        .unwrap();
    assert_eq!(part.finish().unwrap(), []);
    assert_eq!(
        good.requests()[0].header("range"),
        Some(format!("bytes={}-", 8 << 20).as_str())
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

/// A mirror cannot turn an HTTP download into a read of the site's own
/// files: a redirect to `file://` is refused, for small documents and for
/// image downloads alike.
#[test]
fn a_redirect_to_a_file_url_is_refused() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), b"site secret").unwrap();
    let target = format!("file://{}", secret.path().display());
    let server = serve(8, move |_, _| {
        Reply::Send(response(
            "302 Found",
            &[("Location", target.clone()), ("Content-Length", "0".into())],
            b"",
        ))
    });
    let no_retry = client_with(|c| c.retries = 0);
    let err = no_retry
        .get_capped(&server.url("/catalog.json"), 1000)
        .unwrap_err();
    assert!(!err.message().contains("site secret"), "{err}");
    let body = b"site secret".to_vec();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("image");
    let (result, _) = download(&no_retry, &server.url("/img"), &dest, &body);
    assert!(result.is_err(), "a file:// redirect was followed");
    assert_ne!(std::fs::read(&dest).unwrap_or_default(), body);
}
