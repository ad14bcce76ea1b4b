//! What WAL-G does to a payload after compressing it (walg-compat §5): nothing, or
//! encryption. Every WAL file and every tar partition goes through the configured crypter,
//! both ways; the JSON documents never do. Nothing in storage says whether an object is
//! encrypted, so reader and writer must be configured alike, as with WAL-G.

use super::sodium::{self, Key, SodiumDecryptor, SodiumReader, SodiumWriter};
use std::io::{self, Read, Write};

/// The configured crypter.
#[derive(Clone, Debug, Default)]
pub enum Crypter {
    /// No encryption.
    #[default]
    None,
    /// libsodium's secretstream (`WALG_LIBSODIUM_KEY`).
    Sodium(Key),
}

impl Crypter {
    /// Whether payloads are encrypted.
    pub fn is_encrypting(&self) -> bool {
        !matches!(self, Crypter::None)
    }

    /// The plaintext of a stored payload.
    pub fn decrypting<'a>(&self, stored: Box<dyn Read + Send + 'a>) -> Box<dyn Read + Send + 'a> {
        match self {
            Crypter::None => stored,
            Crypter::Sodium(key) => Box::new(SodiumDecryptor::new(stored, key)),
        }
    }

    /// The settings for one object to be stored: its random header, drawn once so that the
    /// passes of an upload (digest, then send) make the same bytes.
    pub fn seal(&self) -> io::Result<Option<Seal>> {
        Ok(match self {
            Crypter::None => None,
            Crypter::Sodium(key) => Some(Seal {
                key: key.clone(),
                header: sodium::random_header()?,
            }),
        })
    }

    /// A reader of `plain` as stored: encrypted under a fresh header when configured.
    pub fn encrypting<'a>(&self, plain: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self.seal()? {
            None => Box::new(plain),
            Some(seal) => Box::new(seal.reader(plain)),
        })
    }

    /// Heap one stream holds for encryption or decryption.
    pub fn state_bytes(&self) -> u64 {
        match self {
            Crypter::None => 0,
            Crypter::Sodium(_) => sodium::STATE_BYTES,
        }
    }
}

/// One object's encryption: key and header.
#[derive(Clone, Debug)]
pub struct Seal {
    key: Key,
    header: [u8; sodium::HEADER],
}

impl Seal {
    /// The object's stored bytes, read from its plaintext.
    pub fn reader<R: Read>(&self, plain: R) -> SodiumReader<R> {
        SodiumReader::new(plain, &self.key, self.header)
    }

    /// The object's stored bytes, written from its plaintext into `out`; call `finish`.
    pub fn writer<W: Write>(&self, out: W) -> io::Result<SodiumWriter<W>> {
        SodiumWriter::new(out, &self.key, self.header)
    }
}
