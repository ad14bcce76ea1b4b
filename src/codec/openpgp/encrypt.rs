//! Writing: one object's session key drawn and encrypted to every recipient once (so that
//! both passes of an upload make the same bytes), then the payload streamed through a
//! literal data packet inside a SEIPD v1 packet, both framed here in 8 KiB partial bodies so
//! that the payload's length need not be known.

use ::pgp::composed::{Esk, RawSessionKey};
use ::pgp::crypto::sym::{StreamEncryptor, SymmetricKeyAlgorithm};
use ::pgp::packet::PublicKeyEncryptedSessionKey;
use ::pgp::ser::Serialize;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::io::{self, Read};
use std::sync::Arc;

use super::keys::{PgpKeys, Recipient};
use super::{CHUNK, HEAD};

impl PgpKeys {
    /// One object's encryption: its session key, encrypted to every recipient, and the seed
    /// of its CFB prefix, drawn once so that every pass over the object makes the same bytes.
    pub fn seal(&self) -> io::Result<PgpSeal> {
        let recipients = self.recipients.as_ref().map_err(|why| {
            io::Error::other(format!(
                "{}: cannot encrypt: {why} (WAL-G refuses to encrypt to it as well)",
                self.setting
            ))
        })?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            io::Error::other(format!("no random bytes for the OpenPGP session key: {e}"))
        })?;
        let mut rng = StdRng::from_seed(seed);
        let session_key = self.cipher.new_session_key(&mut rng);
        let mut head = Vec::new();
        for r in recipients {
            let esk = match r {
                Recipient::Primary(k) => PublicKeyEncryptedSessionKey::from_session_key_v3(
                    &mut rng,
                    &session_key,
                    self.cipher,
                    k,
                ),
                Recipient::Sub(k) => PublicKeyEncryptedSessionKey::from_session_key_v3(
                    &mut rng,
                    &session_key,
                    self.cipher,
                    k,
                ),
            }
            .map_err(|e| {
                io::Error::other(format!("{}: encrypting the session key: {e}", self.setting))
            })?;
            Esk::PublicKeyEncryptedSessionKey(esk)
                .to_writer(&mut head)
                .map_err(|e| io::Error::other(format!("writing a session key packet: {e}")))?;
        }
        let mut prefix_seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rng, &mut prefix_seed);
        Ok(PgpSeal {
            head: Arc::new(head),
            cipher: self.cipher,
            session_key,
            prefix_seed,
        })
    }
}

/// One object's encryption (see [`PgpKeys::seal`]).
#[derive(Clone, Debug)]
pub struct PgpSeal {
    head: Arc<Vec<u8>>,
    cipher: SymmetricKeyAlgorithm,
    session_key: RawSessionKey,
    prefix_seed: [u8; 32],
}

impl PgpSeal {
    /// The object's stored bytes, read from its plaintext.
    pub fn reader<R: Read>(&self, plain: R) -> io::Result<PgpReader<R>> {
        let literal = PacketFramer::new(plain, LITERAL_TAG, &LITERAL_LEAD);
        let encrypted = StreamEncryptor::new(
            StdRng::from_seed(self.prefix_seed),
            self.cipher,
            self.session_key.as_ref(),
            literal,
        )
        .map_err(|e| io::Error::other(format!("starting OpenPGP encryption: {e}")))?;
        Ok(PgpReader {
            head: self.head.clone(),
            head_pos: 0,
            body: Box::new(PacketFramer::new(encrypted, SEIPD_TAG, &SEIPD_LEAD)),
        })
    }
}

/// Literal data packet: tag 11; its body starts with format `b` (binary), an empty file
/// name and a zero date.
const LITERAL_TAG: u8 = 11;
const LITERAL_LEAD: [u8; 6] = [b'b', 0, 0, 0, 0, 0];
/// Symmetrically encrypted integrity protected data packet: tag 18, version 1.
pub(super) const SEIPD_TAG: u8 = 18;
const SEIPD_LEAD: [u8; 1] = [1];

/// A packet of `tag` whose body is `lead` and then everything `inner` yields, cut into
/// partial bodies of [`CHUNK`] bytes and a last one of a fixed length (0..CHUNK bytes).
struct PacketFramer<R: Read> {
    inner: R,
    tag: u8,
    lead: &'static [u8],
    buf: Box<[u8; HEAD + CHUNK]>,
    start: usize,
    end: usize,
    first: bool,
    done: bool,
}

impl<R: Read> PacketFramer<R> {
    fn new(inner: R, tag: u8, lead: &'static [u8]) -> Self {
        PacketFramer {
            inner,
            tag,
            lead,
            buf: Box::new([0u8; HEAD + CHUNK]),
            start: 0,
            end: 0,
            first: true,
            done: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let body = &mut self.buf[HEAD..];
        let mut n = 0;
        if self.first {
            body[..self.lead.len()].copy_from_slice(self.lead);
            n = self.lead.len();
        }
        n += crate::readers::read_full(&mut self.inner, &mut body[n..])?;
        let mut head = [0u8; HEAD];
        let mut len = 0;
        if self.first {
            // New packet format: 0b11 then the tag.
            head[0] = 0xC0 | self.tag;
            len = 1;
        }
        if n == CHUNK {
            // A partial body length: 0xE0 + log2 of the chunk. A full last chunk is followed
            // by an empty fixed-length one.
            head[len] = 0xE0 | CHUNK.trailing_zeros() as u8;
            len += 1;
        } else {
            if n < 192 {
                head[len] = n as u8;
                len += 1;
            } else {
                let m = n - 192;
                head[len] = (m >> 8) as u8 + 192;
                head[len + 1] = m as u8;
                len += 2;
            }
            self.done = true;
        }
        self.first = false;
        self.start = HEAD - len;
        self.buf[self.start..HEAD].copy_from_slice(&head[..len]);
        self.end = HEAD + n;
        Ok(())
    }
}

impl<R: Read> Read for PacketFramer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Encrypts what it reads from its plaintext: the session-key packets, then the SEIPD packet.
pub struct PgpReader<R: Read> {
    head: Arc<Vec<u8>>,
    head_pos: usize,
    body: Box<PacketFramer<StreamEncryptor<PacketFramer<R>>>>,
}

impl<R: Read> Read for PgpReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        self.body.read(buf)
    }
}
