//! A fault-injecting HTTP proxy between wal-rus and s3s-fs.
//!
//! Real networks fail in ways a well-behaved test server never does: a 503 now and then,
//! a connection reset half-way through an upload or a download, a server that stops
//! sending, a body cut short, a byte changed on the way, a proxy that answers `200 OK`
//! with an error page. This proxy sits on loopback in front of the S3 server and does each
//! of these to a chosen share of requests, picked by a fixed sequence so a failing run can
//! be repeated. Every connection carries one request (`Connection: close` both ways), so the
//! proxy needs to understand only request and response heads. SigV4 signs the Host header
//! as the client sent it, and the proxy forwards it unchanged, so signatures still verify.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `503 Slow Down` with S3's error document, after reading the request.
    Error503,
    /// `500 Internal Error` with S3's error document.
    Error500,
    /// The connection is closed after half of the request body (uploads only).
    ResetUpload,
    /// The connection is closed after half of the response body (downloads only).
    ResetDownload,
    /// Half of the response body, then silence for the stall time, then close.
    Stall,
    /// The response body cut short by a few bytes, then close.
    Truncate,
    /// One byte of the response body changed.
    Flip,
    /// `200 OK` with an S3 `<Error>` body and no ETag, without forwarding (uploads).
    Ok200ErrorBody,
    /// `200 OK` with an HTML page and no ETag, without forwarding (uploads).
    Ok200Html,
}

impl Fault {
    /// Every fault, for matrices.
    pub const ALL: [Fault; 9] = [
        Fault::Error503,
        Fault::Error500,
        Fault::ResetUpload,
        Fault::ResetDownload,
        Fault::Stall,
        Fault::Truncate,
        Fault::Flip,
        Fault::Ok200ErrorBody,
        Fault::Ok200Html,
    ];

    /// Whether the fault can be done to a request with this method.
    fn applies(self, method: &str, has_body: bool) -> bool {
        match self {
            Fault::Error503 | Fault::Error500 => true,
            Fault::ResetUpload => has_body,
            Fault::ResetDownload | Fault::Stall | Fault::Truncate | Fault::Flip => method == "GET",
            Fault::Ok200ErrorBody | Fault::Ok200Html => method == "PUT",
        }
    }
}

/// What to do to which requests.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Faults with their share of applicable requests, in per mille, and the most times
    /// each may happen (`None`: no limit).
    pub faults: Vec<(Fault, u32, Option<u32>)>,
    /// Where the sequence that picks the requests starts (0..1000).
    pub seed: u64,
    /// How long a stalled response stays silent before the proxy closes it.
    pub stall: Duration,
}

impl FaultPlan {
    /// No faults: a plain relay.
    pub fn none() -> FaultPlan {
        FaultPlan {
            faults: Vec::new(),
            seed: 1,
            stall: Duration::from_secs(30),
        }
    }

    /// `fault` on every applicable request, at most `limit` times.
    pub fn always(fault: Fault, limit: Option<u32>) -> FaultPlan {
        FaultPlan {
            faults: vec![(fault, 1000, limit)],
            ..FaultPlan::none()
        }
    }
}

/// What the proxy did, request by request.
#[derive(Default, Debug)]
pub struct Record {
    /// `(request line, fault)` for every request relayed.
    pub requests: Vec<(String, Option<Fault>)>,
    /// Every request's head: its request line and its header lines, as sent.
    pub heads: Vec<(String, Vec<String>)>,
}

impl Record {
    /// How many times `fault` was done.
    pub fn count(&self, fault: Fault) -> usize {
        self.requests
            .iter()
            .filter(|(_, f)| *f == Some(fault))
            .count()
    }
}

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<(FaultPlan, u64, Vec<u32>)>,
    record: Mutex<Record>,
    stop: AtomicBool,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (the S3 server's address) with `plan`.
    pub fn start(upstream: SocketAddr, plan: FaultPlan) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let addr = listener.local_addr().unwrap();
        let seed = plan.seed % 1000;
        let used = vec![0; plan.faults.len()];
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new((plan, seed, used)),
            record: Mutex::new(Record::default()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = relay(&s, conn);
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            shared,
            addr,
        }
    }

    /// Replaces the plan (and resets its counters).
    pub fn set_plan(&self, plan: FaultPlan) {
        let seed = plan.seed % 1000;
        let used = vec![0; plan.faults.len()];
        *self.shared.plan.lock().unwrap() = (plan, seed, used);
    }

    /// What happened so far; the record is emptied.
    pub fn take_record(&self) -> Record {
        std::mem::take(&mut *self.shared.record.lock().unwrap())
    }

    /// `env` with `AWS_ENDPOINT` pointed at the proxy.
    pub fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                if k == "AWS_ENDPOINT" {
                    (k.clone(), self.endpoint.clone())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Picks the fault for one request, if any.
fn pick(shared: &Shared, method: &str, has_body: bool) -> Option<Fault> {
    let mut guard = shared.plan.lock().unwrap();
    let (plan, state, used) = &mut *guard;
    // A Weyl sequence rather than a random one: every residue of 1000 comes once per 1000
    // requests, so even a short run sees each fault at close to its share.
    *state = (*state + 617) % 1000;
    let mut roll = *state as u32;
    for (i, (fault, share, limit)) in plan.faults.iter().enumerate() {
        if !fault.applies(method, has_body) {
            continue;
        }
        if roll < *share {
            if limit.is_some_and(|l| used[i] >= l) {
                return None;
            }
            used[i] += 1;
            return Some(*fault);
        }
        roll -= share;
    }
    None
}

/// A message head: the start line, the headers as read, and the content length.
struct Head {
    start: String,
    lines: Vec<String>,
    length: Option<u64>,
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut lines = Vec::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
        if lower.starts_with("connection:") {
            continue;
        }
        lines.push(line);
    }
    Ok(Some(Head {
        start: start.trim_end().to_string(),
        lines,
        length,
    }))
}

/// A request's start line, header lines (`Name: value\r\n`) and body.
pub type Request = (String, Vec<String>, Vec<u8>);

/// One request as a small loopback server in a test reads it (the body by `Content-Length`).
pub fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some(head) = read_head(r)? else {
        return Ok(None);
    };
    let mut body = vec![0; head.length.unwrap_or(0) as usize];
    r.read_exact(&mut body)?;
    Ok(Some((head.start, head.lines, body)))
}

fn write_head(w: &mut impl Write, head: &Head) -> std::io::Result<()> {
    let mut out = format!("{}\r\n", head.start);
    for l in &head.lines {
        out.push_str(l);
    }
    out.push_str("Connection: close\r\n\r\n");
    w.write_all(out.as_bytes())
}

fn answer(w: &mut impl Write, status: &str, body: &str, content_type: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn s3_error(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
    )
}

fn relay(shared: &Shared, client: TcpStream) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let Some(req) = read_head(&mut from_client)? else {
        return Ok(());
    };
    let method = req.start.split(' ').next().unwrap_or("").to_string();
    let body_len = req.length.unwrap_or(0);
    let fault = pick(shared, &method, body_len > 0);
    {
        let mut record = shared.record.lock().unwrap();
        record.requests.push((req.start.clone(), fault));
        let lines = req.lines.iter().map(|l| l.trim_end().to_string()).collect();
        record.heads.push((req.start.clone(), lines));
    }
    let drain =
        |r: &mut BufReader<TcpStream>| std::io::copy(&mut r.take(body_len), &mut std::io::sink());
    match fault {
        Some(Fault::Error503) => {
            drain(&mut from_client)?;
            return answer(
                &mut to_client,
                "503 Slow Down",
                &s3_error("SlowDown"),
                "application/xml",
            );
        }
        Some(Fault::Error500) => {
            drain(&mut from_client)?;
            return answer(
                &mut to_client,
                "500 Internal Server Error",
                &s3_error("InternalError"),
                "application/xml",
            );
        }
        Some(Fault::Ok200ErrorBody) => {
            drain(&mut from_client)?;
            return answer(
                &mut to_client,
                "200 OK",
                &s3_error("InternalError"),
                "application/xml",
            );
        }
        Some(Fault::Ok200Html) => {
            drain(&mut from_client)?;
            return answer(
                &mut to_client,
                "200 OK",
                "<html><body><h1>Welcome to the gateway</h1></body></html>",
                "text/html",
            );
        }
        Some(Fault::ResetUpload) => {
            std::io::copy(
                &mut (&mut from_client).take(body_len / 2),
                &mut std::io::sink(),
            )?;
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let upstream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    let mut to_up = upstream.try_clone()?;
    write_head(&mut to_up, &req)?;
    std::io::copy(&mut (&mut from_client).take(body_len), &mut to_up)?;
    let mut from_up = BufReader::new(upstream);
    let Some(resp) = read_head(&mut from_up)? else {
        return Ok(());
    };
    write_head(&mut to_client, &resp)?;
    let len = resp.length.unwrap_or(0);
    let ok = resp.start.contains(" 200 ") || resp.start.contains(" 206 ");
    let cut = match fault {
        Some(Fault::ResetDownload | Fault::Stall) if ok && len > 1 => Some(len / 2),
        Some(Fault::Truncate) if ok && len > 8 => Some(len - 7),
        _ => None,
    };
    match cut {
        Some(at) => {
            std::io::copy(&mut (&mut from_up).take(at), &mut to_client)?;
            to_client.flush()?;
            if fault == Some(Fault::Stall) {
                let deadline = std::time::Instant::now() + shared.plan.lock().unwrap().0.stall;
                while std::time::Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = to_client.shutdown(Shutdown::Both);
        }
        None if fault == Some(Fault::Flip) && ok && len > 0 => {
            let flip_at = len / 2;
            std::io::copy(&mut (&mut from_up).take(flip_at), &mut to_client)?;
            let mut b = [0u8; 1];
            from_up.read_exact(&mut b)?;
            to_client.write_all(&[b[0] ^ 0x20])?;
            std::io::copy(&mut from_up, &mut to_client)?;
        }
        None => {
            std::io::copy(&mut from_up, &mut to_client)?;
        }
    }
    Ok(())
}
