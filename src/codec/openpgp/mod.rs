//! OpenPGP encryption as WAL-G does it (walg-compat §5.4): `WALG_PGP_KEY` (armored key text),
//! `WALG_PGP_KEY_PATH` (an armored key file), `WALG_PGP_KEY_PASSPHRASE` (for protected
//! secret keys). Keys, session-key packets and decryption come from rPGP (the `pgp` crate,
//! pure Rust); the message around them is framed here, so that it streams both ways.
//!
//! What is written, for every payload after compression, is what go-crypto's
//! `openpgp.Encrypt` (WAL-G's writer) would write apart from the random bytes: one
//! public-key encrypted session key packet (v3) per key in the key material, each to that
//! key's encryption key chosen as go-crypto chooses it, then one symmetrically encrypted
//! integrity protected data packet (SEIPD v1: OpenPGP CFB with a random prefix, and the MDC,
//! a SHA-1 of the plaintext, at the end) holding one literal data packet, no compression.
//! The cipher is AES-128 unless AES-256 is the only one of the two every key prefers (as
//! go-crypto decides). Both packets use partial body lengths of 8 KiB, so the length of the
//! payload need not be known, and memory is a few chunk buffers whatever its size.
//!
//! An upload reads its body twice (digest, then send) and both reads must give the same
//! bytes: [`PgpKeys::seal`] draws the session key, encrypts it to every recipient and draws
//! a seed for the CFB prefix once per object, so every [`PgpReader`] over the same payload
//! makes the same message.
//!
//! Reading takes any OpenPGP message for a configured secret key (any cipher rPGP knows,
//! compressed or not, signed or not; the signature is not checked, as WAL-G does not), in
//! streaming mode: plaintext comes out before the MDC at the end is checked, so a tampered
//! or truncated object fails at its end, which is before wal-fetch or backup-fetch accept
//! anything they wrote from it.

use ::pgp::types::KeyId;
use std::io;

mod decrypt;
mod encrypt;
mod keys;

pub use decrypt::PgpDecryptor;
pub use encrypt::{PgpReader, PgpSeal};
pub use keys::PgpKeys;

/// Body bytes of every partial chunk of the packets written (2^13: a partial body length
/// is a power of two, and the first one at least 512).
pub const CHUNK: usize = 1 << 13;
/// Room in front of a chunk for its packet tag and length.
const HEAD: usize = 3;
/// rPGP's read buffers (packet bodies, decryption, literal data, decompression).
const RPGP_BUFFER: u64 = 8 * 1024;

/// Heap held by one encrypting stream: two framers' chunks, rPGP's CFB encryptor buffer, the
/// session-key packets (up to 4096-bit RSA), and the read buffer of an upload's digest pass
/// (`storage::CHUNK_BUFFER`).
const ENCRYPT_STATE_BYTES: u64 = 2 * (CHUNK + HEAD) as u64 + RPGP_BUFFER + 16 * 1024 + 4096;
/// Heap held by one decrypting stream: the read buffer under the parser, rPGP's buffers for
/// the outer packet, the decryptor, the inner packet, the literal data and (for messages
/// other tools made) a compressed packet with its inflate window and state.
const DECRYPT_STATE_BYTES: u64 = 6 * RPGP_BUFFER + 8 * 1024 + 64 * 1024;

/// Resident memory OpenPGP costs a process once, beside its streams: the pages of the
/// executable that rPGP's key parsing, session-key and CFB/MDC code touch (file-backed, but
/// counted in RSS and in a memory cgroup; the kernel faults them in 64 KiB around each page
/// touched, and this code is spread across the binary). Measured on the glibc release build:
/// +1.9 MiB of the binary's text resident after parsing a Curve25519 public key alone
/// (`memory-plan`), +2.0–2.8 MiB peak RSS for wal-push and for wal-fetch of a 16 MiB segment
/// to file storage (RSA-3072 and Curve25519 keys) against the same without a key.
pub const PROCESS_BYTES: u64 = 3 * 1024 * 1024;

/// A key id as gpg prints it.
fn hex_id(id: &KeyId) -> String {
    id.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// A message that does not decrypt, or a key that cannot be used: carried in an `io::Error`
/// so callers can tell it from a codec's complaint about what came out of it.
#[derive(Debug)]
pub struct DecryptError(pub String);

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenPGP: {}", self.0)
    }
}

impl std::error::Error for DecryptError {}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, DecryptError(msg.into()))
}

#[cfg(test)]
mod tests;
