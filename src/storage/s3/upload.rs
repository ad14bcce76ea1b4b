//! Storing a body in S3 without holding it in memory.
//!
//! S3 needs each request's length, and with a signed payload its SHA-256, before the body.
//! Pass one reads the source to learn the total length and the SHA-256 of every part-sized
//! slice (32 bytes a part); pass two reads it again and streams it: as one PutObject when it
//! fits in one part, else as a multipart upload whose parts are slices of the same stream.
//! Memory is one read buffer, whatever the object's size. A failed multipart upload is
//! aborted so no orphan parts remain.

use super::http::{Body, Call, Client};
use super::{sign, xml};
use crate::storage::{BodySource, Op, PartBuffer, PartBuffers, StorageError, read_full};
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What pass one learned about a body.
#[derive(Debug, PartialEq)]
pub struct BodyDigest {
    /// Total length in bytes.
    pub len: u64,
    /// SHA-256 of each `part_size` slice, in order (one entry for a body of at most one part).
    pub part_hashes: Vec<[u8; 32]>,
    /// MD5 of a body of one part: what S3 returns as the ETag of a single PutObject.
    pub md5: Option<[u8; 16]>,
}

/// Pass one: reads `source` once, hashing each `part_size` slice.
pub fn digest(
    source: &dyn BodySource,
    part_size: u64,
    key: &str,
) -> Result<BodyDigest, StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    let mut hashes = Vec::new();
    let mut hasher = Sha256::new();
    let mut md5 = Some(md5::Md5::new());
    let mut in_part = 0u64;
    let mut len = 0u64;
    source
        .for_each_chunk(&mut |mut data| {
            if let Some(m) = md5.as_mut() {
                if len + data.len() as u64 > part_size {
                    md5 = None;
                } else {
                    md5::Digest::update(m, data);
                }
            }
            while !data.is_empty() {
                let take = (part_size - in_part).min(data.len() as u64) as usize;
                hasher.update(&data[..take]);
                in_part += take as u64;
                len += take as u64;
                data = &data[take..];
                if in_part == part_size {
                    hashes.push(hasher.finalize_reset().into());
                    in_part = 0;
                }
            }
            Ok(())
        })
        .map_err(io_err)?;
    if in_part > 0 || hashes.is_empty() {
        hashes.push(hasher.finalize().into());
    }
    Ok(BodyDigest {
        len,
        md5: md5.map(|m| md5::Digest::finalize(m).into()),
        part_hashes: hashes,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Headers every upload carries (storage class, server-side encryption, Object Lock); SSE-C's
/// are added to every call that needs them when it is signed.
fn upload_headers(client: &Client) -> Vec<(String, String)> {
    let mut h = vec![(
        "x-amz-storage-class".to_string(),
        client.cfg.storage_class.clone(),
    )];
    if let Some(lock) = &client.cfg.object_lock {
        let until =
            crate::time::UtcTime(crate::time::UtcTime::now().0 + lock.period.as_secs() as i64);
        h.push(("x-amz-object-lock-mode".into(), lock.mode.clone()));
        h.push((
            "x-amz-object-lock-retain-until-date".into(),
            until.rfc3339(),
        ));
    }
    // With a customer key the algorithm goes in SSE-C's own header instead (as in WAL-G).
    if let Some(sse) = client
        .cfg
        .sse
        .as_ref()
        .filter(|_| client.cfg.sse_customer_key.is_none())
    {
        h.push(("x-amz-server-side-encryption".into(), sse.clone()));
        if let Some(id) = &client.cfg.sse_kms_id {
            h.push((
                "x-amz-server-side-encryption-aws-kms-key-id".into(),
                id.clone(),
            ));
        }
    }
    h
}

/// Stores `source` under the full key `key`; returns its length.
pub fn put(client: &Client, key: &str, source: &dyn BodySource) -> Result<u64, StorageError> {
    let part_size = client.cfg.part_size.max(5 << 20);
    let d = digest(source, part_size, key)?;
    if d.part_hashes.len() == 1 {
        put_single(client, key, source, d.len, &d.part_hashes[0], d.md5)?;
    } else {
        put_multipart(client, key, source, part_size, &d)?;
    }
    Ok(d.len)
}

fn put_single(
    client: &Client,
    key: &str,
    source: &dyn BodySource,
    len: u64,
    hash: &[u8; 32],
    md5: Option<[u8; 16]>,
) -> Result<(), StorageError> {
    let mut call = Call::new("PUT", Op::PutObject, Some(key));
    call.headers = upload_headers(client);
    call.headers.extend(lock_md5(client, md5));
    call.payload_hash = hex(hash);
    let md5 = md5.filter(|_| etag_is_md5(client));
    client.retry(Op::PutObject, &mut || {
        let reader = source.open().map_err(|e| StorageError::body_read(key, e))?;
        let resp = client.send_once(&call, Body::Stream(reader, len))?;
        stored_etag(resp, Op::PutObject, key, md5.as_ref()).map(drop)
    })
}

/// Whether S3 makes a single PutObject's ETag the MD5 of its body: yes, unless the object
/// is encrypted with a KMS key.
fn etag_is_md5(client: &Client) -> bool {
    client.cfg.sse_customer_key.is_none()
        && !client
            .cfg
            .sse
            .as_deref()
            .is_some_and(|s| s.starts_with("aws:kms"))
}

/// `Content-MD5` of a single PutObject under Object Lock, which S3 requires there.
fn lock_md5(client: &Client, md5: Option<[u8; 16]>) -> Option<(String, String)> {
    use base64::Engine;
    let md5 = md5.filter(|_| client.cfg.object_lock.is_some())?;
    Some((
        "content-md5".into(),
        base64::engine::general_purpose::STANDARD.encode(md5),
    ))
}

/// The proof that an upload was stored: the answer's ETag, equal to the body's MD5 where
/// S3 defines it so (`md5`). A `200 OK` with an S3 `<Error>` document, without an ETag
/// (a proxy's page), or with another MD5 is not a success.
pub fn stored_etag(
    resp: ureq::Response,
    op: Op,
    key: &str,
    md5: Option<&[u8; 16]>,
) -> Result<String, StorageError> {
    let etag = resp.header("etag").map(str::to_string);
    let body = super::http::read_small_body(resp, op, key)?;
    if let Some(e) = xml::parse_error(&body) {
        return Err(StorageError::Remote {
            op,
            key: key.to_string(),
            status: 200,
            code: e.code,
            message: e.message,
        });
    }
    let unverified = |detail: String| StorageError::Unverified {
        op,
        key: key.to_string(),
        detail,
    };
    let Some(etag) = etag else {
        return Err(unverified(if body.is_empty() {
            "no ETag in the answer".into()
        } else {
            format!(
                "no ETag in the answer, whose body is {}",
                super::http::describe_body(&body)
            )
        }));
    };
    if let Some(md5) = md5 {
        let tag = etag.trim_matches('"');
        let sent = hex(md5);
        let is_md5 = tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit());
        if is_md5 && !tag.eq_ignore_ascii_case(&sent) {
            return Err(unverified(format!(
                "ETag {tag} is not the MD5 of what was sent ({sent})"
            )));
        }
    }
    Ok(etag)
}

fn put_multipart(
    client: &Client,
    key: &str,
    source: &dyn BodySource,
    part_size: u64,
    d: &BodyDigest,
) -> Result<(), StorageError> {
    in_multipart(client, key, |upload_id| {
        Ok((
            (),
            upload_parts(client, key, source, part_size, d, upload_id)?,
        ))
    })
}

fn upload_parts(
    client: &Client,
    key: &str,
    source: &dyn BodySource,
    part_size: u64,
    d: &BodyDigest,
    upload_id: &str,
) -> Result<Vec<(u32, String)>, StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    // One stream over the whole body: each part continues where the last one stopped. A
    // retry replaces it with a stream opened at its part, and the parts after it go on from
    // there. Never two streams at once: a stream holds arena buffers, and the plan gives the
    // upload exactly one stream's worth (a second open would wait for ever).
    let mut stream: Option<Box<dyn Read + '_>> = Some(source.open().map_err(io_err)?);
    let mut etags = Vec::with_capacity(d.part_hashes.len());
    for (i, hash) in d.part_hashes.iter().enumerate() {
        let offset = i as u64 * part_size;
        let len = part_size.min(d.len - offset);
        let number = (i + 1) as u32;
        let mut call = Call::new("PUT", Op::UploadPart, Some(key));
        call.query.push(("partNumber".into(), number.to_string()));
        call.query.push(("uploadId".into(), upload_id.to_string()));
        call.payload_hash = hex(hash);
        let mut attempt = 0u32;
        let resp = client.retry(Op::UploadPart, &mut || {
            attempt += 1;
            if attempt > 1 || stream.is_none() {
                stream = None;
                stream = Some(source.open_at(offset).map_err(io_err)?);
            }
            let body = stream.as_mut().expect("opened above").take(len);
            let resp = client.send_once(&call, Body::Stream(Box::new(body), len))?;
            stored_etag(resp, Op::UploadPart, key, None)
        })?;
        etags.push((number, resp));
    }
    Ok(etags)
}

/// Starts a multipart upload; returns its id.
fn create_multipart(client: &Client, key: &str) -> Result<String, StorageError> {
    let mut create = Call::new("POST", Op::CreateMultipartUpload, Some(key));
    create.query.push(("uploads".into(), String::new()));
    create.headers = upload_headers(client);
    client.send_and_parse(&create, &mut || Body::Empty, &xml::parse_initiate_multipart)
}

/// Completes a multipart upload from its parts' ETags (in part order).
fn complete_multipart(
    client: &Client,
    key: &str,
    upload_id: &str,
    etags: &[(u32, String)],
) -> Result<(), StorageError> {
    let body = xml::complete_multipart_body(etags);
    let mut complete = Call::new("POST", Op::CompleteMultipartUpload, Some(key));
    complete
        .query
        .push(("uploadId".into(), upload_id.to_string()));
    complete.payload_hash = sign::sha256_hex(body.as_bytes());
    let resp = client.send_with_retries(&complete, &mut || Body::Bytes(body.as_bytes()))?;
    // S3 may answer 200 and still report an error in the body.
    let answer = super::http::read_small_body(resp, Op::CompleteMultipartUpload, key)?;
    if let Some(e) = xml::parse_error(&answer) {
        return Err(StorageError::Remote {
            op: Op::CompleteMultipartUpload,
            key: key.to_string(),
            status: 200,
            code: e.code,
            message: e.message,
        });
    }
    Ok(())
}

/// Runs `parts` inside a multipart upload of `key`, completing it on success and aborting it
/// on failure so no orphan parts remain.
fn in_multipart<T>(
    client: &Client,
    key: &str,
    parts: impl FnOnce(&str) -> Result<(T, Vec<(u32, String)>), StorageError>,
) -> Result<T, StorageError> {
    let upload_id = create_multipart(client, key)?;
    let result = parts(&upload_id).and_then(|(value, mut etags)| {
        etags.sort_by_key(|(n, _)| *n);
        complete_multipart(client, key, &upload_id, &etags).map(|()| value)
    });
    if result.is_err() {
        let mut abort = Call::new("DELETE", Op::AbortMultipartUpload, Some(key));
        abort.query.push(("uploadId".into(), upload_id.clone()));
        if let Err(e) = client.send_with_retries(&abort, &mut || Body::Empty) {
            crate::warn!("could not abort multipart upload of {key}: {e}");
        }
    }
    result
}

/// Stores a stream that cannot be replayed: each part is read into a buffer lent by the
/// caller, hashed, and uploaded by one of `concurrency` part uploaders while the next part is
/// read. A stream that fits in one buffer becomes a single PutObject.
pub fn put_stream(
    client: &Client,
    key: &str,
    body: &mut dyn Read,
    parts: &dyn PartBuffers,
    concurrency: usize,
) -> Result<u64, StorageError> {
    let io_err = |e: io::Error| StorageError::body_read(key, e);
    let mut first = parts.lease_part().map_err(io_err)?;
    let size = parts.part_size();
    first.resize(size, 0);
    let n = read_full(body, &mut first[..]).map_err(io_err)?;
    if n < size {
        let bytes = &first[..n];
        let mut call = Call::new("PUT", Op::PutObject, Some(key));
        call.headers = upload_headers(client);
        call.payload_hash = sign::sha256_hex(bytes);
        let digest: [u8; 16] = md5::Md5::digest(bytes).into();
        call.headers.extend(lock_md5(client, Some(digest)));
        let md5 = Some(digest).filter(|_| etag_is_md5(client));
        client.retry(Op::PutObject, &mut || {
            let resp = client.send_once(&call, Body::Bytes(bytes))?;
            stored_etag(resp, Op::PutObject, key, md5.as_ref())
        })?;
        return Ok(n as u64);
    }

    in_multipart(client, key, |upload_id| {
        stream_parts(client, key, body, parts, concurrency, first, n, upload_id)
    })
}

/// What the part uploaders of one multipart upload share: the ETags of the parts stored so
/// far and the first failure, after which every uploader and the reader stop.
struct PartSink<'a> {
    client: &'a Client,
    key: &'a str,
    upload_id: &'a str,
    failed: AtomicBool,
    etags: Mutex<Vec<(u32, String)>>,
    first_error: Mutex<Option<StorageError>>,
}

impl PartSink<'_> {
    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Uploads part `number` (the first `len` bytes of `buf`), unless the upload has
    /// already failed; records its ETag or the failure.
    fn upload(&self, number: u32, buf: PartBuffer<'_>, len: usize) {
        if self.has_failed() {
            return;
        }
        let bytes = &buf[..len];
        let mut call = Call::new("PUT", Op::UploadPart, Some(self.key));
        call.query.push(("partNumber".into(), number.to_string()));
        call.query
            .push(("uploadId".into(), self.upload_id.to_string()));
        call.payload_hash = sign::sha256_hex(bytes);
        let sent = self.client.retry(Op::UploadPart, &mut || {
            let resp = self.client.send_once(&call, Body::Bytes(bytes))?;
            stored_etag(resp, Op::UploadPart, self.key, None)
        });
        match sent {
            Ok(tag) => lock(&self.etags).push((number, tag)),
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

/// The multipart body of `put_stream`: reader on this thread, part uploaders beside it.
#[allow(clippy::too_many_arguments)]
fn stream_parts(
    client: &Client,
    key: &str,
    body: &mut dyn Read,
    parts: &dyn PartBuffers,
    concurrency: usize,
    first: PartBuffer<'_>,
    first_len: usize,
    upload_id: &str,
) -> Result<(u64, Vec<(u32, String)>), StorageError> {
    let sink = PartSink {
        client,
        key,
        upload_id,
        failed: AtomicBool::new(false),
        etags: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
    };
    let total = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<PartJob<'_>>(1);
        let mut handles = Vec::new();
        for i in 0..concurrency.max(1) {
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
                    key: key.to_string(),
                    source: e,
                })?;
            handles.push(h);
        }
        drop(rx);
        let outcome = feed_parts(body, parts, &sink, &tx, first, first_len);
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
    let etags = sink.etags.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((total, etags))
}

/// The reader's side of `stream_parts`: fills leased buffers from `body` and hands them to
/// the uploaders until the stream ends or an upload fails; returns the bytes read.
fn feed_parts<'b>(
    body: &mut dyn Read,
    parts: &'b dyn PartBuffers,
    sink: &PartSink<'_>,
    tx: &crossbeam_channel::Sender<PartJob<'b>>,
    first: PartBuffer<'b>,
    first_len: usize,
) -> Result<u64, StorageError> {
    let key = sink.key;
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
        if number > 10_000 {
            return Err(StorageError::Protocol {
                op: Op::UploadPart,
                key: key.to_string(),
                detail: "more than 10000 parts; raise the part size".into(),
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

    #[test]
    fn digest_splits_parts() {
        let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let d = digest(&BytesBody(&data), 5 << 20, "k").unwrap();
        assert_eq!(d.len, data.len() as u64);
        assert_eq!(d.part_hashes.len(), 3);
        let expect: [u8; 32] = Sha256::digest(&data[5 << 20..10 << 20]).into();
        assert_eq!(d.part_hashes[1], expect);
        let last: [u8; 32] = Sha256::digest(&data[10 << 20..]).into();
        assert_eq!(d.part_hashes[2], last);
    }

    #[test]
    fn digest_exact_and_empty() {
        let data = vec![1u8; 5 << 20];
        assert_eq!(
            digest(&BytesBody(&data), 5 << 20, "k")
                .unwrap()
                .part_hashes
                .len(),
            1
        );
        let empty = digest(&BytesBody(b""), 5 << 20, "k").unwrap();
        assert_eq!(empty.len, 0);
        assert_eq!(hex(&empty.part_hashes[0]), super::super::http::EMPTY_SHA256);
    }
}
