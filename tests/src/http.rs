//! A real HTTP/1.1 health endpoint on 127.0.0.1 for the probe tests: it
//! answers every request with its current `status` (500 for a path
//! containing one of its `failing` parts), counts requests, keeps the last
//! one, and stops when dropped.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server; see the module docs.
pub struct HealthServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it answers (a test may switch it while a run probes).
    pub status: Arc<AtomicU16>,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
    /// The last request, head as received.
    pub last_request: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthServer {
    /// A server answering `status` to every path.
    pub fn start(status: u16) -> Self {
        Self::start_failing(status, &[])
    }

    /// A server answering `status`, or 500 to a path containing one of
    /// `failing`.
    pub fn start_failing(status: u16, failing: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing: Vec<String> = failing.iter().map(|p| p.to_string()).collect();
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(AtomicUsize::new(0));
        let last_request = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, requests, last_request, stop) = (
                status.clone(),
                requests.clone(),
                last_request.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                // Bounded: the test drops the server, or three minutes pass.
                let until = Instant::now() + Duration::from_secs(180);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(_) => break,
                    };
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let path = request.split(' ').nth(1).unwrap_or("");
                    let code = if failing.iter().any(|f| path.contains(f.as_str())) {
                        500
                    } else {
                        status.load(Ordering::SeqCst)
                    };
                    requests.fetch_add(1, Ordering::SeqCst);
                    *last_request.lock().unwrap() = request;
                    let body = if code == 200 { "ok" } else { "down" };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} Status\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })
        };
        HealthServer {
            port,
            status,
            requests,
            last_request,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
