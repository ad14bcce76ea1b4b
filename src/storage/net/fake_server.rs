//! A scripted HTTP server on loopback for the cloud clients' unit tests: one raw answer per
//! connection, each request's head and body recorded. No real cloud needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Serves one scripted raw response per connection and records each request (head, blank
/// line, body).
pub fn fake(script: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for answer in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            // The body after the head's blank line, as on the wire.
            head.push_str("\r\n");
            head.push_str(&String::from_utf8_lossy(&body));
            log.lock().unwrap().push(head);
            let mut s = stream;
            let _ = s.write_all(&answer);
        }
    });
    (format!("http://{addr}"), seen)
}

/// A raw answer with `status` (e.g. `404 Not Found`) and `body`.
pub fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
