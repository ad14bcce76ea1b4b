//! Streaming an object out of GCS, resuming a broken body instead of failing the command,
//! and checking what arrived against the CRC-32C GCS keeps for every object.
//!
//! The first answer gives the object's length, generation and checksums. If the connection
//! breaks, or ends before `Content-Length` bytes arrived, the reader asks for the rest with
//! a `Range` pinned to that generation (`generation=N`), so a replaced object is never
//! spliced onto the old one, within the same retry budget as any other request. At the end
//! the CRC-32C of the bytes read must be the one GCS sent (`x-goog-hash: crc32c=...`): not
//! every compression has a checksum of its own (`none`, LZMA-alone, brotli), and a byte
//! changed on the way must not reach a restore unseen. MD5 is not checked: composed objects
//! (WAL-G's uploads) have none, and CRC-32C catches the same damage for less.

use super::crc32c::Crc32c;
use super::http::{Body, Call, Client};
use crate::storage::net::reopen::{BodyReader, Check, Reopen, ResumingReader};
use crate::storage::{ObjectReader, Op, StorageError};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The CRC-32C an answer announces for the bytes it carries: from `x-goog-hash` (one header
/// with both hashes, or one header each), unless GCS decompresses the object on the way
/// (its hashes are of the stored bytes then).
pub fn announced_crc32c(resp: &ureq::Response) -> Option<u32> {
    let transcoded = resp
        .header("x-goog-stored-content-encoding")
        .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
        && resp.header("content-encoding").is_none();
    if transcoded {
        return None;
    }
    resp.all("x-goog-hash")
        .iter()
        .flat_map(|v| v.split(','))
        .find_map(|part| part.trim().strip_prefix("crc32c="))
        .and_then(decode_crc32c)
}

/// GCS's base64 of the big-endian CRC.
pub fn decode_crc32c(b64: &str) -> Option<u32> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Sends objects.get with `alt=media`, from `from` on, pinned to `generation` when known.
fn get(
    client: &Client,
    key: &str,
    from: u64,
    generation: Option<&str>,
) -> Result<ureq::Response, StorageError> {
    let mut q = vec![("alt", "media")];
    if let Some(g) = generation {
        q.push(("generation", g));
    }
    let mut call = Call::new("GET", Op::GcsGet, key, client.object_url(key, &q));
    call.headers = client.csek_headers();
    if from > 0 {
        call.headers.push(("range", format!("bytes={from}-")));
    }
    let resp = client.send_with_retries(&call, &mut || Ok(Body::Empty))?;
    if from > 0 && resp.status() != 206 {
        return Err(StorageError::Protocol {
            op: Op::GcsGet,
            key: key.to_string(),
            detail: format!(
                "asked for bytes {from}- and got HTTP {} instead of 206",
                resp.status()
            ),
        });
    }
    Ok(resp)
}

/// Asks for the rest of the same generation.
struct SameGeneration {
    client: Arc<Client>,
    key: String,
    generation: Option<String>,
    retries: u32,
}

impl Reopen for SameGeneration {
    fn reopen(&mut self, offset: u64) -> Result<BodyReader, StorageError> {
        Ok(get(&self.client, &self.key, offset, self.generation.as_deref())?.into_reader())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.client.backoff(attempt)
    }
}

/// The CRC-32C of the body, which must be the one GCS announced.
struct AnnouncedCrc {
    crc: Crc32c,
    want: u32,
}

impl Check for AnnouncedCrc {
    fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
    }

    fn verify(&mut self, key: &str, len: u64) -> io::Result<()> {
        let got = self.crc.value();
        if got != self.want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "objects.get {key}: the {len} bytes received have CRC-32C {got:08x}, not \
                     the object's {:08x}: changed in transit",
                    self.want
                ),
            ));
        }
        Ok(())
    }
}

/// Opens `key` (the full object name) for streaming.
pub fn open(client: Arc<Client>, key: String) -> Result<ObjectReader, StorageError> {
    let first = get(&client, &key, 0, None)?;
    let crc = announced_crc32c(&first).map(|want| AnnouncedCrc {
        crc: Crc32c::new(),
        want,
    });
    let same = SameGeneration {
        generation: first.header("x-goog-generation").map(str::to_string),
        key: key.clone(),
        retries: client.cfg.max_retries,
        client,
    };
    Ok(Box::new(ResumingReader::new(
        (Op::GcsGet, key),
        first,
        same.retries,
        Box::new(same),
        crc.map(|c| Box::new(c) as Box<dyn Check>),
    )))
}
