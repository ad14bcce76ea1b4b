//! The LZ4 frame writer: WAL-G's frame layout, with 64 KiB blocks compressed straight from
//! the caller's buffer so that the default method's encoder stays small (see the parent's
//! notes on memory).

use std::io::{self, Write};

use xxhash_rust::xxh32::{Xxh32, xxh32};

use super::FRAME_MAGIC;

/// Block size we write. 64 KiB is the smallest the frame format offers and
/// costs almost nothing in ratio, since matches cannot reach further anyway.
pub(super) const WRITE_BLOCK_BYTES: usize = 64 * 1024;

/// Entries of `lz4_flex`'s compression hash table (`HashTable4K`, `u32` each),
/// which is not exported; the allocation test checks the total.
const ENCODER_HASH_TABLE_BYTES: usize = 4096 * 4;

/// Frame descriptor we write: FLG 0x64 (version 1, independent blocks,
/// content checksum), BD 0x40 (64 KiB blocks). WAL-G writes BD 0x70.
const FLG: u8 = 0x64;
const BD: u8 = 0x40;
/// Set in a block's size field when the block is stored uncompressed.
const STORED: u32 = 0x8000_0000;

/// The frame writer's core: the frame's header and trailer and one block at a
/// time, with no sink. [`Lz4Encoder`] writes its pieces to a `Write`;
/// `pipeline::compress` hands them to an upload straight from here, so the
/// default method's hot path copies each compressed block only into the
/// socket.
pub struct Lz4Blocks {
    /// One compressed block; `vec![0; n]` so that only the pages a block
    /// really fills become resident (compressible data fills a quarter).
    dst: Vec<u8>,
    checksum: Xxh32,
}

/// One block as [`Lz4Blocks::block`] made it.
pub enum Lz4Block {
    /// Its size field, and the length of the compressed bytes in
    /// [`Lz4Blocks::compressed`].
    Compressed([u8; 4], usize),
    /// Its size field; the block's input follows as it is.
    Stored([u8; 4]),
}

impl Default for Lz4Blocks {
    fn default() -> Self {
        Lz4Blocks {
            dst: vec![0; lz4_flex::block::get_maximum_output_size(WRITE_BLOCK_BYTES)],
            checksum: Xxh32::new(0),
        }
    }
}

impl Lz4Blocks {
    /// Input bytes per block; callers cut their input at this size (the last
    /// block may be shorter) so the output depends on the data alone.
    pub const BLOCK: usize = WRITE_BLOCK_BYTES;

    /// The frame header: magic, FLG, BD and the header checksum.
    pub fn header() -> [u8; 7] {
        let hc = (xxh32(&[FLG, BD], 0) >> 8) as u8;
        let m = FRAME_MAGIC.to_le_bytes();
        [m[0], m[1], m[2], m[3], FLG, BD, hc]
    }

    /// Compresses one non-empty block of at most [`Self::BLOCK`] bytes
    /// (an empty one would read as the end mark); stored when compression
    /// does not make it smaller.
    pub fn block(&mut self, block: &[u8]) -> io::Result<Lz4Block> {
        debug_assert!(!block.is_empty() && block.len() <= WRITE_BLOCK_BYTES);
        self.checksum.update(block);
        let n = lz4_flex::block::compress_into(block, &mut self.dst)
            .map_err(|e| io::Error::other(format!("lz4: {e}")))?;
        Ok(if n < block.len() {
            Lz4Block::Compressed((n as u32).to_le_bytes(), n)
        } else {
            Lz4Block::Stored((block.len() as u32 | STORED).to_le_bytes())
        })
    }

    /// The compressed bytes of the last [`Lz4Block::Compressed`] block.
    pub fn compressed(&self, n: usize) -> &[u8] {
        &self.dst[..n]
    }

    /// The end mark and the content checksum of everything blocked so far.
    pub fn trailer(&self) -> [u8; 8] {
        let mut t = [0u8; 8];
        t[4..].copy_from_slice(&self.checksum.digest().to_le_bytes());
        t
    }
}

/// Streaming LZ4 compressor producing a single frame.
///
/// Blocks are cut every 64 KiB of input, whatever the write sizes, so the
/// output depends on the data alone (the two passes of an upload must agree
/// byte for byte). Whole blocks are compressed straight from the caller's
/// buffer; only a write that ends inside a block leaves its tail in
/// `pending`, which is allocated on first use. wal-rus's pipeline writes
/// whole 64 KiB buffers (`pipeline::compress`), so it never allocates it.
pub(in crate::codec) struct Lz4Encoder<W: Write> {
    inner: W,
    blocks: Lz4Blocks,
    /// Start of a block that a write left unfinished.
    pub(super) pending: Vec<u8>,
    header_written: bool,
}

impl<W: Write> Lz4Encoder<W> {
    pub(in crate::codec) fn new(inner: W) -> Self {
        Lz4Encoder {
            inner,
            blocks: Lz4Blocks::default(),
            pending: Vec::new(),
            header_written: false,
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&Lz4Blocks::header())?;
            self.header_written = true;
        }
        Ok(())
    }

    fn write_block(inner: &mut W, blocks: &mut Lz4Blocks, block: &[u8]) -> io::Result<()> {
        match blocks.block(block)? {
            Lz4Block::Compressed(size, n) => {
                inner.write_all(&size)?;
                inner.write_all(blocks.compressed(n))
            }
            Lz4Block::Stored(size) => {
                inner.write_all(&size)?;
                inner.write_all(block)
            }
        }
    }

    pub(in crate::codec) fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.write_header()?;
        if !self.pending.is_empty() {
            let take = buf.len().min(WRITE_BLOCK_BYTES - self.pending.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() < WRITE_BLOCK_BYTES {
                return Ok(());
            }
            Self::write_block(&mut self.inner, &mut self.blocks, &self.pending)?;
            self.pending.clear();
        }
        let mut blocks = buf.chunks_exact(WRITE_BLOCK_BYTES);
        for block in &mut blocks {
            Self::write_block(&mut self.inner, &mut self.blocks, block)?;
        }
        let tail = blocks.remainder();
        if !tail.is_empty() {
            self.pending.reserve_exact(WRITE_BLOCK_BYTES);
            self.pending.extend_from_slice(tail);
        }
        Ok(())
    }

    /// Every finished block is already with the sink; an unfinished one
    /// stays pending, so that flushing does not change the output.
    pub(in crate::codec) fn flush_output(&mut self) -> io::Result<()> {
        Ok(())
    }

    pub(in crate::codec) fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        if !self.pending.is_empty() {
            Self::write_block(&mut self.inner, &mut self.blocks, &self.pending)?;
        }
        self.inner.write_all(&self.blocks.trailer())?;
        Ok(self.inner)
    }
}

/// Allowance for the boxed encoder struct itself.
pub(super) const ENCODER_STRUCT_BYTES: usize = 1024;

/// Heap of [`Lz4Encoder`]: the worst-case compressed block, the hash table
/// that `lz4_flex` allocates for the length of each block call, the struct.
/// `pending` is not counted: wal-rus's writers hand over whole blocks
/// (`aligned_writes_leave_nothing_pending` checks it).
pub(in crate::codec) fn encoder_state_bytes() -> u64 {
    let dst = lz4_flex::block::get_maximum_output_size(WRITE_BLOCK_BYTES);
    (dst + ENCODER_HASH_TABLE_BYTES + ENCODER_STRUCT_BYTES) as u64
}

/// Most bytes one `write_all` of `len` bytes (or `finish`, `len` 0) hands
/// to the sink: one block per 64 KiB of input, each at most its input plus
/// a 4-byte header (incompressible blocks are stored), plus the 7-byte frame
/// header and the 8-byte end mark and checksum.
pub(in crate::codec) fn burst_bytes(len: u64) -> u64 {
    let block = WRITE_BLOCK_BYTES as u64;
    len.div_ceil(block).max(1) * (block + 4) + 7 + 8
}
