//! Storing a body as a block blob without holding it in memory, and without ever showing a
//! partial blob under the final name.
//!
//! A body of at most one block goes in one Put Blob; a larger one is staged as blocks (Put
//! Block), invisible until Put Block List commits them all at once. Every request carries
//! the MD5 of its body (`Content-MD5`), which Azure checks, and the commit carries the
//! whole blob's (`x-ms-blob-content-md5`), which Get Blob returns so the reader can check
//! what it received. A replayable body is read twice (`storage::net::parts::digest` learns
//! length and MD5s, then it is sent); a stream is cut into the caller's part buffers and
//! hashed as it is read. Staged blocks of an upload that fails are never committed; Azure
//! discards uncommitted blocks after a week.

use super::http::{Body, Call, Client, md5_base64};
use super::{MAX_BLOCKS, xml};
use crate::storage::net::parts::{self, PartPlan};
use crate::storage::{BodySource, Op, PartBuffers, StorageError};
use base64::Engine as _;
use md5::{Digest, Md5};
use std::io::{self, Read};

/// Stores `source` under the full name `blob`; returns its length.
pub fn put(client: &Client, blob: &str, source: &dyn BodySource) -> Result<u64, StorageError> {
    let block = client.cfg.block_size;
    let d = parts::digest::<Md5>(source, block, blob)?;
    if d.parts.len() == 1 {
        let call = put_blob_call(blob, &d.md5);
        client.retry(Op::AzPutBlob, &mut || {
            let reader = source
                .open()
                .map_err(|e| StorageError::body_read(blob, e))?;
            let resp = client.send_once(&call, Body::Stream(reader, d.len))?;
            stored(resp, Op::AzPutBlob, blob, Some(&d.md5))
        })?;
        return Ok(d.len);
    }
    let ids = BlockIds::new();
    let retry = |attempt: &mut dyn FnMut() -> Result<String, StorageError>| {
        client.retry(Op::AzPutBlock, attempt)
    };
    let names = parts::replay_parts(source, blob, (block, d.len), &retry, &mut |i, body, len| {
        let md5: [u8; 16] = d.parts[i].into();
        let id = ids.id(i as u32 + 1);
        let resp = client.send_once(
            &put_block_call(blob, &id, &md5),
            Body::Stream(Box::new(body), len),
        )?;
        stored(resp, Op::AzPutBlock, blob, Some(&md5)).map(|_| id)
    })?;
    commit(client, blob, &names, &d.md5)?;
    Ok(d.len)
}

/// Stores a stream that cannot be replayed: each block is read into a buffer lent by the
/// caller and staged by one of `concurrency` uploaders while the next is read. A stream
/// that fits in one buffer becomes a single Put Blob.
pub fn put_stream(
    client: &Client,
    blob: &str,
    body: &mut dyn Read,
    buffers: &dyn PartBuffers,
    concurrency: usize,
) -> Result<u64, StorageError> {
    let mut hashed = Hashing {
        inner: body,
        md5: Md5::new(),
    };
    let (first, n) = parts::first_part(blob, &mut hashed, buffers)?;
    if n < buffers.part_size() {
        let bytes = &first[..n];
        let md5: [u8; 16] = Md5::digest(bytes).into();
        let call = put_blob_call(blob, &md5);
        client.retry(Op::AzPutBlob, &mut || {
            let resp = client.send_once(&call, Body::Bytes(bytes))?;
            stored(resp, Op::AzPutBlob, blob, Some(&md5))
        })?;
        return Ok(n as u64);
    }
    let ids = BlockIds::new();
    let send = |number: u32, bytes: &[u8]| {
        let md5: [u8; 16] = Md5::digest(bytes).into();
        let id = ids.id(number);
        let call = put_block_call(blob, &id, &md5);
        client.retry(Op::AzPutBlock, &mut || {
            let resp = client.send_once(&call, Body::Bytes(bytes))?;
            stored(resp, Op::AzPutBlock, blob, Some(&md5))
        })?;
        Ok(id)
    };
    let plan = PartPlan {
        key: blob,
        concurrency,
        max_parts: MAX_BLOCKS,
        op: Op::AzPutBlock,
    };
    let (total, blocks) = parts::stream_parts(&plan, &mut hashed, buffers, first, n, &send)?;
    let ids: Vec<String> = blocks.into_iter().map(|(_, id)| id).collect();
    commit(client, blob, &ids, &hashed.md5.finalize().into())?;
    Ok(total)
}

/// A reader that hashes what passes through it.
struct Hashing<'a> {
    inner: &'a mut dyn Read,
    md5: Md5,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        Ok(n)
    }
}

/// The block ids of one upload: base64 of the same 30 characters, an upload's random tag
/// and the block's number, so every id of a blob has the same length (as Azure requires)
/// and two uploads of one name never take each other's blocks.
pub struct BlockIds {
    tag: u64,
}

impl Default for BlockIds {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockIds {
    /// Ids with a fresh random tag.
    pub fn new() -> BlockIds {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // Any tag will do: it only keeps concurrent uploads of one name apart.
            seed = (std::process::id() as u64 ^ crate::time::UtcTime::now().0 as u64).to_le_bytes();
        }
        BlockIds {
            tag: u64::from_le_bytes(seed),
        }
    }

    /// The id of block `number` (from 1).
    pub fn id(&self, number: u32) -> String {
        let raw = format!("walrus-{:016x}-{number:06}", self.tag);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// Put Blob of a whole block blob whose MD5 is `md5`.
fn put_blob_call<'a>(blob: &'a str, md5: &[u8; 16]) -> Call<'a> {
    let mut call = Call::new("PUT", Op::AzPutBlob, Some(blob));
    call.headers = vec![
        ("content-md5".into(), md5_base64(md5)),
        ("x-ms-blob-type".into(), "BlockBlob".into()),
    ];
    call
}

/// Put Block of block `id` whose MD5 is `md5`.
fn put_block_call<'a>(blob: &'a str, id: &str, md5: &[u8; 16]) -> Call<'a> {
    let mut call = Call::new("PUT", Op::AzPutBlock, Some(blob));
    call.query = vec![
        ("comp".into(), "block".into()),
        ("blockid".into(), id.to_string()),
    ];
    call.headers = vec![("content-md5".into(), md5_base64(md5))];
    call
}

/// Put Block List: makes the staged blocks `ids`, in order, the blob, with `md5` as the
/// whole blob's MD5.
fn commit(client: &Client, blob: &str, ids: &[String], md5: &[u8; 16]) -> Result<(), StorageError> {
    let body = xml::block_list_body(ids);
    let mut call = Call::new("PUT", Op::AzPutBlockList, Some(blob));
    call.query = vec![("comp".into(), "blocklist".into())];
    call.headers = vec![
        (
            "content-md5".into(),
            md5_base64(&Md5::digest(body.as_bytes()).into()),
        ),
        ("content-type".into(), "application/xml".into()),
        ("x-ms-blob-content-md5".into(), md5_base64(md5)),
    ];
    client.retry(Op::AzPutBlockList, &mut || {
        let resp = client.send_once(&call, Body::Bytes(body.as_bytes()))?;
        stored(resp, Op::AzPutBlockList, blob, None)
    })?;
    Ok(())
}

/// The proof that a write was stored: `201 Created` with an ETag (or, for a block, its
/// request id), and, where Azure echoes the body's MD5, the MD5 that was sent. Anything
/// else (a proxy's page, another MD5) is not a success.
fn stored(
    resp: ureq::Response,
    op: Op,
    blob: &str,
    md5: Option<&[u8; 16]>,
) -> Result<String, StorageError> {
    let status = resp.status();
    let echoed = resp.header("content-md5").map(str::to_string);
    let proof = resp
        .header("etag")
        .or_else(|| resp.header("x-ms-request-id"))
        .map(str::to_string);
    let body = crate::storage::net::read_small_body(resp, op, blob)?;
    let unverified = |detail: String| StorageError::Unverified {
        op,
        key: blob.to_string(),
        detail,
    };
    if status != 201 {
        return Err(unverified(format!(
            "HTTP {status} instead of 201 Created: {}",
            crate::storage::net::describe_body(&body)
        )));
    }
    let Some(proof) = proof else {
        return Err(unverified("no ETag or request id in the answer".into()));
    };
    if let (Some(sent), Some(echoed)) = (md5, echoed)
        && echoed.trim() != md5_base64(sent)
    {
        return Err(unverified(format!(
            "Content-MD5 {echoed} is not the MD5 of what was sent ({})",
            md5_base64(sent)
        )));
    }
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length_and_differ_per_upload() {
        let a = BlockIds::new();
        let ids: Vec<String> = [1, 2, 999, MAX_BLOCKS].iter().map(|n| a.id(*n)).collect();
        assert!(ids.iter().all(|id| id.len() == ids[0].len()), "{ids:?}");
        // 30 bytes encode to 40 base64 characters with no padding.
        assert_eq!(ids[0].len(), 40);
        assert!(!ids[0].contains('='));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&ids[2])
            .unwrap();
        assert!(String::from_utf8(raw).unwrap().ends_with("-000999"));
        assert_ne!(BlockIds::new().id(1), ids[0]);
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }
}
