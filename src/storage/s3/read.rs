//! Streaming an object out of S3 through the shared resuming reader (`storage::net::resume`):
//! a broken body is asked for again from where it broke, with `If-Match` on the ETag.
//!
//! Where S3 defines the ETag as the MD5 of the object (a single PUT without KMS or customer
//! keys), the reader checks the body against it at its end.

use super::http::{Body, Call, Client};
use crate::storage::net::resume::{self, Refetch};
use crate::storage::{ObjectReader, Op, StorageError};
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

/// One object of one bucket, asked for again from an offset.
struct ObjectGet {
    client: Arc<Client>,
    key: String,
}

impl Refetch for ObjectGet {
    /// Sends a GetObject (ranged from `from` when it is not 0).
    fn get_from(&self, from: u64, etag: Option<&str>) -> Result<ureq::Response, StorageError> {
        let mut call = Call::new("GET", Op::GetObject, Some(&self.key));
        call.headers = resume::range_headers(from, etag);
        self.client.send_with_retries(&call, &mut || Body::Empty)
    }

    fn max_resumes(&self) -> u32 {
        self.client.cfg.max_retries
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.client.backoff(attempt, false)
    }
}

/// Opens `key` (the full key inside the bucket) for streaming.
pub fn open(client: Arc<Client>, key: String) -> Result<ObjectReader, StorageError> {
    let what = (Op::GetObject, key.clone());
    resume::open(ObjectGet { client, key }, what, |resp| {
        etag_md5(resp).map(|m| (m, "ETag"))
    })
}
