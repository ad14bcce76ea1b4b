//! Storing a body in GCS without holding it in memory, and never as a partial object.
//!
//! A body of at most one chunk goes in one request (objects.insert, `uploadType=media`).
//! A larger one goes as a resumable upload: a session is opened, the body is sent in chunks
//! (multiples of 256 KiB, as GCS requires) with `Content-Range`, and the object exists only
//! once the chunk that names the total length has landed. A failed upload's session is
//! cancelled (DELETE on its URI), so nothing of it remains.
//!
//! GCS may keep less of a chunk than was sent: it answers 308 with the `Range` it has, and
//! the rest of the chunk is sent again from there. After a broken connection the session is
//! asked where it stands (an empty PUT with `Content-Range: bytes */…`) before resending.
//!
//! A replayable body (`put`) is read once for its length and CRC-32C, then streamed: the
//! resumable session declares the CRC-32C so GCS refuses a body that arrives different. A
//! stream (`put_stream`) goes through part buffers lent by the caller; its CRC-32C is
//! computed as it is read and compared with what GCS stored, and a mismatch deletes the
//! object rather than leave damaged data under the name.

use super::crc32c::Crc32c;
use super::http::{Body, Call, Client, stored_object};
use super::json::ObjectResource;
use crate::storage::{BodySource, Op, PartBuffer, PartBuffers, StorageError, read_full};
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// GCS's chunk granularity: every chunk but the last is a multiple of it.
pub const CHUNK_UNIT: u64 = 256 * 1024;

/// `size` rounded down to a whole number of chunk units, at least one.
pub fn chunk_size(size: u64) -> u64 {
    (size / CHUNK_UNIT).max(1) * CHUNK_UNIT
}

/// What pass one learned about a replayable body.
struct Digest {
    len: u64,
    crc: Crc32c,
}

fn digest(source: &dyn BodySource, key: &str) -> Result<Digest, StorageError> {
    let mut d = Digest {
        len: 0,
        crc: Crc32c::new(),
    };
    source
        .for_each_chunk(&mut |data| {
            d.crc.update(data);
            d.len += data.len() as u64;
            Ok(())
        })
        .map_err(|e| StorageError::body_read(key, e))?;
    Ok(d)
}

/// The proof that what GCS stored is what was sent: its CRC-32C.
fn verify(obj: &ObjectResource, op: Op, key: &str, crc: &Crc32c) -> Result<(), StorageError> {
    let sent = crc.to_base64();
    match &obj.crc32c {
        Some(stored) if *stored == sent => Ok(()),
        // An answer without checksums (trimmed by a proxy?) proves nothing either way; GCS
        // always sends one, so this is logged rather than failed.
        None => {
            crate::warn!("{op} {key}: the answer carries no CRC-32C to check the upload against");
            Ok(())
        }
        Some(stored) => Err(StorageError::Unverified {
            op,
            key: key.to_string(),
            detail: format!("GCS stored CRC-32C {stored}, but {sent} was sent"),
        }),
    }
}

/// objects.insert of a whole body in one request; `body` makes each attempt's body.
fn insert<'b>(
    client: &Client,
    key: &str,
    crc: &Crc32c,
    body: &mut dyn FnMut() -> Result<Body<'b>, StorageError>,
) -> Result<ObjectResource, StorageError> {
    let url = client.upload_url(&[("uploadType", "media"), ("name", key)]);
    let mut call = Call::new("POST", Op::GcsInsert, key, url);
    call.headers = client.csek_headers();
    call.headers
        .push(("content-type", "application/octet-stream".into()));
    client.retry(Op::GcsInsert, key, &mut || {
        let resp = client.send_once(&call, body()?)?;
        let obj = stored_object(resp, Op::GcsInsert, key)?;
        verify(&obj, Op::GcsInsert, key, crc)?;
        Ok(obj)
    })
}

/// Stores `source` under the full name `key`; returns its length.
pub fn put(client: &Client, key: &str, source: &dyn BodySource) -> Result<u64, StorageError> {
    let d = digest(source, key)?;
    let body_err = |e| StorageError::body_read(key, e);
    if d.len <= client.cfg.chunk_size {
        insert(client, key, &d.crc, &mut || {
            Ok(Body::Stream(source.open().map_err(body_err)?, d.len))
        })?;
        return Ok(d.len);
    }
    let session = Session::start(client, key, Some(&d))?;
    let chunk = chunk_size(client.cfg.chunk_size);
    let mut replay = Replay {
        source,
        stream: None,
        at: 0,
        key,
    };
    let sent = (|| {
        let mut start = 0;
        while start < d.len {
            let len = chunk.min(d.len - start);
            if let Some(obj) = session.send_chunk(start, len, Some(d.len), &mut replay)? {
                return verify(&obj, Op::GcsUploadChunk, key, &d.crc);
            }
            start += len;
        }
        Err(session.protocol("the last chunk was taken without finishing the upload"))
    })();
    if sent.is_err() {
        session.cancel();
    }
    sent.map(|()| d.len)
}

/// Where a chunk's bytes come from.
pub trait ChunkSource {
    /// A body of the `len` bytes at `pos` of the object.
    fn body(&mut self, pos: u64, len: u64) -> Result<Body<'_>, StorageError>;
}

/// A replayable body read as one stream, reopened where a chunk must be sent again. Never
/// two streams at once: a stream may hold arena buffers.
struct Replay<'a> {
    source: &'a dyn BodySource,
    stream: Option<Box<dyn Read + 'a>>,
    at: u64,
    key: &'a str,
}

impl ChunkSource for Replay<'_> {
    fn body(&mut self, pos: u64, len: u64) -> Result<Body<'_>, StorageError> {
        if self.stream.is_none() || self.at != pos {
            self.stream = None;
            let reopened = self
                .source
                .open_at(pos)
                .map_err(|e| StorageError::body_read(self.key, e))?;
            self.stream = Some(reopened);
        }
        self.at = pos + len;
        let stream = self.stream.as_mut().expect("opened above");
        Ok(Body::Stream(Box::new(stream.take(len)), len))
    }
}

/// A chunk in memory that starts at byte `start` of the object.
pub struct Slice<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// Where they start in the object.
    pub start: u64,
}

impl ChunkSource for Slice<'_> {
    fn body(&mut self, pos: u64, len: u64) -> Result<Body<'_>, StorageError> {
        let from = (pos - self.start) as usize;
        Ok(Body::Bytes(&self.data[from..from + len as usize]))
    }
}

/// Where a resumable upload stands after a request.
#[derive(Debug)]
pub enum Progress {
    /// The server holds the first `n` bytes and waits for more.
    Persisted(u64),
    /// The object is stored.
    Done(Box<ObjectResource>),
}

/// One resumable upload session.
pub struct Session<'c> {
    client: &'c Client,
    key: &'c str,
    /// The session URI: it authorizes the upload by itself, so it is never printed.
    url: String,
}

impl<'c> Session<'c> {
    /// Opens a session for `key`; with the body's digest, GCS is told the length and the
    /// CRC-32C and refuses a body that does not match them.
    fn start(
        client: &'c Client,
        key: &'c str,
        known: Option<&Digest>,
    ) -> Result<Session<'c>, StorageError> {
        let url = client.upload_url(&[("uploadType", "resumable"), ("name", key)]);
        let mut call = Call::new("POST", Op::GcsInsert, key, url);
        call.headers = client.csek_headers();
        call.headers
            .push(("content-type", "application/json; charset=UTF-8".into()));
        call.headers
            .push(("x-upload-content-type", "application/octet-stream".into()));
        let mut metadata = serde_json::json!({ "name": key });
        if let Some(d) = known {
            call.headers
                .push(("x-upload-content-length", d.len.to_string()));
            metadata["crc32c"] = d.crc.to_base64().into();
        }
        let metadata = metadata.to_string();
        let resp = client.send_with_retries(&call, &mut || Ok(Body::Bytes(metadata.as_bytes())))?;
        let location = resp.header("location").map(str::to_string);
        drop(resp.into_string());
        let url = location.ok_or_else(|| StorageError::Protocol {
            op: Op::GcsInsert,
            key: key.to_string(),
            detail: "the resumable upload was opened without a session URI (Location)".into(),
        })?;
        let downgrade = client.cfg.endpoint.starts_with("https://") && !url.starts_with("https://");
        if downgrade || !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(StorageError::Protocol {
                op: Op::GcsInsert,
                key: key.to_string(),
                detail: "the session URI is not an HTTPS URL".into(),
            });
        }
        Ok(Session { client, key, url })
    }

    fn protocol(&self, detail: &str) -> StorageError {
        StorageError::Protocol {
            op: Op::GcsUploadChunk,
            key: self.key.to_string(),
            detail: detail.to_string(),
        }
    }

    /// One PUT of `len` bytes from `pos` (`len == 0`: a status query, or the finishing
    /// request of a body that ended on a chunk boundary).
    fn put_range(
        &self,
        pos: u64,
        len: u64,
        total: Option<u64>,
        source: &mut dyn ChunkSource,
    ) -> Result<Progress, StorageError> {
        let total_text = total.map_or("*".to_string(), |t| t.to_string());
        let range = if len == 0 {
            format!("bytes */{total_text}")
        } else {
            format!("bytes {pos}-{}/{total_text}", pos + len - 1)
        };
        let mut call = Call::new("PUT", Op::GcsUploadChunk, self.key, self.url.clone());
        call.headers = self.client.csek_headers();
        call.headers.push(("content-range", range));
        let body = if len == 0 {
            Body::Empty
        } else {
            source.body(pos, len)?
        };
        let resp = self.client.send_once(&call, body)?;
        self.progress(resp)
    }

    /// Reads a chunk request's answer: 308 with the `Range` kept (none: nothing yet), or
    /// 200/201 with the stored object.
    fn progress(&self, resp: ureq::Response) -> Result<Progress, StorageError> {
        match resp.status() {
            308 => {
                let kept = match resp.header("range") {
                    None => 0,
                    Some(r) => parse_kept(r)
                        .ok_or_else(|| self.protocol(&format!("unreadable Range {r:?}")))?,
                };
                drop(resp.into_string());
                Ok(Progress::Persisted(kept))
            }
            200 | 201 => Ok(Progress::Done(Box::new(stored_object(
                resp,
                Op::GcsUploadChunk,
                self.key,
            )?))),
            s => Err(self.protocol(&format!("HTTP {s} to a chunk"))),
        }
    }

    /// Sends bytes `start..start + len` of the object, in as many requests as the server
    /// needs; `total` is the object's length when this is its last chunk. Returns the stored
    /// object after the last chunk.
    pub fn send_chunk(
        &self,
        start: u64,
        len: u64,
        total: Option<u64>,
        source: &mut dyn ChunkSource,
    ) -> Result<Option<ObjectResource>, StorageError> {
        let end = start + len;
        let last = total == Some(end);
        let max = self.client.cfg.max_retries;
        let (mut pos, mut failures, mut stalls) = (start, 0u32, 0u32);
        loop {
            let progress = match self.put_range(pos, end - pos, total, source) {
                Ok(p) => p,
                Err(e) if e.is_retryable() && failures < max => {
                    let delay = self.client.backoff(failures);
                    failures += 1;
                    crate::warn!(
                        "{e}; asking the upload session where it stands, retry {failures} of \
                         {max} in {} ms",
                        delay.as_millis()
                    );
                    std::thread::sleep(delay);
                    // The request may have landed in part or whole: ask before resending.
                    match self.put_range(end, 0, total.filter(|_| last), source) {
                        Ok(p) => p,
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            match progress {
                Progress::Done(obj) if last => return Ok(Some(*obj)),
                Progress::Done(_) => {
                    return Err(self.protocol("the upload finished before its last chunk"));
                }
                Progress::Persisted(kept) if kept == end && !last => return Ok(None),
                Progress::Persisted(kept) if kept < start || kept > end => {
                    return Err(self.protocol(&format!(
                        "the session holds {kept} bytes, outside this chunk's {start}..{end}"
                    )));
                }
                Progress::Persisted(kept) => {
                    if kept <= pos {
                        stalls += 1;
                        if stalls > max {
                            return Err(self.protocol(&format!(
                                "the session keeps no more than {kept} bytes however often \
                                 bytes {kept}..{end} are sent"
                            )));
                        }
                    }
                    pos = kept;
                }
            }
        }
    }

    /// Cancels the session so nothing of the upload remains; failures are only logged (an
    /// abandoned session expires by itself within a week and never becomes an object).
    pub fn cancel(&self) {
        let call = Call::new("DELETE", Op::GcsUploadChunk, self.key, self.url.clone());
        match self.client.send_once(&call, Body::Empty) {
            Ok(resp) => drop(resp.into_string()),
            // 499 is GCS's answer to a cancelled upload; 404/410: already gone.
            Err(StorageError::Remote {
                status: 499 | 404 | 410,
                ..
            }) => {}
            Err(e) => crate::warn!("could not cancel the resumable upload of {}: {e}", self.key),
        }
    }
}

/// The bytes kept, from a 308's `Range: bytes=0-N` (N + 1).
fn parse_kept(range: &str) -> Option<u64> {
    let last: u64 = range.trim().strip_prefix("bytes=0-")?.trim().parse().ok()?;
    last.checked_add(1)
}

/// Stores a stream that cannot be replayed: a stream that fits in one part buffer is one
/// objects.insert; a longer one is a resumable upload whose chunks are the part buffers,
/// uploaded in order by one uploader while the reader fills the next.
pub fn put_stream(
    client: &Client,
    key: &str,
    body: &mut dyn Read,
    parts: &dyn PartBuffers,
) -> Result<u64, StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    let size = chunk_size(parts.part_size() as u64) as usize;
    let mut first = parts.lease_part().map_err(io_err)?;
    first.resize(size, 0);
    let n = read_full(body, &mut first[..size]).map_err(io_err)?;
    let mut crc = Crc32c::new();
    crc.update(&first[..n]);
    if n < size {
        let bytes = &first[..n];
        insert(client, key, &crc, &mut || Ok(Body::Bytes(bytes)))?;
        return Ok(n as u64);
    }
    let session = Session::start(client, key, None)?;
    let sent = stream_chunks(&session, body, parts, size, (first, n), &mut crc).and_then(
        |(total, obj)| match verify(&obj, Op::GcsUploadChunk, key, &crc) {
            Ok(()) => Ok(total),
            Err(e) => {
                discard_damaged(client, key, &obj);
                Err(e)
            }
        },
    );
    if sent.is_err() {
        session.cancel();
    }
    sent
}

/// Deletes an object stored with other bytes than were sent (that generation only).
fn discard_damaged(client: &Client, key: &str, obj: &ObjectResource) {
    let generation = obj.generation.to_string();
    let url = client.object_url(key, &[("generation", &generation)]);
    let call = Call::new("DELETE", Op::GcsDelete, key, url);
    if let Err(e) = client.send_with_retries(&call, &mut || Ok(Body::Empty)) {
        crate::warn!("could not delete the damaged upload of {key}: {e}");
    }
}

/// A chunk on its way from the reader to the uploader: start, buffer, length, and the
/// object's total length when it is the last.
type ChunkJob<'a> = (u64, PartBuffer<'a>, usize, Option<u64>);

/// The resumable body of `put_stream`: reader on this thread, the uploader beside it.
/// Returns the length and the stored object.
fn stream_chunks(
    session: &Session<'_>,
    body: &mut dyn Read,
    parts: &dyn PartBuffers,
    size: usize,
    first: (PartBuffer<'_>, usize),
    crc: &mut Crc32c,
) -> Result<(u64, ObjectResource), StorageError> {
    let failed = AtomicBool::new(false);
    let outcome: Mutex<Option<Result<ObjectResource, StorageError>>> = Mutex::new(None);
    let total = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<ChunkJob<'_>>(1);
        let uploader = std::thread::Builder::new()
            .name("upload-chunks".into())
            .stack_size(crate::sys::THREAD_STACK)
            .spawn_scoped(s, {
                let (outcome, failed) = (&outcome, &failed);
                move || {
                    for (start, buf, len, total) in rx.iter() {
                        let mut slice = Slice {
                            data: &buf[..len],
                            start,
                        };
                        match session.send_chunk(start, len as u64, total, &mut slice) {
                            Ok(Some(obj)) => *lock(outcome) = Some(Ok(obj)),
                            Ok(None) => {}
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                *lock(outcome) = Some(Err(e));
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| StorageError::Io {
                op: Op::StartPartUploader,
                key: session.key.to_string(),
                source: e,
            })?;
        let read = feed_chunks(session.key, body, parts, size, first, crc, &failed, &tx);
        drop(tx);
        let _ = uploader.join();
        read
    })?;
    match outcome.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(Ok(obj)) => Ok((total, obj)),
        Some(Err(e)) => Err(e),
        None => Err(session.protocol("the upload ended without its last chunk")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reader's side of `stream_chunks`: fills leased buffers, hands each to the uploader
/// once the next one shows whether it was the last; returns the bytes read.
#[allow(clippy::too_many_arguments)]
fn feed_chunks<'b>(
    key: &str,
    body: &mut dyn Read,
    parts: &'b dyn PartBuffers,
    size: usize,
    first: (PartBuffer<'b>, usize),
    crc: &mut Crc32c,
    failed: &AtomicBool,
    tx: &crossbeam_channel::Sender<ChunkJob<'b>>,
) -> Result<u64, StorageError> {
    let (mut current, mut current_len) = first;
    let mut start = 0u64;
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(start);
        }
        let mut next = parts.lease_part().map_err(|e| StorageError::Io {
            op: Op::LeasePartBuffer,
            key: key.to_string(),
            source: e,
        })?;
        next.resize(size, 0);
        let n = read_full(body, &mut next[..size]).map_err(|e| StorageError::body_read(key, e))?;
        crc.update(&next[..n]);
        let end = start + current_len as u64;
        if n == 0 {
            let _ = tx.send((start, current, current_len, Some(end)));
            return Ok(end);
        }
        if tx.send((start, current, current_len, None)).is_err() {
            return Ok(end);
        }
        start = end;
        (current, current_len) = (next, n);
        if n < size {
            // A short read is the end of the stream: this one is the last.
            let end = start + n as u64;
            let _ = tx.send((start, current, current_len, Some(end)));
            return Ok(end);
        }
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
pub(super) mod tests;
