//! Google Cloud Storage (`WALG_GS_PREFIX`): the JSON API over blocking HTTP (ureq + rustls),
//! with OAuth2 tokens fetched by hand. No Google SDK: the calls wal-rus needs are few.
//!
//! One concern per file: `auth` says who wal-rus is (service-account key, metadata server or
//! none) and signs the token request, `token` keeps the access token fresh, `http` turns one
//! call into one request (timeouts, trust and bounded retries are `storage::net`'s), `upload`
//! stores bodies (one request, or a resumable upload in chunks), `read` streams objects and
//! resumes broken bodies, `json` reads GCS's and Google's answers, `crc32c` checks data.
//!
//! Keys are WAL-G's: `root` is the prefix's path as WAL-G's GCS storage makes it (see
//! `config::gcs`), so the same archive has the same object names on GCS as on S3.

pub mod auth;
pub mod crc32c;
pub mod http;
pub mod json;
pub mod read;
pub mod token;
pub mod upload;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod read_tests;

use super::{BodySource, ObjectMeta, ObjectReader, Op, PartBuffers, Storage, StorageError};
use crate::time::PreciseTime;
use http::{Body, Call, Client};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Everything needed to reach one bucket, resolved from settings by `config`.
#[derive(Clone, Debug)]
pub struct GcsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Object name prefix: empty, or ending in `/`.
    pub root: String,
    /// `https://storage.googleapis.com`, or an emulator's `http://host:port`.
    pub endpoint: String,
    /// Credentials.
    pub auth: auth::Auth,
    /// `GCS_ENCRYPTION_KEY`: the customer-supplied key objects are encrypted with.
    pub encryption_key: Option<CustomerKey>,
    /// Chunk size of resumable uploads of replayable bodies (`GCS_MAX_CHUNK_SIZE`, a multiple
    /// of 256 KiB); also the largest body sent in one request.
    pub chunk_size: u64,
    /// Retries after the first attempt (`GCS_MAX_RETRIES`).
    pub max_retries: u32,
    /// Longest one call may take with its retries (`GCS_CONTEXT_TIMEOUT`).
    pub context_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read or write on the connection.
    pub io_timeout: Duration,
}

/// A customer-supplied AES-256 key, as the headers carry it.
#[derive(Clone)]
pub struct CustomerKey {
    key_b64: String,
    sha256_b64: String,
}

impl CustomerKey {
    /// From the key's 32 bytes.
    pub fn new(key: &[u8; 32]) -> CustomerKey {
        use base64::Engine;
        use sha2::Digest;
        let b64 = base64::engine::general_purpose::STANDARD;
        CustomerKey {
            key_b64: b64.encode(key),
            sha256_b64: b64.encode(sha2::Sha256::digest(key)),
        }
    }

    /// `x-goog-encryption-key`.
    pub fn key_base64(&self) -> &str {
        &self.key_b64
    }

    /// `x-goog-encryption-key-sha256`.
    pub fn sha256_base64(&self) -> &str {
        &self.sha256_b64
    }
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

/// GCS as a `Storage`; no request is sent until the first operation.
pub struct GcsStorage(Arc<Client>);

impl GcsStorage {
    /// Prepares the client for `cfg`.
    pub fn new(cfg: GcsConfig) -> Result<GcsStorage, StorageError> {
        Client::new(cfg).map(|c| GcsStorage(Arc::new(c)))
    }
}

/// A listing's view of an object: `updated` is what WAL-G takes as its last modification.
fn meta(key: String, obj: &json::ObjectResource) -> ObjectMeta {
    ObjectMeta {
        key,
        size: obj.size,
        last_modified: PreciseTime::parse(&obj.updated).unwrap_or(PreciseTime::EPOCH),
    }
}

impl Storage for GcsStorage {
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError> {
        upload::put(&self.0, &self.0.name(key), body)
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        parts: &dyn PartBuffers,
        _concurrency: usize,
    ) -> Result<u64, StorageError> {
        // A resumable upload takes its chunks in order: one uploader, with the reader
        // filling the next buffer meanwhile, whatever the concurrency.
        upload::put_stream(&self.0, &self.0.name(key), body, parts)
    }

    fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        read::open(Arc::clone(&self.0), self.0.name(key))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let full = self.0.name(key);
        let mut call = Call::new("GET", Op::GcsGet, &full, self.0.object_url(&full, &[]));
        call.headers = self.0.csek_headers();
        let found = self.0.send_and_parse(&call, &mut || Ok(Body::Empty));
        match found {
            Err(StorageError::NotFound { .. }) => Ok(None),
            other => other.map(|obj: json::ObjectResource| Some(meta(key.to_string(), &obj))),
        }
    }

    fn list(
        &self,
        prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> Result<(), StorageError> {
        let root = self.0.cfg.root.clone();
        let full_prefix = self.0.name(prefix);
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = vec![("prefix", &full_prefix)];
            if !recursive {
                q.push(("delimiter", "/"));
            }
            if let Some(t) = &token {
                q.push(("pageToken", t));
            }
            let call = Call::new("GET", Op::GcsList, &full_prefix, self.0.objects_url(&q));
            let page: json::ListPage = self.0.send_and_parse(&call, &mut || Ok(Body::Empty))?;
            for obj in page.items {
                // A "folder" placeholder named like the folder itself is not an object.
                if obj.name.ends_with('/') {
                    continue;
                }
                let Some(rel) = obj.name.strip_prefix(&root) else {
                    continue;
                };
                each(meta(rel.to_string(), &obj));
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() && token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            let full = self.0.name(key);
            let call = Call::new(
                "DELETE",
                Op::GcsDelete,
                &full,
                self.0.object_url(&full, &[]),
            );
            match self.0.send_with_retries(&call, &mut || Ok(Body::Empty)) {
                Ok(resp) => drop(resp.into_string()),
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let c = &self.0.cfg;
        format!("gs://{}/{} at {}", c.bucket, c.root, self.0.describe())
    }
}
