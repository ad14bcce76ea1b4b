//! LZ4 frame format (WAL-G's default method).
//!
//! Writing is our own frame writer over `lz4_flex`'s block compressor: one
//! independent block per (at most 64 KiB) write, compressed straight from the
//! caller's buffer into one block-sized output buffer, with the content
//! checksum on. WAL-G reads any block size, and writing blocks from the
//! caller's buffer keeps the encoder at ~82 KiB (lz4_flex's frame encoder
//! copies every byte into a block buffer of its own first: ~160 KiB, and a
//! copy), against the ~8 MiB that WAL-G's own 4 MiB blocks cost. Exactly one
//! frame is written per object because WAL-G's reader silently stops after
//! the first frame (walg-compat §4.1.1).
//!
//! Reading uses our own streaming decoder, because every ready-made frame
//! decoder buffers a whole block (and WAL-G writes 4 MiB blocks, so ~8 MiB of
//! buffers for `lz4_flex`). LZ4 matches reach at most 65535 bytes back, so
//! decoding sequence by sequence straight from the input stream needs only a
//! 64 KiB history window plus small I/O buffers, whatever the block size.

mod decode;
mod encode;

pub(super) use decode::{Lz4Decoder, decoder_state_bytes};
pub use encode::{Lz4Block, Lz4Blocks};
pub(super) use encode::{Lz4Encoder, burst_bytes, encoder_state_bytes};

// The format's magic numbers, here because the writer starts every frame with the first and
// the reader tells the kinds of frame apart by all four.
const FRAME_MAGIC: u32 = 0x184D_2204;
const LEGACY_MAGIC: u32 = 0x184C_2102;
const SKIPPABLE_MAGIC_MIN: u32 = 0x184D_2A50;
const SKIPPABLE_MAGIC_MAX: u32 = 0x184D_2A5F;

/// Legacy-format blocks decompress to at most 8 MiB each.
const LEGACY_BLOCK_MAX: usize = 8 << 20;
/// `LZ4_compressBound(8 MiB)`: a larger legacy block size field is corrupt.
const LEGACY_COMPRESSED_MAX: usize = LEGACY_BLOCK_MAX + LEGACY_BLOCK_MAX / 255 + 16;

#[cfg(test)]
mod tests;
