//! The one error type of the storage room, and the decision of what is worth retrying.
//!
//! Callers decide by variant and by [`Op`], never by a message's text: the text is for
//! people, and the operation names in it are the cloud's own (or the file storage's verbs) so a
//! message can be matched against S3's documentation and server logs.

use std::fmt;
use std::io;

/// The storage operation a failure belongs to. Its `Display` is the name messages show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// S3 PutObject: one request stores a whole object.
    PutObject,
    /// S3 GetObject, whole or ranged.
    GetObject,
    /// S3 HeadObject.
    HeadObject,
    /// S3 ListObjectsV2, one page.
    ListObjectsV2,
    /// S3 DeleteObjects, one batch.
    DeleteObjects,
    /// S3 CreateMultipartUpload.
    CreateMultipartUpload,
    /// S3 UploadPart, one part of a multipart upload.
    UploadPart,
    /// S3 CompleteMultipartUpload.
    CompleteMultipartUpload,
    /// S3 AbortMultipartUpload.
    AbortMultipartUpload,
    /// S3 ListMultipartUploads, one page.
    ListMultipartUploads,
    /// GCS objects.insert (a whole object in one request) or the start of a resumable upload.
    GcsInsert,
    /// GCS: one chunk of a resumable upload.
    GcsUploadChunk,
    /// GCS objects.get (metadata or `alt=media`).
    GcsGet,
    /// GCS objects.list, one page.
    GcsList,
    /// GCS objects.delete.
    GcsDelete,
    /// Azure Put Blob (a whole blob in one request).
    AzPutBlob,
    /// Azure Put Block, one staged block.
    AzPutBlock,
    /// Azure Put Block List, which commits the staged blocks.
    AzPutBlockList,
    /// Azure Get Blob.
    AzGetBlob,
    /// Azure Get Blob Properties.
    AzGetBlobProperties,
    /// Azure List Blobs, one page.
    AzListBlobs,
    /// Azure Delete Blob.
    AzDeleteBlob,
    /// Fetching credentials or a token (STS, instance metadata, a container endpoint, OAuth).
    Credentials,
    /// Building the TLS client configuration (CA files, the system store).
    TlsSetup,
    /// Checking the S3 settings before the first request.
    Configure,
    /// Starting a thread that uploads parts.
    StartPartUploader,
    /// Waiting for a part-sized buffer from the caller's arena.
    LeasePartBuffer,
    /// File storage: writing an object.
    Put,
    /// File storage: opening an object.
    Get,
    /// File storage: reading an object's metadata.
    Head,
    /// File storage: listing a folder.
    List,
    /// File storage: removing an object.
    Delete,
}

impl Op {
    /// The name messages show.
    pub fn name(self) -> &'static str {
        match self {
            Op::PutObject => "PutObject",
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::DeleteObjects => "DeleteObjects",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListMultipartUploads => "ListMultipartUploads",
            Op::GcsInsert => "objects.insert",
            Op::GcsUploadChunk => "resumable upload chunk",
            Op::GcsGet => "objects.get",
            Op::GcsList => "objects.list",
            Op::GcsDelete => "objects.delete",
            Op::AzPutBlob => "Put Blob",
            Op::AzPutBlock => "Put Block",
            Op::AzPutBlockList => "Put Block List",
            Op::AzGetBlob => "Get Blob",
            Op::AzGetBlobProperties => "Get Blob Properties",
            Op::AzListBlobs => "List Blobs",
            Op::AzDeleteBlob => "Delete Blob",
            Op::Credentials => "get credentials",
            Op::TlsSetup => "TLS setup",
            Op::Configure => "configure",
            Op::StartPartUploader => "start part uploader",
            Op::LeasePartBuffer => "lease a part buffer",
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed storage operation. Messages name the operation and the key; they never contain
/// credentials.
#[derive(Debug)]
pub enum StorageError {
    /// The object does not exist.
    NotFound {
        /// Key relative to the storage root.
        key: String,
    },
    /// The server answered with an error status (S3 error code and message when it sent one).
    Remote {
        /// Operation, e.g. `PutObject`.
        op: Op,
        /// Key or bucket the operation addressed.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, `SignatureDoesNotMatch`, ...), or a description of a
        /// body that was not an S3 error document.
        code: String,
        /// S3 error message.
        message: String,
    },
    /// The request never got an answer: refused, reset, timed out, name not resolved, TLS.
    Transport {
        /// Operation.
        op: Op,
        /// Key.
        key: String,
        /// What happened.
        detail: String,
    },
    /// Reading the body being stored failed: the caller's source (a file, a compressor, a
    /// tar stream) broke, not the storage. Commands report it as a failed read of their input.
    BodyRead {
        /// Key the body was going to.
        key: String,
        /// Cause.
        source: io::Error,
    },
    /// Local I/O failed (file storage, threads and buffers of an upload, an answer's body).
    Io {
        /// Operation.
        op: Op,
        /// Key or path.
        key: String,
        /// Cause.
        source: io::Error,
    },
    /// An upload was answered "OK" without proof that the object was stored: no ETag, or an
    /// ETag that is not the MD5 of what was sent. Retried: a proxy's page or a server's bad
    /// moment, never a success.
    Unverified {
        /// Operation.
        op: Op,
        /// Key.
        key: String,
        /// What was missing or wrong.
        detail: String,
    },
    /// An answer that did not parse (an XML listing cut or changed on the way). Retried:
    /// S3's XML answers have no checksum, so a damaged one looks just like this.
    Garbled {
        /// Operation.
        op: Op,
        /// Key.
        key: String,
        /// What the parser said.
        detail: String,
    },
    /// The server's answer made no sense (missing header, an impossible value).
    Protocol {
        /// Operation.
        op: Op,
        /// Key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl StorageError {
    /// The body being stored under `key` could not be read.
    pub fn body_read(key: &str, source: io::Error) -> StorageError {
        StorageError::BodyRead {
            key: key.to_string(),
            source,
        }
    }

    /// Whether trying the same request again may succeed: 5xx, throttling, timeouts and
    /// resets are retried; other 4xx (wrong key, missing bucket, denied) are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::NotFound { .. } | StorageError::Protocol { .. } => false,
            StorageError::Transport { .. }
            | StorageError::Unverified { .. }
            | StorageError::Garbled { .. } => true,
            StorageError::Io { source, .. } | StorageError::BodyRead { source, .. } => {
                is_retryable_io(source)
            }
            StorageError::Remote { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "RequestTimeTooSkewed"
                            | "InternalError"
                            | "ServiceUnavailable"
                            // Azure: the body's MD5 was not the one sent, so it changed on
                            // the way; another try sends it again.
                            | "Md5Mismatch"
                    )
            }
        }
    }

    /// Whether the server asked us to slow down (longer back-off).
    pub fn is_throttle(&self) -> bool {
        matches!(self, StorageError::Remote { status, code, .. }
            if *status == 429 || *status == 503 || code == "SlowDown" || code.starts_with("Throttl"))
    }
}

/// I/O errors of a network stream that a new attempt may cure.
pub fn is_retryable_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Interrupted
    )
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::NotFound { key } => write!(f, "object {key} not found"),
            StorageError::Remote {
                op,
                key,
                status,
                code,
                message,
            } => {
                write!(f, "{op} {key}: HTTP {status} {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            StorageError::Transport { op, key, detail } => write!(f, "{op} {key}: {detail}"),
            StorageError::Io { op, key, source } => write!(f, "{op} {key}: {source}"),
            StorageError::BodyRead { key, source } => write!(f, "read body {key}: {source}"),
            StorageError::Protocol { op, key, detail } => {
                write!(f, "{op} {key}: unexpected response: {detail}")
            }
            StorageError::Garbled { op, key, detail } => {
                write!(f, "{op} {key}: unreadable answer: {detail}")
            }
            StorageError::Unverified { op, key, detail } => {
                write!(f, "{op} {key}: not confirmed as stored: {detail}")
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } | StorageError::BodyRead { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_the_operation_as_before() {
        let remote = StorageError::Remote {
            op: Op::UploadPart,
            key: "k".into(),
            status: 503,
            code: "SlowDown".into(),
            message: "m".into(),
        };
        assert_eq!(remote.to_string(), "UploadPart k: HTTP 503 SlowDown: m");
        let tls = StorageError::Transport {
            op: Op::TlsSetup,
            key: String::new(),
            detail: "d".into(),
        };
        assert_eq!(tls.to_string(), "TLS setup : d");
        let list = StorageError::Io {
            op: Op::List,
            key: "wal_005/".into(),
            source: io::Error::other("gone"),
        };
        assert_eq!(list.to_string(), "list wal_005/: gone");
        let body = StorageError::body_read("k", io::Error::other("source broke"));
        assert_eq!(body.to_string(), "read body k: source broke");
    }

    #[test]
    fn inner_errors_are_sources() {
        let body = StorageError::body_read("k", io::Error::other("source broke"));
        assert_eq!(body.source().unwrap().to_string(), "source broke");
        let io = StorageError::Io {
            op: Op::Put,
            key: "k".into(),
            source: io::Error::from(io::ErrorKind::TimedOut),
        };
        assert!(io.source().is_some());
        assert!(io.is_retryable());
        assert!(
            StorageError::NotFound { key: "k".into() }
                .source()
                .is_none()
        );
    }

    #[test]
    fn body_reads_retry_as_io_errors_do() {
        let reset = StorageError::body_read("k", io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(reset.is_retryable());
        let broken = StorageError::body_read("k", io::Error::other("disk"));
        assert!(!broken.is_retryable());
    }
}
