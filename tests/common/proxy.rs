//! A minimal HTTP CONNECT proxy on 127.0.0.1, the kind ureq speaks to for
//! `http_proxy`/`https_proxy`: it records every CONNECT target and tunnels
//! it to 127.0.0.1 on the same port, whatever the host name (so tests can
//! use names that only the proxy "resolves"). It stops when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ConnectProxy {
    pub port: u16,
    /// `host:port` of every CONNECT request, in order.
    pub targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (targets.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: at most 5 minutes of serving, whatever happens.
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((client, _)) => {
                        let t = t.clone();
                        std::thread::spawn(move || {
                            let _ = tunnel(client, &t);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ConnectProxy {
            port,
            targets,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn tunnel(mut client: TcpStream, targets: &Mutex<Vec<String>>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut words = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    targets.lock().unwrap().push(target.to_string());
    let port = target.rsplit(':').next().unwrap_or("80");
    let upstream = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // Bytes the reader buffered past the header belong to the tunnel.
    let early = reader.buffer().to_vec();
    let (mut up_write, mut up_read) = (upstream.try_clone()?, upstream);
    up_write.write_all(&early)?;
    let mut down = client.try_clone()?;
    let to_client = std::thread::spawn(move || std::io::copy(&mut up_read, &mut down));
    let _ = std::io::copy(&mut reader, &mut up_write);
    let _ = up_write.shutdown(std::net::Shutdown::Write);
    let _ = to_client.join();
    Ok(())
}
