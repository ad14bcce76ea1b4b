//! Storing a body in parts, the same for every cloud that stages parts (S3's multipart
//! uploads, Azure's blocks).
//!
//! A replayable body ([`BodySource`]) is read twice: [`digest`] learns its length, the
//! digest of every part-sized slice and the MD5 of the whole, and a second read streams it
//! ([`open_at`] starts a retried part mid-body). A stream that cannot be read twice is cut
//! into buffers lent by the caller ([`stream_parts`]): the reader fills one while up to
//! `concurrency` uploaders send the others, and waits when every buffer is out, so memory
//! is what the plan gave, whatever the object's size.

use crate::storage::{BodySource, Op, PartBuffer, PartBuffers, StorageError, read_full};
use md5::Digest;
use md5::digest;
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the first pass learned about a body.
#[derive(Debug, PartialEq)]
pub struct BodyDigest<P> {
    /// Total length in bytes.
    pub len: u64,
    /// The digest of each `part_size` slice, in order (one entry for a body of at most one
    /// part, an empty body included).
    pub parts: Vec<P>,
    /// MD5 of the whole body.
    pub md5: [u8; 16],
}

/// Pass one: reads `source` once, hashing each `part_size` slice with `H` and the whole
/// with MD5.
pub fn digest<H: Digest + digest::FixedOutputReset>(
    source: &dyn BodySource,
    part_size: u64,
    key: &str,
) -> Result<BodyDigest<digest::Output<H>>, StorageError> {
    let mut parts = Vec::new();
    let mut hasher = H::new();
    let mut whole = md5::Md5::new();
    let mut in_part = 0u64;
    let mut len = 0u64;
    source
        .for_each_chunk(&mut |mut data| {
            whole.update(data);
            while !data.is_empty() {
                let take = (part_size - in_part).min(data.len() as u64) as usize;
                Digest::update(&mut hasher, &data[..take]);
                in_part += take as u64;
                len += take as u64;
                data = &data[take..];
                if in_part == part_size {
                    parts.push(hasher.finalize_reset());
                    in_part = 0;
                }
            }
            Ok(())
        })
        .map_err(|e| StorageError::body_read(key, e))?;
    if in_part > 0 || parts.is_empty() {
        parts.push(hasher.finalize());
    }
    Ok(BodyDigest {
        len,
        parts,
        md5: whole.finalize().into(),
    })
}

/// Opens the source and skips to `offset` (used to start a part's retry mid-stream).
pub fn open_at(source: &dyn BodySource, offset: u64) -> io::Result<Box<dyn Read + '_>> {
    let mut r = source.open()?;
    let skipped = io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
    if skipped != offset {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body shorter on second read",
        ));
    }
    Ok(r)
}

/// Sends one slice of a replayable body: its index from 0, a stream of exactly `len` bytes.
pub type SendSlice<'a> = dyn FnMut(usize, &mut dyn Read, u64) -> Result<String, StorageError> + 'a;

/// Retries one attempt as the store's client does.
pub type RetryPart<'a> =
    dyn Fn(&mut dyn FnMut() -> Result<String, StorageError>) -> Result<String, StorageError> + 'a;

/// Pass two of a body of several parts: sends the `part_size` slices of `source` (`len`
/// bytes in all) in order through `send`, each attempt under `retry`; returns what each
/// part is called (an ETag, a block id).
///
/// One stream over the whole body: each part continues where the last one stopped. A retry
/// replaces it with a stream opened at its part, and the parts after it go on from there.
/// Never two streams at once: a stream holds arena buffers, and the plan gives the upload
/// exactly one stream's worth (a second open would wait for ever).
pub fn replay_parts<'s>(
    source: &'s dyn BodySource,
    key: &str,
    (part_size, len): (u64, u64),
    retry: &RetryPart<'_>,
    send: &mut SendSlice<'_>,
) -> Result<Vec<String>, StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    let count = len.div_ceil(part_size).max(1);
    let mut stream: Option<Box<dyn Read + 's>> = Some(source.open().map_err(io_err)?);
    let mut names = Vec::with_capacity(count as usize);
    for i in 0..count {
        let offset = i * part_size;
        let part_len = part_size.min(len - offset);
        let mut attempt = 0u32;
        let name = retry(&mut || {
            attempt += 1;
            let mut reader = match stream.take() {
                Some(r) if attempt == 1 => r,
                other => {
                    // The broken stream goes before a new one is opened.
                    drop(other);
                    open_at(source, offset).map_err(io_err)?
                }
            };
            let sent = send(i as usize, &mut (&mut reader).take(part_len), part_len);
            stream = Some(reader);
            sent
        })?;
        names.push(name);
    }
    Ok(names)
}

/// Sends one part (number from 1, bytes) and returns what the store calls it (an ETag, a
/// block id).
pub type SendPart<'a> = dyn Fn(u32, &[u8]) -> Result<String, StorageError> + Sync + 'a;

/// How a streamed upload's parts go out.
pub struct PartPlan<'a> {
    /// The full key, for messages.
    pub key: &'a str,
    /// Most part uploads at once.
    pub concurrency: usize,
    /// Most parts the store accepts in one object.
    pub max_parts: u32,
    /// The operation that sends one part, for messages.
    pub op: Op,
}

/// What the part uploaders of one upload share: the names of the parts stored so far and
/// the first failure, after which every uploader and the reader stop.
struct PartSink<'a> {
    send: &'a SendPart<'a>,
    failed: AtomicBool,
    names: Mutex<Vec<(u32, String)>>,
    first_error: Mutex<Option<StorageError>>,
}

impl PartSink<'_> {
    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Sends part `number` (the first `len` bytes of `buf`) unless the upload has already
    /// failed; records its name or the failure.
    fn upload(&self, number: u32, buf: PartBuffer<'_>, len: usize) {
        if self.has_failed() {
            return;
        }
        match (self.send)(number, &buf[..len]) {
            Ok(name) => lock(&self.names).push((number, name)),
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                lock(&self.first_error).get_or_insert(e);
            }
        }
    }
}

/// Locks ignoring poison: what these locks guard is changed by one `push` or `insert`, so
/// a panicking holder cannot have left it half-changed.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A part on its way from the reader to an uploader: number, buffer, bytes used.
type PartJob<'a> = (u32, PartBuffer<'a>, usize);

/// The first buffer of a stream, filled: a stream that ends inside it is stored in one
/// request, without parts. Returns the buffer and the bytes in it.
pub fn first_part<'p>(
    key: &str,
    body: &mut dyn Read,
    parts: &'p dyn PartBuffers,
) -> Result<(PartBuffer<'p>, usize), StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    let mut first = parts.lease_part().map_err(io_err)?;
    first.resize(parts.part_size(), 0);
    let n = read_full(body, &mut first[..]).map_err(io_err)?;
    Ok((first, n))
}

/// Streams `body` as parts: `first` (holding `first_len` bytes) is part 1, each further
/// part is read into a buffer leased from `parts` and sent by one of `plan.concurrency`
/// uploaders through `send` while the next is read. Returns the bytes read and the parts'
/// names in part order.
pub fn stream_parts(
    plan: &PartPlan<'_>,
    body: &mut dyn Read,
    parts: &dyn PartBuffers,
    first: PartBuffer<'_>,
    first_len: usize,
    send: &SendPart<'_>,
) -> Result<(u64, Vec<(u32, String)>), StorageError> {
    let sink = PartSink {
        send,
        failed: AtomicBool::new(false),
        names: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
    };
    let total = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<PartJob<'_>>(1);
        let mut handles = Vec::new();
        for i in 0..plan.concurrency.max(1) {
            let rx = rx.clone();
            let sink = &sink;
            let h = std::thread::Builder::new()
                .name(format!("upload-part-{i}"))
                .stack_size(crate::sys::THREAD_STACK)
                .spawn_scoped(s, move || {
                    for (number, buf, len) in rx.iter() {
                        sink.upload(number, buf, len);
                    }
                })
                .map_err(|e| StorageError::Io {
                    op: Op::StartPartUploader,
                    key: plan.key.to_string(),
                    source: e,
                })?;
            handles.push(h);
        }
        drop(rx);
        let outcome = feed_parts(plan, body, parts, &sink, &tx, first, first_len);
        drop(tx);
        for h in handles {
            let _ = h.join();
        }
        outcome
    })?;
    if let Some(e) = sink
        .first_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(e);
    }
    let mut names = sink.names.into_inner().unwrap_or_else(|p| p.into_inner());
    names.sort_by_key(|(n, _)| *n);
    Ok((total, names))
}

/// The reader's side of `stream_parts`: fills leased buffers from `body` and hands them to
/// the uploaders until the stream ends or an upload fails; returns the bytes read.
fn feed_parts<'b>(
    plan: &PartPlan<'_>,
    body: &mut dyn Read,
    parts: &'b dyn PartBuffers,
    sink: &PartSink<'_>,
    tx: &crossbeam_channel::Sender<PartJob<'b>>,
    first: PartBuffer<'b>,
    first_len: usize,
) -> Result<u64, StorageError> {
    let key = plan.key;
    let mut total = first_len as u64;
    let mut number = 1u32;
    let _ = tx.send((number, first, first_len));
    while !sink.has_failed() {
        let mut buf = parts.lease_part().map_err(|e| StorageError::Io {
            op: Op::LeasePartBuffer,
            key: key.to_string(),
            source: e,
        })?;
        buf.resize(parts.part_size(), 0);
        let n = read_full(body, &mut buf[..]).map_err(|e| StorageError::body_read(key, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        if number > plan.max_parts {
            return Err(StorageError::Protocol {
                op: plan.op,
                key: key.to_string(),
                detail: format!("more than {} parts; raise the part size", plan.max_parts),
            });
        }
        total += n as u64;
        if tx.send((number, buf, n)).is_err() {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BytesBody;
    use sha2::Sha256;

    #[test]
    fn digest_splits_parts() {
        let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let d = digest::<Sha256>(&BytesBody(&data), 5 << 20, "k").unwrap();
        assert_eq!(d.len, data.len() as u64);
        assert_eq!(d.parts.len(), 3);
        assert_eq!(d.parts[1], Sha256::digest(&data[5 << 20..10 << 20]));
        assert_eq!(d.parts[2], Sha256::digest(&data[10 << 20..]));
        assert_eq!(d.md5, <[u8; 16]>::from(md5::Md5::digest(&data)));
    }

    #[test]
    fn digest_exact_and_empty() {
        let data = vec![1u8; 5 << 20];
        let d = digest::<md5::Md5>(&BytesBody(&data), 5 << 20, "k").unwrap();
        assert_eq!(d.parts.len(), 1);
        assert_eq!(d.parts[0].as_slice(), d.md5);
        let empty = digest::<Sha256>(&BytesBody(b""), 5 << 20, "k").unwrap();
        assert_eq!(empty.len, 0);
        assert_eq!(
            crate::storage::net::resume::hex(&empty.parts[0]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
