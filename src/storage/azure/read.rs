//! Streaming a blob through the shared resuming reader (`storage::net::resume`): a broken
//! body is asked for again from where it broke, with `If-Match` on the ETag. Where the blob
//! carries an MD5 of its whole content (`Content-MD5` of a full Get Blob: every blob
//! wal-rus stores has one), the body is checked against it at its end.

use super::http::{Body, Call, Client};
use crate::storage::net::resume::{self, Refetch};
use crate::storage::{ObjectReader, Op, StorageError};
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;

/// One blob, asked for again from an offset.
struct BlobGet {
    client: Arc<Client>,
    blob: String,
}

impl Refetch for BlobGet {
    /// Sends a Get Blob (ranged from `from` when it is not 0).
    fn get_from(&self, from: u64, etag: Option<&str>) -> Result<ureq::Response, StorageError> {
        let mut call = Call::new("GET", Op::AzGetBlob, Some(&self.blob));
        if from > 0 {
            call.headers
                .push(("range".into(), format!("bytes={from}-")));
            if let Some(tag) = etag {
                call.headers.push(("if-match".into(), tag.to_string()));
            }
        }
        self.client.send_with_retries(&call, &mut || Body::Empty)
    }

    fn max_resumes(&self) -> u32 {
        self.client.cfg.max_retries
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.client.backoff(attempt)
    }
}

/// The blob's MD5 from a full Get Blob's `Content-MD5`.
fn content_md5(resp: &ureq::Response) -> Option<[u8; 16]> {
    let b64 = resp.header("content-md5")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?
        .try_into()
        .ok()
}

/// Opens `blob` (the full name in the container) for streaming.
pub fn open(client: Arc<Client>, blob: String) -> Result<ObjectReader, StorageError> {
    let what = (Op::AzGetBlob, blob.clone());
    resume::open(BlobGet { client, blob }, what, |resp| {
        content_md5(resp).map(|m| (m, "Content-MD5"))
    })
}
