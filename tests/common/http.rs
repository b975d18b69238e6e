//! A tiny static-file HTTP/1.1 server for fault injection (errors, stalls,
//! short bodies, slow bodies), with Range support so resumes can be seen.
//! It serves on 127.0.0.1 only and stops when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    /// Answer 500 to requests for paths containing the text.
    Error500(String),
    /// Accept requests for matching paths and never answer.
    Stall(String),
    /// Send the headers for the whole body but only this many body bytes.
    CutShort(String, usize),
    /// Send the body slowly (bytes per 10 ms).
    Trickle(String, usize),
}

pub struct FaultServer {
    pub port: u16,
    pub fault: Arc<Mutex<Fault>>,
    pub ranges_seen: Arc<Mutex<Vec<String>>>,
    /// Body bytes written to clients so far (all requests).
    pub body_bytes_sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    pub fn start(root: PathBuf) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let ranges_seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let body_bytes_sent = Arc::new(AtomicU64::new(0));
        let (f, r, s, b) = (
            fault.clone(),
            ranges_seen.clone(),
            stop.clone(),
            body_bytes_sent.clone(),
        );
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes of serving, whatever happens.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (root, f, r, s, b) =
                            (root.clone(), f.clone(), r.clone(), s.clone(), b.clone());
                        std::thread::spawn(move || {
                            let _ = handle(stream, &root, &f, &r, &s, &b);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            port,
            fault,
            ranges_seen,
            body_bytes_sent,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    mut stream: TcpStream,
    root: &std::path::Path,
    fault: &Mutex<Fault>,
    ranges: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let v = v.trim();
            ranges.lock().unwrap().push(format!("{path} {v}"));
            range_start = v.trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let current = fault.lock().unwrap().clone();
    let matches = |needle: &str| path.contains(needle);
    match &current {
        Fault::Error500(n) if matches(n) => {
            stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Fault::Stall(n) if matches(n) => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        _ => {}
    }
    let file = root.join(path.trim_start_matches('/'));
    let Ok(body) = std::fs::read(&file) else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let (status, slice) = match range_start {
        Some(start) if start < body.len() => ("206 Partial Content", &body[start..]),
        _ => ("200 OK", &body[..]),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        slice.len()
    );
    if let (Some(start), "206 Partial Content") = (range_start, status) {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match current {
        Fault::CutShort(n, cut) if matches(&n) => {
            let piece = &slice[..cut.min(slice.len())];
            stream.write_all(piece)?;
            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        Fault::Trickle(n, per_tick) if matches(&n) => {
            for piece in slice.chunks(per_tick.max(1)) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                stream.write_all(piece)?;
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        _ => {
            stream.write_all(slice)?;
            sent.fetch_add(slice.len() as u64, Ordering::Relaxed);
        }
    }
    stream.flush()
}
