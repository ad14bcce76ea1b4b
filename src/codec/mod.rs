//! The compression room: every stream format WAL-G writes or reads, behind one
//! streaming [`Encoder`] and one streaming [`Decoder`].
//!
//! Why it looks the way it does:
//!
//! * **Byte compatibility with WAL-G** (walg-compat §4). Objects written here
//!   must be readable by WAL-G and vice versa, so each method emits exactly the
//!   framing WAL-G's readers understand: one LZ4 frame, one zstd frame, an
//!   LZMA-"alone" stream with the 13-byte header, a raw Brotli stream, or the
//!   bytes unchanged. Gzip is only ever read (WAL-G never writes it).
//! * **Memory is small, flat and known before the run.** Every codec's state
//!   is bounded by the parameters chosen here, and [`encoder_state_bytes`],
//!   [`decoder_state_bytes`], [`decoder_state_bytes_own`] and
//!   [`decoder_state_bytes_max`] report that bound so `memory-plan` can add
//!   it up. That is why the LZ4 decoder is our own (a 4 MiB-block WAL-G frame
//!   would otherwise cost ~8 MiB of buffers) and why windows are capped.
//! * **Determinism.** The uploader compresses the same input twice (once to
//!   learn length and SHA-256, once to stream it), so an encoder's output
//!   depends only on the input bytes and [`EncodeOptions`] — not on how the
//!   input was chunked into `write` calls, and not on `flush` calls, which
//!   never end a block early.
//! * **No silent short reads.** A truncated object always ends in an
//!   `io::Error` (`UnexpectedEof` or `InvalidData`, message prefixed with the
//!   format name) before the decoder would report end of stream, and so does
//!   corruption in the formats that carry a checksum (LZ4 and zstd as we and
//!   WAL-G write them, gzip). LZMA and Brotli have none, so a flipped bit
//!   there is caught only when it breaks the stream's structure. Bytes
//!   returned before an error must be discarded by the caller.

mod brotli;
mod crypter;
mod decode;
mod encode;
mod gzip;
mod lz4;
mod lzma;
mod method;
pub mod openpgp;
mod plumbing;
pub mod sodium;
mod zstd;

pub use crypter::{Crypter, Seal, SealReader};
pub use decode::{
    Decoder, NotThisFormat, decoder_state_bytes, decoder_state_bytes_max, decoder_state_bytes_own,
};
pub use encode::{Encoder, encoder_burst_bytes, encoder_state_bytes};
pub use lz4::{Lz4Block, Lz4Blocks};
pub use method::{EncodeOptions, Method, ReadFormat, WAL_PROBE_ORDER, ZstdLevel};
// Here so that every codec reaches them as `super::...`, wherever they are kept.
use plumbing::{
    ErrorSlot, IN_BUF_BYTES, OUT_BUF_BYTES, OutBuf, Source, Sticky, corrupt, read_retry, remember,
    truncated,
};

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod testdata {
    //! Inputs shared by the codec tests.

    use super::Method;

    /// Every method, for the tests that go through them all.
    pub const ALL_METHODS: [Method; 5] = [
        Method::Lz4,
        Method::Lzma,
        Method::Zstd,
        Method::Brotli,
        Method::None,
    ];

    /// Deterministic data that looks a little like a WAL segment: runs of
    /// zeros, repeated records with varying fields, and incompressible noise.
    pub fn walish(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        while out.len() < len {
            let r = next();
            let n = (64 + (r >> 8) % 4096) as usize;
            match r % 4 {
                0 => out.extend(std::iter::repeat_n(0u8, n)),
                1 => {
                    for _ in 0..n {
                        out.push((next() >> 24) as u8);
                    }
                }
                _ => {
                    let rec = format!("INSERT INTO t VALUES ({}, 'row-{}');", r % 1000, r % 77);
                    let start = out.len();
                    while out.len() - start < n {
                        out.extend_from_slice(rec.as_bytes());
                    }
                }
            }
        }
        out.truncate(len);
        out
    }

    /// `unwrap_err` for decode results that prints the length, not the
    /// (possibly megabytes of) output, when decoding unexpectedly succeeded.
    pub trait ErrOf {
        fn err_of(self) -> std::io::Error;
    }

    impl ErrOf for std::io::Result<Vec<u8>> {
        fn err_of(self) -> std::io::Error {
            match self {
                Ok(v) => panic!("decoded {} bytes instead of failing", v.len()),
                Err(e) => e,
            }
        }
    }

    /// Incompressible bytes.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}
