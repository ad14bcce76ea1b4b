//! S3 storage (`WALG_S3_PREFIX`): our own SigV4 signer over blocking HTTP (ureq + rustls).
//!
//! Split one concern per file: `sign` computes signatures, `xml` reads and writes S3's XML,
//! `http` turns one call into one signed request (timeouts, trust and bounded retries are
//! `storage::net`'s, shared with the other clouds), `upload` stores bodies (single PUT or multipart), `read` streams
//! objects and resumes broken bodies.

pub mod http;
pub mod read;
pub mod sign;
pub mod upload;
pub mod xml;

use super::{BodySource, Interrupted, ObjectMeta, ObjectReader, Op, Storage, StorageError};
use crate::time::{PreciseTime, UtcTime};
use http::{Body, Call, Client};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything needed to reach one bucket, resolved from settings by `config`.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending in `/`.
    pub root: String,
    /// Endpoint URL (`AWS_ENDPOINT`), e.g. `http://127.0.0.1:9000`; AWS when `None`.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Path-style addressing (`AWS_S3_FORCE_PATH_STYLE`).
    pub force_path_style: bool,
    /// Where the credentials of each request come from (static keys, STS, instance or
    /// container roles); asked at every signature, so refreshed ones are used at once.
    pub credentials: Arc<crate::storage::aws::CredentialProvider>,
    /// Extra CA bundle (`WALG_S3_CA_CERT_FILE`).
    pub ca_cert_file: Option<PathBuf>,
    /// `x-amz-storage-class` sent with uploads.
    pub storage_class: String,
    /// `x-amz-server-side-encryption` (`AES256` or `aws:kms`).
    pub sse: Option<String>,
    /// KMS key id for `aws:kms`.
    pub sse_kms_id: Option<String>,
    /// SSE-C (`WALG_S3_SSE_C` with `WALG_S3_SSE`): the customer key as given, sent base64
    /// with its MD5 on every write and read of an object, as WAL-G sends it.
    pub sse_customer_key: Option<String>,
    /// Object Lock retention of every upload (`S3_RETENTION_PERIOD`, `S3_RETENTION_MODE`).
    pub object_lock: Option<ObjectLock>,
    /// Multipart part size in bytes (`WALG_S3_MAX_PART_SIZE`).
    pub part_size: u64,
    /// Retries after the first attempt (`WALG_S3_MAX_RETRIES`).
    pub max_retries: u32,
    /// Shortest back-off when throttled (`S3_MIN_THROTTLING_RETRY_DELAY`).
    pub min_throttle_delay: Duration,
    /// Longest back-off when throttled (`S3_MAX_THROTTLING_RETRY_DELAY`).
    pub max_throttle_delay: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read or write on the connection.
    pub io_timeout: Duration,
    /// Keys per DeleteObjects call (`S3_DELETE_BATCH_SIZE`).
    pub delete_batch: usize,
}

/// Object Lock retention sent with every upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    /// How long from the upload the object stays locked.
    pub period: Duration,
}

/// S3 as a `Storage`.
pub struct S3Storage {
    client: Arc<Client>,
}

impl S3Storage {
    /// Prepares the client; no request is sent until the first operation.
    pub fn new(cfg: S3Config) -> Result<S3Storage, StorageError> {
        Ok(S3Storage {
            client: Arc::new(Client::new(cfg)?),
        })
    }

    fn full_key(&self, key: &str) -> String {
        super::rooted(&self.client.cfg.root, key)
    }
}

impl Storage for S3Storage {
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError> {
        upload::put(&self.client, &self.full_key(key), body)
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        parts: &dyn super::PartBuffers,
        concurrency: usize,
    ) -> Result<u64, StorageError> {
        upload::put_stream(&self.client, &self.full_key(key), body, parts, concurrency)
    }

    fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        read::open(self.client.clone(), self.full_key(key))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let full = self.full_key(key);
        let call = Call::new("HEAD", Op::HeadObject, Some(&full));
        match self.client.send_with_retries(&call, &mut || Body::Empty) {
            Ok(resp) => Ok(Some(super::net::head_meta(&resp, key))),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(
        &self,
        prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> Result<(), StorageError> {
        let root = self.client.cfg.root.clone();
        let full_prefix = self.full_key(prefix);
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new("GET", Op::ListObjectsV2, None);
            call.query.push(("list-type".into(), "2".into()));
            call.query.push(("prefix".into(), full_prefix.clone()));
            if !recursive {
                call.query.push(("delimiter".into(), "/".into()));
            }
            if let Some(t) = &token {
                call.query.push(("continuation-token".into(), t.clone()));
            }
            let page =
                match self
                    .client
                    .send_and_parse(&call, &mut || Body::Empty, &xml::parse_list_v2)
                {
                    Ok(page) => page,
                    // Some S3-compatible servers answer NoSuchKey for an empty folder.
                    Err(StorageError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
            for obj in page.objects {
                let when = PreciseTime::parse(&obj.last_modified).unwrap_or(PreciseTime::EPOCH);
                if let Some(meta) = super::net::listed(&root, &obj.key, obj.size, when) {
                    each(meta);
                }
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(t)) => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for batch in keys.chunks(self.client.cfg.delete_batch.max(1)) {
            let full: Vec<String> = batch.iter().map(|k| self.full_key(k)).collect();
            let body = xml::delete_objects_body(&full, true);
            let mut call = Call::new("POST", Op::DeleteObjects, None);
            call.query.push(("delete".into(), String::new()));
            call.headers
                .push(("content-md5".into(), http::content_md5(body.as_bytes())));
            call.payload_hash = sign::sha256_hex(body.as_bytes());
            let failures = self.client.send_and_parse(
                &call,
                &mut || Body::Bytes(body.as_bytes()),
                &xml::parse_delete_result,
            )?;
            if let Some(f) = failures.into_iter().find(|f| f.code != "NoSuchKey") {
                return Err(StorageError::Remote {
                    op: Op::DeleteObjects,
                    key: f.key,
                    status: 200,
                    code: f.code,
                    message: f.message,
                });
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let c = &self.client.cfg;
        format!(
            "s3://{}/{} at {}",
            c.bucket,
            c.root,
            self.client.endpoint_display()
        )
    }

    fn interrupted_writes(
        &self,
        prefix: &str,
        before: UtcTime,
    ) -> Result<Vec<Interrupted>, StorageError> {
        let root = self.client.cfg.root.clone();
        let full_prefix = self.full_key(prefix);
        let mut found = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut call = Call::new("GET", Op::ListMultipartUploads, None);
            call.query.push(("uploads".into(), String::new()));
            call.query.push(("prefix".into(), full_prefix.clone()));
            if let Some((key, id)) = &marker {
                call.query.push(("key-marker".into(), key.clone()));
                call.query.push(("upload-id-marker".into(), id.clone()));
            }
            let page = match self.client.send_and_parse(
                &call,
                &mut || Body::Empty,
                &xml::parse_list_uploads,
            ) {
                Ok(page) => page,
                // S3-compatible stores without the call (s3s-fs among them) keep no parts
                // of uploads that died, as far as wal-rus can know.
                Err(StorageError::Remote { status: 501, .. }) => {
                    crate::warn!(
                        "{} cannot list unfinished multipart uploads; none are aborted",
                        self.describe()
                    );
                    return Ok(found);
                }
                Err(e) => return Err(e),
            };
            for u in page.uploads {
                let started = UtcTime::parse_rfc3339(&u.initiated).unwrap_or(UtcTime(0));
                if let Some(rel) = u.key.strip_prefix(&root)
                    && started < before
                {
                    found.push(Interrupted {
                        key: rel.to_string(),
                        id: u.upload_id,
                        started,
                    });
                }
            }
            match page.next {
                Some(next) if marker.as_ref() != Some(&next) => marker = Some(next),
                _ => return Ok(found),
            }
        }
    }

    fn discard_interrupted(&self, writes: &[Interrupted]) -> Result<(), StorageError> {
        for w in writes {
            let full = self.full_key(&w.key);
            let mut abort = Call::new("DELETE", Op::AbortMultipartUpload, Some(&full));
            abort.query.push(("uploadId".into(), w.id.clone()));
            match self.client.send_with_retries(&abort, &mut || Body::Empty) {
                Ok(_) | Err(StorageError::NotFound { .. }) => {}
                Err(StorageError::Remote { code, .. }) if code == "NoSuchUpload" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
