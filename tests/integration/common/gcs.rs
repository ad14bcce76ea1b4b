//! Google Cloud Storage for the tests: fake-gcs-server v1.56.1 on a loopback port, plain HTTP,
//! no authentication (it ignores `Authorization`), objects kept on disk.
//!
//! What it serves (checked against its source and by hand): the JSON API under
//! `/storage/v1/` (buckets; object get with `alt=media` and `Range`, list with `prefix`,
//! `delimiter`, `maxResults`/`pageToken`, `startOffset`/`endOffset`; delete; compose; rewrite),
//! uploads under `/upload/storage/v1/b/B/o` with `uploadType=media`, `multipart` and
//! `resumable`, and batches (`POST /batch/storage/v1`, e.g. many DELETEs).
//!
//! Where it differs from GCS, which a client tested only here would not notice:
//! * A resumable upload appends every PUT's body, whatever its `Content-Range` says: a chunk
//!   sent twice is stored twice. A non-final chunk gets 308 with `Range: bytes=0-END`.
//! * A status query (`PUT` with an empty body and `Content-Range: bytes */TOTAL`) FINALIZES
//!   the object with what it has so far (answering 200), instead of answering 308.
//! * DELETE answers 200 where GCS answers 204; cancelling an upload (DELETE on its URL) 499.
//! * Nothing is authenticated: signed URLs are accepted unchecked, ACLs and IAM ignored.
//!   `ifGenerationMatch` preconditions are honoured (`=0` on an existing object: 412).

use std::path::PathBuf;

use super::emulator::Emulator;
use super::{Tool, require_or_fail};

/// A fake-gcs-server. Killed on drop.
pub struct GcsServer {
    /// `http://127.0.0.1:PORT`: the JSON API is `{endpoint}/storage/v1/`, uploads
    /// `{endpoint}/upload/storage/v1/`, batches `{endpoint}/batch/storage/v1`.
    pub endpoint: String,
    pub port: u16,
    emulator: Emulator,
}

impl GcsServer {
    /// Starts one with no buckets; `None` (after a `SKIP:` line) when fake-gcs-server is
    /// unavailable and tools are not required, a panic when they are (see `require_or_fail`).
    pub fn start(test: &str) -> Option<GcsServer> {
        let bin = require_or_fail(Tool::FakeGcs, test)?;
        let emulator = Emulator::start("fake-gcs-server", &bin, &[], |port, data| {
            let host = format!("127.0.0.1:{port}");
            [
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
                // On disk rather than in memory, so a test can look at or damage what was
                // stored (uploads are still buffered in memory until they finish).
                "-backend",
                "filesystem",
                "-filesystem-root",
                &data.display().to_string(),
                // Its defaults name storage.googleapis.com (only ever matched against the
                // Host header, never resolved) and 0.0.0.0; say what we serve instead, so
                // upload `Location`s and XML-API host matching point here.
                "-public-host",
                &host,
                "-external-url",
                &format!("http://{host}"),
                "-log-level",
                "warn",
            ]
            .map(String::from)
            .to_vec()
        });
        Some(GcsServer {
            endpoint: format!("http://127.0.0.1:{}", emulator.port),
            port: emulator.port,
            emulator,
        })
    }

    /// Creates bucket `name` (`POST /storage/v1/b?project=test`); panics on failure.
    pub fn create_bucket(&self, name: &str) {
        let body = serde_json::json!({ "name": name }).to_string();
        if let Err(e) = ureq::post(&format!("{}/storage/v1/b?project=test", self.endpoint))
            .set("Content-Type", "application/json")
            .send_string(&body)
        {
            panic!("create GCS bucket {name}: {e}\n{}", self.log());
        }
    }

    /// The on-disk root: object `NAME` of bucket `B` is the plain file `data/B/NAME` ('/' in
    /// names are directories); its metadata is in extended attributes where the file system
    /// has them, else in a `NAME.metadata` file beside it.
    pub fn data_root(&self) -> PathBuf {
        self.emulator.dir.join("data")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.emulator.log()
    }
}
