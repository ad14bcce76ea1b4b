//! A small GCS on loopback for the unit tests: the upload endpoints (media and resumable,
//! strict about `Content-Range` offsets as GCS is), media downloads with `Range`, and a
//! script of faults (a chunk only partly kept, a connection cut, an error status), plus
//! every request it saw. In-memory and scripted; the integration tests use fake-gcs-server.

use super::crc32c::Crc32c;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What to do to the next chunk PUT or download.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: this request goes through.
    Pass,
    /// Keep only the first `n` bytes of the chunk and answer 308 with that.
    KeepOnly(usize),
    /// Keep the first `n` bytes and close the connection without an answer.
    BreakAfter(usize),
    /// Answer this status, keeping nothing.
    Status(u16),
    /// (Downloads) send only `n` bytes of the body, then close.
    CutAt(usize),
    /// (Uploads) store the object with its first byte changed.
    Damage,
}

/// One request as seen.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Vec<u8>>,
    pub generation: u64,
    /// The open session: object name, bytes kept, declared CRC-32C.
    pub session: Option<(String, Vec<u8>, Option<String>)>,
    pub faults: VecDeque<Fault>,
    pub seen: Vec<Seen>,
    pub cancelled: u32,
}

pub struct FakeGcs {
    pub endpoint: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let base = endpoint.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve(stream, &shared, &base);
            }
        });
        FakeGcs { endpoint, state }
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    pub fn object(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().objects.get(name).cloned()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}

fn respond(mut stream: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn crc_b64(data: &[u8]) -> String {
    let mut c = Crc32c::new();
    c.update(data);
    c.to_base64()
}

fn object_json(name: &str, data: &[u8], generation: u64) -> Vec<u8> {
    serde_json::json!({
        "kind": "storage#object", "name": name, "size": data.len().to_string(),
        "generation": generation.to_string(), "updated": "2026-01-02T03:04:05.678Z",
        "crc32c": crc_b64(data),
    })
    .to_string()
    .into_bytes()
}

fn query_value(target: &str, name: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn serve(stream: TcpStream, shared: &Mutex<State>, base: &str) {
    let Some(req) = read_request(&stream) else {
        return;
    };
    let mut st = shared.lock().unwrap();
    st.seen.push(req.clone());
    let path = req.target.split('?').next().unwrap_or("").to_string();
    match (req.method.as_str(), path.as_str()) {
        ("POST", p) if p.starts_with("/upload/storage/v1/b/") => {
            upload_start(&mut st, &req, &stream, base)
        }
        ("PUT", "/upload/session") => chunk(&mut st, &req, &stream),
        ("DELETE", "/upload/session") => {
            st.session = None;
            st.cancelled += 1;
            respond(&stream, "499 Client Closed Request", &[], b"");
        }
        ("GET", p) if p.ends_with("/o") => list(&st, &req, &stream),
        ("GET", p) if p.starts_with("/storage/v1/b/") => download(&mut st, &req, &stream, p),
        ("DELETE", p) if p.starts_with("/storage/v1/b/") => {
            let name = percent_decode(p.rsplit('/').next().unwrap());
            match st.objects.remove(&name) {
                Some(_) => respond(&stream, "204 No Content", &[], b""),
                None => respond(
                    &stream,
                    "404 Not Found",
                    &[],
                    br#"{"error":{"code":404,"message":"No such object: b/k"}}"#,
                ),
            }
        }
        _ => respond(&stream, "400 Bad Request", &[], b"unexpected request"),
    }
}

fn upload_start(st: &mut State, req: &Seen, stream: &TcpStream, base: &str) {
    let name = query_value(&req.target, "name").unwrap();
    match query_value(&req.target, "uploadType").as_deref() {
        Some("media") => {
            let mut data = req.body.clone();
            if matches!(st.faults.front(), Some(Fault::Damage)) {
                st.faults.pop_front();
                data[0] ^= 1;
            }
            st.generation += 1;
            let answer = object_json(&name, &data, st.generation);
            st.objects.insert(name, data);
            respond(stream, "200 OK", &[], &answer);
        }
        Some("resumable") => {
            let meta: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let declared = meta["crc32c"].as_str().map(str::to_string);
            st.session = Some((name, Vec::new(), declared));
            let location = format!("{base}/upload/session?upload_id=SECRET-SESSION");
            respond(stream, "200 OK", &[("Location", location)], b"");
        }
        _ => respond(stream, "400 Bad Request", &[], b"uploadType"),
    }
}

/// `bytes A-B/T`, `bytes */T`: (first, last) and total.
fn content_range(v: &str) -> (Option<(u64, u64)>, Option<u64>) {
    let (range, total) = v.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
    let total = total.parse().ok();
    let range = range
        .split_once('-')
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()));
    (range, total)
}

fn chunk(st: &mut State, req: &Seen, stream: &TcpStream) {
    let fault = st.faults.pop_front();
    let (range, total) = content_range(req.header("content-range").unwrap());
    let Some((name, mut kept, declared)) = st.session.take() else {
        return respond(stream, "404 Not Found", &[], b"no session");
    };
    if let Some((first, last)) = range {
        assert_eq!(
            last + 1 - first,
            req.body.len() as u64,
            "Content-Range and body disagree"
        );
        assert_eq!(first, kept.len() as u64, "chunk sent from the wrong offset");
        let take = match &fault {
            Some(Fault::KeepOnly(n)) | Some(Fault::BreakAfter(n)) => *n,
            Some(Fault::Status(_)) => 0,
            _ => req.body.len(),
        };
        kept.extend_from_slice(&req.body[..take]);
    }
    match fault {
        Some(Fault::BreakAfter(_)) => {
            st.session = Some((name, kept, declared));
            return; // the connection closes unanswered
        }
        Some(Fault::Status(code)) => {
            st.session = Some((name, kept, declared));
            return respond(stream, &format!("{code} Oops"), &[], b"{}");
        }
        _ => {}
    }
    if total == Some(kept.len() as u64) {
        if declared.is_some_and(|d| d != crc_b64(&kept)) {
            return respond(
                stream,
                "400 Bad Request",
                &[],
                br#"{"error":{"code":400,"message":"crc32c mismatch"}}"#,
            );
        }
        if matches!(fault, Some(Fault::Damage)) {
            kept[0] ^= 1;
        }
        st.generation += 1;
        let answer = object_json(&name, &kept, st.generation);
        st.objects.insert(name, kept);
        return respond(stream, "200 OK", &[], &answer);
    }
    let range = (!kept.is_empty()).then(|| ("Range", format!("bytes=0-{}", kept.len() - 1)));
    st.session = Some((name, kept, declared));
    respond(stream, "308 Resume Incomplete", range.as_slice(), b"");
}

/// objects.list, two items a page, with GCS's `prefix`, `delimiter` and `pageToken`.
fn list(st: &State, req: &Seen, stream: &TcpStream) {
    let prefix = query_value(&req.target, "prefix").unwrap_or_default();
    let delimiter = query_value(&req.target, "delimiter");
    let after = query_value(&req.target, "pageToken").unwrap_or_default();
    let mut items = Vec::new();
    let mut prefixes = std::collections::BTreeSet::new();
    for (name, data) in st.objects.range(after..) {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        match delimiter.as_deref().and_then(|d| rest.find(d)) {
            Some(i) => drop(prefixes.insert(format!("{prefix}{}", &rest[..=i]))),
            None => items.push(
                serde_json::from_slice::<serde_json::Value>(&object_json(name, data, 1)).unwrap(),
            ),
        }
    }
    let next = items
        .get(2)
        .map(|i| i["name"].as_str().unwrap().to_string());
    items.truncate(2);
    let mut page =
        serde_json::json!({"kind": "storage#objects", "items": items, "prefixes": prefixes});
    if let Some(n) = next {
        page["nextPageToken"] = n.into();
    }
    respond(stream, "200 OK", &[], page.to_string().as_bytes());
}

fn download(st: &mut State, req: &Seen, stream: &TcpStream, path: &str) {
    let name = percent_decode(path.rsplit('/').next().unwrap());
    let Some(data) = st.objects.get(&name).cloned() else {
        return respond(stream, "404 Not Found", &[], br#"{"error":{"code":404,"message":"No such object: b/k","errors":[{"reason":"notFound"}]}}"#);
    };
    if query_value(&req.target, "alt").as_deref() != Some("media") {
        return respond(
            stream,
            "200 OK",
            &[],
            &object_json(&name, &data, st.generation),
        );
    }
    let from: usize = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or(0);
    let headers = [
        ("x-goog-generation", st.generation.to_string()),
        ("x-goog-hash", format!("crc32c={}", crc_b64(&data))),
        ("x-goog-hash", "md5=AAAAAAAAAAAAAAAAAAAAAA==".to_string()),
    ];
    let status = if from > 0 {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let body = &data[from..];
    match st.faults.pop_front() {
        Some(Fault::CutAt(n)) => {
            let mut s = stream;
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body[..n]);
        }
        Some(Fault::Damage) => {
            let mut bad = body.to_vec();
            bad[0] ^= 1;
            respond(stream, status, &headers, &bad);
        }
        _ => respond(stream, status, &headers, body),
    }
}
