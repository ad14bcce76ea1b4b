//! Azure Blob Storage (`WALG_AZ_PREFIX=azure://container/path`): the Blob service's REST API
//! by hand over blocking HTTP (ureq + rustls), with the blob names WAL-G's Azure storage
//! makes, so an archive holds the same keys as on S3 under the same path.
//!
//! One concern per file: `sign` is Shared Key, `token` the Entra ID tokens, `xml` the listings, errors and block lists,
//! `http` turns one call into one authorized request (timeouts, trust and bounded retries
//! are `storage::net`'s, shared with the other clouds), `upload` stores bodies (Put Blob,
//! or staged blocks committed by Put Block List, so nothing partial ever has the final
//! name), `read` streams blobs and resumes broken bodies.

pub mod http;
pub mod read;
pub mod sign;
pub mod token;
pub mod upload;
pub mod xml;

use super::{BodySource, ObjectMeta, ObjectReader, Op, PartBuffers, Storage, StorageError};
use crate::time::PreciseTime;
use http::{Body, Call, Client};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How requests are authorized.
#[derive(Clone)]
pub enum AzureAuth {
    /// Shared Key with the account key (`AZURE_STORAGE_ACCESS_KEY`).
    SharedKey(sign::SharedKey),
    /// A SAS token appended to every URL's query (`AZURE_STORAGE_SAS_TOKEN`), without `?`.
    Sas(String),
    /// Microsoft Entra ID bearer tokens (service principal, workload or managed identity).
    Token(Arc<token::Tokens>),
}

impl fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureAuth::SharedKey(k) => write!(f, "SharedKey({k:?})"),
            AzureAuth::Sas(_) => f.write_str("Sas(<redacted>)"),
            AzureAuth::Token(t) => write!(f, "{t:?}"),
        }
    }
}

impl AzureAuth {
    /// What a refused authentication should make the user check.
    pub fn hint(&self) -> &'static str {
        match self {
            AzureAuth::SharedKey(_) => {
                "check AZURE_STORAGE_ACCESS_KEY (or the connection string's AccountKey) and \
                 AZURE_STORAGE_ACCOUNT"
            }
            AzureAuth::Sas(_) => {
                "check AZURE_STORAGE_SAS_TOKEN (or the connection string's \
                 SharedAccessSignature): its signature, start and expiry, and the account"
            }
            AzureAuth::Token(_) => {
                "check that the identity has a Storage Blob Data role (Contributor to write) \
                 on the account or container, and AZURE_STORAGE_ACCOUNT"
            }
        }
    }

    /// The credential in words.
    pub fn label(&self) -> &'static str {
        match self {
            AzureAuth::SharedKey(_) => "account key",
            AzureAuth::Sas(_) => "SAS token",
            AzureAuth::Token(_) => "Microsoft Entra ID token",
        }
    }
}

/// Everything needed to reach one container, resolved from settings by `config`.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// The storage account.
    pub account: String,
    /// The container.
    pub container: String,
    /// Name prefix inside the container: empty, or ending in `/`.
    pub root: String,
    /// The Blob service endpoint, e.g. `https://ACCOUNT.blob.core.windows.net` or an
    /// emulator's `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    /// Authorization.
    pub auth: AzureAuth,
    /// Block size of staged uploads and the largest body stored by one Put Blob
    /// (`AZURE_BUFFER_SIZE`).
    pub block_size: u64,
    /// Blocks a streamed upload stages at once (`AZURE_MAX_BUFFERS`); the caller's plan
    /// passes it, bounded, as `put_stream`'s concurrency.
    pub max_buffers: usize,
    /// Bound of one try of a request (`AZURE_TRY_TIMEOUT`); zero for none.
    pub try_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read or write on the connection.
    pub io_timeout: Duration,
}

/// Most blocks one blob may have.
pub const MAX_BLOCKS: u32 = 50_000;

/// Azure Blob Storage as a `Storage`.
pub struct AzureStorage {
    client: Arc<Client>,
}

impl AzureStorage {
    /// Prepares the client; no request is sent until the first operation.
    pub fn new(cfg: AzureConfig) -> Result<AzureStorage, StorageError> {
        Ok(AzureStorage {
            client: Arc::new(Client::new(cfg)?),
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.client.cfg.root, key.trim_start_matches('/'))
    }
}

impl Storage for AzureStorage {
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError> {
        upload::put(&self.client, &self.full_key(key), body)
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        parts: &dyn PartBuffers,
        concurrency: usize,
    ) -> Result<u64, StorageError> {
        upload::put_stream(&self.client, &self.full_key(key), body, parts, concurrency)
    }

    fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        read::open(self.client.clone(), self.full_key(key))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let full = self.full_key(key);
        let call = Call::new("HEAD", Op::AzGetBlobProperties, Some(&full));
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
        let root = &self.client.cfg.root;
        let full_prefix = self.full_key(prefix);
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::new("GET", Op::AzListBlobs, None);
            call.query = http::list_query(&full_prefix, marker.as_deref(), None);
            if !recursive {
                call.query.push(("delimiter".into(), "/".into()));
            }
            let page = self.client.send_and_parse(&call, &xml::parse_list)?;
            for blob in page.blobs {
                let when = super::net::parse_http_date(&blob.last_modified)
                    .map_or(PreciseTime::EPOCH, PreciseTime::from_utc);
                if let Some(meta) = super::net::listed(root, &blob.name, blob.size, when) {
                    each(meta);
                }
            }
            match page.next_marker {
                Some(m) if marker.as_ref() != Some(&m) => marker = Some(m),
                _ => return Ok(()),
            }
        }
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            let full = self.full_key(key);
            let mut call = Call::new("DELETE", Op::AzDeleteBlob, Some(&full));
            // As WAL-G: a blob's snapshots go with it.
            call.headers
                .push(("x-ms-delete-snapshots".into(), "include".into()));
            match self.client.send_with_retries(&call, &mut || Body::Empty) {
                Ok(_) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let c = &self.client.cfg;
        format!(
            "azure://{}/{} at {}",
            c.container,
            c.root,
            self.client.endpoint_display()
        )
    }
}

#[cfg(test)]
#[path = "fault_tests.rs"]
mod fault_tests;
