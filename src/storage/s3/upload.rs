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
use crate::storage::net::parts::{self, PartPlan};
use crate::storage::{BodySource, Op, PartBuffers, StorageError};
use md5::Digest as _;
use sha2::Sha256;
use std::io::Read;

/// What pass one learned: length, SHA-256 of every part, MD5 of the whole.
type BodyDigest = parts::BodyDigest<sha2::digest::Output<Sha256>>;

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
    let d = parts::digest::<Sha256>(source, part_size, key)?;
    if d.parts.len() == 1 {
        put_single(client, key, source, d.len, &d.parts[0], d.md5)?;
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
    hash: &[u8],
    md5: [u8; 16],
) -> Result<(), StorageError> {
    let mut call = Call::new("PUT", Op::PutObject, Some(key));
    call.headers = upload_headers(client);
    call.headers.extend(lock_md5(client, Some(md5)));
    call.payload_hash = hex(hash);
    let md5 = Some(md5).filter(|_| etag_is_md5(client));
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
    let retry = |attempt: &mut dyn FnMut() -> Result<String, StorageError>| {
        client.retry(Op::UploadPart, attempt)
    };
    let etags = parts::replay_parts(
        source,
        key,
        (part_size, d.len),
        &retry,
        &mut |i, body, len| {
            let mut call = Call::new("PUT", Op::UploadPart, Some(key));
            call.query.push(("partNumber".into(), (i + 1).to_string()));
            call.query.push(("uploadId".into(), upload_id.to_string()));
            call.payload_hash = hex(&d.parts[i]);
            let resp = client.send_once(&call, Body::Stream(Box::new(body), len))?;
            stored_etag(resp, Op::UploadPart, key, None)
        },
    )?;
    Ok((1..).zip(etags).collect())
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
/// caller and uploaded by one of `concurrency` part uploaders while the next part is read
/// (`storage::net::parts`). A stream that fits in one buffer becomes a single PutObject.
pub fn put_stream(
    client: &Client,
    key: &str,
    body: &mut dyn Read,
    buffers: &dyn PartBuffers,
    concurrency: usize,
) -> Result<u64, StorageError> {
    let (first, n) = parts::first_part(key, body, buffers)?;
    if n < buffers.part_size() {
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
    let plan = PartPlan {
        key,
        concurrency,
        max_parts: 10_000,
        op: Op::UploadPart,
    };
    in_multipart(client, key, |upload_id| {
        let send = |number: u32, bytes: &[u8]| {
            let mut call = Call::new("PUT", Op::UploadPart, Some(key));
            call.query.push(("partNumber".into(), number.to_string()));
            call.query.push(("uploadId".into(), upload_id.to_string()));
            call.payload_hash = sign::sha256_hex(bytes);
            client.retry(Op::UploadPart, &mut || {
                let resp = client.send_once(&call, Body::Bytes(bytes))?;
                stored_etag(resp, Op::UploadPart, key, None)
            })
        };
        parts::stream_parts(&plan, body, buffers, first, n, &send)
    })
}
