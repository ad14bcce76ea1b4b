//! What WAL-G does to a payload after compressing it (walg-compat §5): nothing, or
//! encryption. Every WAL file and every tar partition goes through the configured crypter,
//! both ways; the JSON documents never do. Nothing in storage says whether an object is
//! encrypted, so reader and writer must be configured alike, as with WAL-G.

use super::openpgp::{PgpDecryptor, PgpKeys, PgpReader, PgpSeal};
use super::sodium::{self, Key, SodiumDecryptor, SodiumReader, SodiumWriter};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The configured crypter.
#[derive(Clone, Debug, Default)]
pub enum Crypter {
    /// No encryption.
    #[default]
    None,
    /// libsodium's secretstream (`WALG_LIBSODIUM_KEY`).
    Sodium(Key),
    /// OpenPGP (`WALG_PGP_KEY`, `WALG_PGP_KEY_PATH`).
    Pgp(Arc<PgpKeys>),
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
            Crypter::Pgp(keys) => Box::new(PgpDecryptor::new(stored, keys.clone())),
        }
    }

    /// The settings for one object to be stored: its random header (libsodium) or session
    /// key and its encryptions (OpenPGP), drawn once so that the passes of an upload
    /// (digest, then send) make the same bytes.
    pub fn seal(&self) -> io::Result<Option<Seal>> {
        Ok(match self {
            Crypter::None => None,
            Crypter::Sodium(key) => Some(Seal::Sodium {
                key: key.clone(),
                header: sodium::random_header()?,
            }),
            Crypter::Pgp(keys) => Some(Seal::Pgp(keys.seal()?)),
        })
    }

    /// A reader of `plain` as stored: encrypted under a fresh seal when configured.
    pub fn encrypting<'a>(&self, plain: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self.seal()? {
            None => Box::new(plain),
            Some(seal) => Box::new(seal.reader(plain)?),
        })
    }

    /// Resident memory the crypter costs once per process, beside its streams.
    pub fn process_bytes(&self) -> u64 {
        match self {
            Crypter::None => 0,
            Crypter::Sodium(_) => sodium::PROCESS_BYTES,
            Crypter::Pgp(_) => super::openpgp::PROCESS_BYTES,
        }
    }

    /// Heap one stream holds for encryption or decryption.
    pub fn state_bytes(&self) -> u64 {
        match self {
            Crypter::None => 0,
            Crypter::Sodium(_) => sodium::STATE_BYTES,
            Crypter::Pgp(keys) => keys.state_bytes(),
        }
    }
}

/// One object's encryption.
#[derive(Clone, Debug)]
pub enum Seal {
    /// libsodium: key and header.
    Sodium {
        /// The key.
        key: Key,
        /// The object's stream header.
        header: [u8; sodium::HEADER],
    },
    /// OpenPGP: session key, its packets and the prefix seed.
    Pgp(PgpSeal),
}

/// An object's stored bytes, read from its plaintext.
pub enum SealReader<R: Read> {
    /// libsodium.
    Sodium(SodiumReader<R>),
    /// OpenPGP.
    Pgp(PgpReader<R>),
}

impl<R: Read> Read for SealReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SealReader::Sodium(r) => r.read(buf),
            SealReader::Pgp(r) => r.read(buf),
        }
    }
}

impl Seal {
    /// The object's stored bytes, read from its plaintext.
    pub fn reader<R: Read>(&self, plain: R) -> io::Result<SealReader<R>> {
        Ok(match self {
            Seal::Sodium { key, header } => {
                SealReader::Sodium(SodiumReader::new(plain, key, *header))
            }
            Seal::Pgp(seal) => SealReader::Pgp(seal.reader(plain)?),
        })
    }

    /// The object's stored bytes, written from its plaintext into `out` (call `finish`);
    /// `None` for a crypter that only encrypts as a reader (OpenPGP: read [`Seal::reader`]).
    pub fn writer<W: Write>(&self, out: W) -> io::Result<Option<SodiumWriter<W>>> {
        match self {
            Seal::Sodium { key, header } => SodiumWriter::new(out, key, *header).map(Some),
            Seal::Pgp(_) => Ok(None),
        }
    }

    /// Whether [`Seal::writer`] gives a writer.
    pub fn has_writer(&self) -> bool {
        matches!(self, Seal::Sodium { .. })
    }
}
