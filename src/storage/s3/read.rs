//! Streaming an object out of S3, resuming a broken body instead of failing the command.
//!
//! The reader knows the object's length and ETag from the first answer. If the connection
//! breaks, or ends before `Content-Length` bytes arrived, it asks again for the remaining
//! range with `If-Match` on the ETag (so a replaced object is never spliced onto the old
//! one), within the same retry budget as any other request.
//!
//! GetObject carries no checksum of its own, and not every compression has one (`none`,
//! LZMA-alone, brotli): a byte changed on the way would reach the restore unseen. Where S3
//! defines the ETag as the MD5 of the object (a single PUT without KMS or customer keys),
//! the reader hashes the body as it passes and fails at its end when the two differ.

use super::http::{Body, Call, Client};
use crate::storage::net::resume::{BodyReader, Check, Reopen, ResumingReader};
use crate::storage::{ObjectReader, Op, StorageError};
use md5::Digest;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The MD5 an answer's ETag stands for, when S3 defines it so: 32 hex digits (a multipart
/// ETag has `-N`), and the object not encrypted with a KMS or customer key (their ETags are
/// not MD5s).
fn etag_md5(resp: &ureq::Response) -> Option<[u8; 16]> {
    if resp
        .header("x-amz-server-side-encryption")
        .is_some_and(|v| v.starts_with("aws:kms"))
        || resp
            .header("x-amz-server-side-encryption-customer-algorithm")
            .is_some()
    {
        return None;
    }
    let tag = resp.header("etag")?.trim().trim_matches('"');
    if tag.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Sends a GetObject (optionally ranged) and returns the answer.
fn get(
    client: &Client,
    key: &str,
    from: u64,
    etag: Option<&str>,
) -> Result<ureq::Response, StorageError> {
    let mut call = Call::new("GET", Op::GetObject, Some(key));
    if from > 0 {
        call.headers
            .push(("range".into(), format!("bytes={from}-")));
        if let Some(tag) = etag {
            call.headers.push(("if-match".into(), tag.to_string()));
        }
    }
    client.send_with_retries(&call, &mut || Body::Empty)
}

/// Asks for the rest of the same object: a range, with `If-Match` on its ETag.
struct SameEtag {
    client: Arc<Client>,
    key: String,
    etag: Option<String>,
}

impl Reopen for SameEtag {
    fn reopen(&mut self, offset: u64) -> Result<BodyReader, StorageError> {
        Ok(get(&self.client, &self.key, offset, self.etag.as_deref())?.into_reader())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.client.backoff(attempt, false)
    }
}

/// The MD5 of the body, which must be the ETag's.
struct EtagMd5 {
    hasher: md5::Md5,
    etag: String,
}

impl Check for EtagMd5 {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    fn verify(&mut self, key: &str, _len: u64) -> io::Result<()> {
        let got: [u8; 16] = std::mem::take(&mut self.hasher).finalize().into();
        let want = self.etag.trim().trim_matches('"').to_ascii_lowercase();
        let got_hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        if want != got_hex {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{key}: the body received has MD5 {got_hex}, not its ETag {}: changed in transit",
                    self.etag
                ),
            ));
        }
        Ok(())
    }
}

/// Opens `key` (the full key inside the bucket) for streaming.
pub fn open(client: Arc<Client>, key: String) -> Result<ObjectReader, StorageError> {
    let resp = get(&client, &key, 0, None)?;
    let etag = resp.header("etag").map(str::to_string);
    let check = etag_md5(&resp).zip(etag.clone()).map(|(_, etag)| {
        Box::new(EtagMd5 {
            hasher: md5::Md5::new(),
            etag,
        }) as Box<dyn Check>
    });
    let max = client.cfg.max_retries;
    let reopen = SameEtag {
        client,
        key: key.clone(),
        etag,
    };
    let reader = ResumingReader::new((Op::GetObject, key), resp, max, Box::new(reopen), check);
    Ok(Box::new(reader))
}
