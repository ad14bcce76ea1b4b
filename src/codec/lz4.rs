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

use std::io::{self, Read, Write};

use xxhash_rust::xxh32::{Xxh32, xxh32};

use super::{IN_BUF_BYTES, Sticky, corrupt, read_retry, remember, truncated};

/// Block size we write. 64 KiB is the smallest the frame format offers and
/// costs almost nothing in ratio, since matches cannot reach further anyway.
const WRITE_BLOCK_BYTES: usize = 64 * 1024;

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
pub(super) struct Lz4Encoder<W: Write> {
    inner: W,
    blocks: Lz4Blocks,
    /// Start of a block that a write left unfinished.
    pending: Vec<u8>,
    header_written: bool,
}

impl<W: Write> Lz4Encoder<W> {
    pub(super) fn new(inner: W) -> Self {
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

    pub(super) fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
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
    pub(super) fn flush_output(&mut self) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        if !self.pending.is_empty() {
            Self::write_block(&mut self.inner, &mut self.blocks, &self.pending)?;
        }
        self.inner.write_all(&self.blocks.trailer())?;
        Ok(self.inner)
    }
}

/// Allowance for the boxed encoder struct itself.
const ENCODER_STRUCT_BYTES: usize = 1024;

/// Heap of [`Lz4Encoder`]: the worst-case compressed block, the hash table
/// that `lz4_flex` allocates for the length of each block call, the struct.
/// `pending` is not counted: wal-rus's writers hand over whole blocks
/// (`aligned_writes_leave_nothing_pending` checks it).
pub(super) fn encoder_state_bytes() -> u64 {
    let dst = lz4_flex::block::get_maximum_output_size(WRITE_BLOCK_BYTES);
    (dst + ENCODER_HASH_TABLE_BYTES + ENCODER_STRUCT_BYTES) as u64
}

/// Most bytes one `write_all` of `len` bytes (or `finish`, `len` 0) hands
/// to the sink: one block per 64 KiB of input, each at most its input plus
/// a 4-byte header (incompressible blocks are stored), plus the 7-byte frame
/// header and the 8-byte end mark and checksum.
pub(super) fn burst_bytes(len: u64) -> u64 {
    let block = WRITE_BLOCK_BYTES as u64;
    len.div_ceil(block).max(1) * (block + 4) + 7 + 8
}

const FRAME_MAGIC: u32 = 0x184D_2204;
const LEGACY_MAGIC: u32 = 0x184C_2102;
const SKIPPABLE_MAGIC_MIN: u32 = 0x184D_2A50;
const SKIPPABLE_MAGIC_MAX: u32 = 0x184D_2A5F;

/// Bytes kept behind the write position for matches (offsets are `u16`).
const HISTORY: usize = 64 * 1024;
/// Output window: the history plus as much again of fresh output, so the
/// history is moved to the front once per 64 KiB produced rather than per read.
const OUT_BYTES: usize = 2 * HISTORY;
/// Legacy-format blocks decompress to at most 8 MiB each.
const LEGACY_BLOCK_MAX: usize = 8 << 20;
/// `LZ4_compressBound(8 MiB)`: a larger legacy block size field is corrupt.
const LEGACY_COMPRESSED_MAX: usize = LEGACY_BLOCK_MAX + LEGACY_BLOCK_MAX / 255 + 16;
/// Allowance for the decoder struct itself (it is boxed).
const DECODER_STRUCT_BYTES: usize = 1024;

const MSG_TRUNCATED: &str = "lz4: truncated frame";
const MSG_SEQUENCE: &str = "lz4: block ends inside a sequence";

/// Heap of [`Lz4Decoder`]: fixed, whatever the block size of the frame.
pub(super) fn decoder_state_bytes() -> u64 {
    (IN_BUF_BYTES + OUT_BYTES + DECODER_STRUCT_BYTES) as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames: expecting a magic number or the end of input.
    Magic,
    /// Inside a skippable frame with this many bytes left.
    Skip(u32),
    BlockHeader,
    LegacyBlockHeader,
    /// Inside an uncompressed block.
    Stored,
    Token,
    /// Reading literal-length extension bytes; the length so far.
    LitLenExt(usize),
    /// Copying literals; how many are left.
    Literals(usize),
    Offset,
    MatchLenExt {
        offset: usize,
        len: usize,
    },
    Match {
        offset: usize,
        left: usize,
    },
    BlockChecksum,
    /// After the end mark: content checksum (if any) and frame checks.
    FrameEnd,
    Done,
}

/// Streaming LZ4 decoder with memory independent of the frame's block size.
///
/// Handles the frame format (any block size, linked or independent blocks,
/// block and content checksums, content size), skippable frames, the legacy
/// format, and any number of concatenated frames.
pub(super) struct Lz4Decoder<R> {
    inner: R,
    inb: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    in_eof: bool,
    /// Decoded bytes: `out[rpos..wpos]` not yet handed to the caller, and up
    /// to `HISTORY` bytes before `wpos` available to matches.
    out: Box<[u8]>,
    rpos: usize,
    wpos: usize,
    state: State,
    token: u8,
    frames: u64,
    failed: Option<Sticky>,
    // Current frame.
    legacy: bool,
    block_max: usize,
    linked: bool,
    block_checksum: bool,
    content_checksum: bool,
    content_size: Option<u64>,
    frame_out: u64,
    content_hash: Xxh32,
    /// `out[hash_mark..wpos]` is not yet fed to `content_hash`.
    hash_mark: usize,
    /// Bytes behind `wpos` that matches may reference (reset per block when
    /// blocks are independent, per frame otherwise).
    history: usize,
    // Current block.
    block_left: usize,
    block_out: usize,
    block_hash: Xxh32,
    block_hash_on: bool,
    /// `inb[block_mark..in_pos]` belongs to the block but is not yet hashed.
    block_mark: usize,
}

impl<R: Read> Lz4Decoder<R> {
    pub(super) fn new(inner: R) -> Self {
        Lz4Decoder {
            inner,
            inb: vec![0; IN_BUF_BYTES].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_eof: false,
            out: vec![0; OUT_BYTES].into_boxed_slice(),
            rpos: 0,
            wpos: 0,
            state: State::Magic,
            token: 0,
            frames: 0,
            failed: None,
            legacy: false,
            block_max: 0,
            linked: false,
            block_checksum: false,
            content_checksum: false,
            content_size: None,
            frame_out: 0,
            content_hash: Xxh32::new(0),
            hash_mark: 0,
            history: 0,
            block_left: 0,
            block_out: 0,
            block_hash: Xxh32::new(0),
            block_hash_on: false,
            block_mark: 0,
        }
    }

    fn avail(&self) -> usize {
        self.in_len - self.in_pos
    }

    /// Tries to have `n` (small) unread input bytes contiguous in `inb`.
    /// Returns how many are available, fewer than `n` only at end of input.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        while self.avail() < n && !self.in_eof {
            if self.in_pos > 0 {
                if self.block_hash_on {
                    self.block_hash
                        .update(&self.inb[self.block_mark..self.in_pos]);
                    self.block_mark = 0;
                }
                self.inb.copy_within(self.in_pos..self.in_len, 0);
                self.in_len -= self.in_pos;
                self.in_pos = 0;
            }
            let got = read_retry(&mut self.inner, &mut self.inb[self.in_len..])?;
            if got == 0 {
                self.in_eof = true;
            }
            self.in_len += got;
        }
        Ok(self.avail())
    }

    fn need(&mut self, n: usize) -> io::Result<()> {
        if self.fill(n)? < n {
            return Err(truncated(MSG_TRUNCATED));
        }
        Ok(())
    }

    fn u32_at(&self, pos: usize) -> u32 {
        u32::from_le_bytes(self.inb[pos..pos + 4].try_into().expect("4 bytes"))
    }

    fn take_u32(&mut self) -> io::Result<u32> {
        self.need(4)?;
        let v = self.u32_at(self.in_pos);
        self.in_pos += 4;
        Ok(v)
    }

    /// One byte of the current compressed block.
    fn block_byte(&mut self) -> io::Result<u8> {
        if self.block_left == 0 {
            return Err(corrupt(MSG_SEQUENCE));
        }
        self.need(1)?;
        let b = self.inb[self.in_pos];
        self.in_pos += 1;
        self.block_left -= 1;
        Ok(b)
    }

    /// Moves the last `HISTORY` bytes to the front of `out` once everything
    /// in it has been handed out.
    fn slide(&mut self) {
        debug_assert!(self.wpos == OUT_BYTES && self.rpos == self.wpos);
        if self.content_checksum {
            self.content_hash
                .update(&self.out[self.hash_mark..self.wpos]);
        }
        self.out.copy_within(OUT_BYTES - HISTORY..OUT_BYTES, 0);
        self.wpos = HISTORY;
        self.rpos = HISTORY;
        self.hash_mark = HISTORY;
    }

    /// Runs the state machine until `out` holds `target` bytes or the input
    /// is finished.
    fn advance(&mut self, target: usize) -> io::Result<()> {
        while self.wpos < target {
            match self.state {
                State::Done => return Ok(()),
                State::Magic => self.frame_start()?,
                State::Skip(n) => self.skip(n)?,
                State::BlockHeader => self.block_header()?,
                State::LegacyBlockHeader => self.legacy_block_header()?,
                State::Stored => self.stored(target)?,
                State::BlockChecksum => self.check_block_checksum()?,
                State::FrameEnd => self.frame_end()?,
                State::Token
                | State::LitLenExt(_)
                | State::Literals(_)
                | State::Offset
                | State::MatchLenExt { .. }
                | State::Match { .. } => self.sequences(target)?,
            }
        }
        Ok(())
    }

    fn frame_start(&mut self) -> io::Result<()> {
        let avail = self.fill(4)?;
        if avail == 0 {
            if self.frames == 0 {
                return Err(truncated("lz4: empty input, no frame"));
            }
            self.state = State::Done;
            return Ok(());
        }
        if avail < 4 {
            return Err(truncated(MSG_TRUNCATED));
        }
        let magic = self.take_u32()?;
        match magic {
            FRAME_MAGIC => self.frame_descriptor(),
            LEGACY_MAGIC => {
                self.begin_frame(true, LEGACY_BLOCK_MAX, false, false, false, None);
                self.state = State::LegacyBlockHeader;
                Ok(())
            }
            SKIPPABLE_MAGIC_MIN..=SKIPPABLE_MAGIC_MAX => {
                let len = self.take_u32()?;
                self.state = State::Skip(len);
                Ok(())
            }
            _ if self.frames == 0 => Err(corrupt("lz4: not an LZ4 frame (bad magic number)")),
            _ => Err(corrupt("lz4: unexpected data after the end of a frame")),
        }
    }

    fn frame_descriptor(&mut self) -> io::Result<()> {
        self.need(2)?;
        let flg = self.inb[self.in_pos];
        let bd = self.inb[self.in_pos + 1];
        if flg >> 6 != 0b01 {
            return Err(corrupt("lz4: unsupported frame version"));
        }
        let has_size = flg & 0x08 != 0;
        let has_dict = flg & 0x01 != 0;
        let len = 2 + if has_size { 8 } else { 0 } + if has_dict { 4 } else { 0 };
        self.need(len + 1)?;
        let desc = &self.inb[self.in_pos..self.in_pos + len];
        let hc = self.inb[self.in_pos + len];
        if (xxh32(desc, 0) >> 8) as u8 != hc {
            return Err(corrupt("lz4: frame header checksum mismatch"));
        }
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(corrupt("lz4: reserved bits set in frame descriptor"));
        }
        if has_dict {
            return Err(corrupt(
                "lz4: frame needs a dictionary, which is not supported",
            ));
        }
        let block_max = match (bd >> 4) & 0x07 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => return Err(corrupt("lz4: invalid maximum block size")),
        };
        let content_size =
            has_size.then(|| u64::from_le_bytes(desc[2..10].try_into().expect("8 bytes")));
        self.in_pos += len + 1;
        let linked = flg & 0x20 == 0;
        self.begin_frame(
            false,
            block_max,
            linked,
            flg & 0x10 != 0,
            flg & 0x04 != 0,
            content_size,
        );
        self.state = State::BlockHeader;
        Ok(())
    }

    fn begin_frame(
        &mut self,
        legacy: bool,
        block_max: usize,
        linked: bool,
        block_checksum: bool,
        content_checksum: bool,
        content_size: Option<u64>,
    ) {
        self.legacy = legacy;
        self.block_max = block_max;
        self.linked = linked;
        self.block_checksum = block_checksum;
        self.content_checksum = content_checksum;
        self.content_size = content_size;
        self.frame_out = 0;
        self.content_hash = Xxh32::new(0);
        self.hash_mark = self.wpos;
        self.history = 0;
    }

    fn skip(&mut self, mut left: u32) -> io::Result<()> {
        while left > 0 {
            if self.fill(1)? == 0 {
                return Err(truncated("lz4: truncated skippable frame"));
            }
            let k = self.avail().min(left as usize);
            self.in_pos += k;
            left -= k as u32;
        }
        // A stream of only skippable frames is valid (and empty).
        self.frames += 1;
        self.state = State::Magic;
        Ok(())
    }

    fn block_header(&mut self) -> io::Result<()> {
        let v = self.take_u32()?;
        if v == 0 {
            self.state = State::FrameEnd;
            return Ok(());
        }
        let size = (v & 0x7FFF_FFFF) as usize;
        if size > self.block_max {
            return Err(corrupt(
                "lz4: block larger than the frame's maximum block size",
            ));
        }
        self.begin_block(size);
        self.state = if v & 0x8000_0000 != 0 {
            State::Stored
        } else {
            State::Token
        };
        Ok(())
    }

    fn legacy_block_header(&mut self) -> io::Result<()> {
        let avail = self.fill(4)?;
        if avail == 0 {
            // The legacy format has no end mark: it ends with the input.
            self.frames += 1;
            self.state = State::Done;
            return Ok(());
        }
        if avail < 4 {
            return Err(truncated(MSG_TRUNCATED));
        }
        let v = self.u32_at(self.in_pos);
        if matches!(
            v,
            FRAME_MAGIC | LEGACY_MAGIC | SKIPPABLE_MAGIC_MIN..=SKIPPABLE_MAGIC_MAX
        ) {
            // Another frame follows; leave its magic for `frame_start`.
            self.frames += 1;
            self.state = State::Magic;
            return Ok(());
        }
        self.in_pos += 4;
        let size = v as usize;
        if size == 0 || size > LEGACY_COMPRESSED_MAX {
            return Err(corrupt("lz4: invalid legacy block size"));
        }
        self.begin_block(size);
        self.state = State::Token;
        Ok(())
    }

    fn begin_block(&mut self, size: usize) {
        self.block_left = size;
        self.block_out = 0;
        if !self.linked {
            self.history = 0;
        }
        if self.block_checksum {
            self.block_hash = Xxh32::new(0);
            self.block_mark = self.in_pos;
            self.block_hash_on = true;
        }
    }

    fn end_block(&mut self) {
        if self.block_hash_on {
            self.block_hash
                .update(&self.inb[self.block_mark..self.in_pos]);
            self.block_hash_on = false;
            self.state = State::BlockChecksum;
        } else if self.legacy {
            self.state = State::LegacyBlockHeader;
        } else {
            self.state = State::BlockHeader;
        }
    }

    fn check_block_checksum(&mut self) -> io::Result<()> {
        let stored = self.take_u32()?;
        if stored != self.block_hash.digest() {
            return Err(corrupt("lz4: block checksum mismatch"));
        }
        self.state = State::BlockHeader;
        Ok(())
    }

    fn frame_end(&mut self) -> io::Result<()> {
        if self.content_checksum {
            let stored = self.take_u32()?;
            self.content_hash
                .update(&self.out[self.hash_mark..self.wpos]);
            self.hash_mark = self.wpos;
            if stored != self.content_hash.digest() {
                return Err(corrupt("lz4: content checksum mismatch"));
            }
        }
        if let Some(size) = self.content_size
            && size != self.frame_out
        {
            return Err(corrupt("lz4: content size mismatch"));
        }
        self.frames += 1;
        self.state = State::Magic;
        Ok(())
    }

    /// Accounts for `k` bytes about to be written at `wpos`.
    fn check_room(&self, k: usize) -> io::Result<()> {
        if self.block_out + k > self.block_max {
            return Err(corrupt(
                "lz4: block decodes to more than the maximum block size",
            ));
        }
        Ok(())
    }

    fn produced(&mut self, k: usize) {
        self.wpos += k;
        self.block_out += k;
        self.frame_out += k as u64;
        self.history = (self.history + k).min(HISTORY);
    }

    fn stored(&mut self, target: usize) -> io::Result<()> {
        while self.block_left > 0 && self.wpos < target {
            if self.fill(1)? == 0 {
                return Err(truncated(MSG_TRUNCATED));
            }
            let k = self.block_left.min(self.avail()).min(target - self.wpos);
            self.out[self.wpos..self.wpos + k]
                .copy_from_slice(&self.inb[self.in_pos..self.in_pos + k]);
            self.in_pos += k;
            self.block_left -= k;
            self.produced(k);
        }
        if self.block_left == 0 {
            self.end_block();
        }
        Ok(())
    }

    /// Decodes LZ4 sequences of a compressed block until `out` holds `target`
    /// bytes or the block ends.
    fn sequences(&mut self, target: usize) -> io::Result<()> {
        loop {
            match self.state {
                State::Token => {
                    let t = self.block_byte()?;
                    self.token = t;
                    let lit = (t >> 4) as usize;
                    self.state = if lit == 15 {
                        State::LitLenExt(15)
                    } else {
                        State::Literals(lit)
                    };
                }
                State::LitLenExt(len) => {
                    let b = self.block_byte()?;
                    let len = len + b as usize;
                    if len > self.block_left {
                        return Err(corrupt("lz4: literal run longer than its block"));
                    }
                    self.state = if b == 255 {
                        State::LitLenExt(len)
                    } else {
                        State::Literals(len)
                    };
                }
                State::Literals(left) => {
                    if left > self.block_left {
                        return Err(corrupt("lz4: literal run longer than its block"));
                    }
                    if left == 0 {
                        if self.block_left == 0 {
                            self.end_block();
                            return Ok(());
                        }
                        self.state = State::Offset;
                        continue;
                    }
                    if self.wpos >= target {
                        return Ok(());
                    }
                    if self.avail() == 0 {
                        self.need(1)?;
                    }
                    let k = left.min(self.avail()).min(target - self.wpos);
                    self.check_room(k)?;
                    self.out[self.wpos..self.wpos + k]
                        .copy_from_slice(&self.inb[self.in_pos..self.in_pos + k]);
                    self.in_pos += k;
                    self.block_left -= k;
                    self.produced(k);
                    self.state = State::Literals(left - k);
                }
                State::Offset => {
                    if self.block_left < 2 {
                        return Err(corrupt(MSG_SEQUENCE));
                    }
                    self.need(2)?;
                    let offset =
                        u16::from_le_bytes([self.inb[self.in_pos], self.inb[self.in_pos + 1]])
                            as usize;
                    self.in_pos += 2;
                    self.block_left -= 2;
                    if offset == 0 || offset > self.history {
                        return Err(corrupt("lz4: match offset out of range"));
                    }
                    let nibble = (self.token & 0x0F) as usize;
                    self.state = if nibble == 15 {
                        State::MatchLenExt {
                            offset,
                            len: 15 + 4,
                        }
                    } else {
                        State::Match {
                            offset,
                            left: nibble + 4,
                        }
                    };
                }
                State::MatchLenExt { offset, len } => {
                    let b = self.block_byte()?;
                    let len = len + b as usize;
                    if len > self.block_max {
                        return Err(corrupt("lz4: match longer than its block"));
                    }
                    self.state = if b == 255 {
                        State::MatchLenExt { offset, len }
                    } else {
                        State::Match { offset, left: len }
                    };
                }
                State::Match { offset, left } => {
                    if left == 0 {
                        if self.block_left == 0 {
                            return Err(corrupt("lz4: block ends with a match"));
                        }
                        self.state = State::Token;
                        continue;
                    }
                    if self.wpos >= target {
                        return Ok(());
                    }
                    let k = left.min(target - self.wpos);
                    self.check_room(k)?;
                    self.copy_match(offset, k);
                    self.produced(k);
                    self.state = State::Match {
                        offset,
                        left: left - k,
                    };
                }
                _ => return Ok(()),
            }
        }
    }

    /// Appends `k` bytes copied from `offset` bytes back, where the source may
    /// overlap the destination (offset < k repeats a pattern).
    fn copy_match(&mut self, offset: usize, k: usize) {
        let src = self.wpos - offset;
        let dst = self.wpos;
        if offset >= k {
            if k <= 16 {
                for i in 0..k {
                    self.out[dst + i] = self.out[src + i];
                }
            } else {
                self.out.copy_within(src..src + k, dst);
            }
            return;
        }
        // `out[src..dst + done]` repeats with period `offset`; while `done`
        // is a multiple of `offset`, copying from `src` keeps the phase, and
        // each copy doubles the repeated region.
        let mut done = 0;
        while done < k {
            let c = (offset + done).min(k - done);
            self.out.copy_within(src..src + c, dst + done);
            done += c;
        }
    }
}

impl<R: Read> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.error());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.rpos < self.wpos {
                let n = buf.len().min(self.wpos - self.rpos);
                buf[..n].copy_from_slice(&self.out[self.rpos..self.rpos + n]);
                self.rpos += n;
                return Ok(n);
            }
            if self.state == State::Done {
                return Ok(0);
            }
            if self.wpos == OUT_BYTES {
                self.slide();
            }
            let target = (self.rpos + buf.len()).min(OUT_BYTES);
            if let Err(e) = self.advance(target) {
                return Err(remember(&mut self.failed, e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{ErrOf, noise, walish};
    use super::*;
    use lz4_flex::frame::FrameDecoder;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Lz4Decoder::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Decodes through a reader that hands out `step` bytes at a time and a
    /// caller buffer of `rbuf` bytes, to exercise every suspension point.
    fn decode_trickle(data: &[u8], step: usize, rbuf: usize) -> io::Result<Vec<u8>> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut d = Lz4Decoder::new(Trickle(data, step));
        let mut out = Vec::new();
        let mut buf = vec![0; rbuf];
        loop {
            let n = d.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn flex(info: FrameInfo, data: &[u8]) -> Vec<u8> {
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn ours(data: &[u8]) -> Vec<u8> {
        let mut e = Lz4Encoder::new(Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A frame in WAL-G's exact layout: `04 22 4D 18 64 70 B9`, 4 MiB
    /// independent blocks (stored when that is smaller), end mark, xxh32.
    fn walg_frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x04, 0x22, 0x4D, 0x18, 0x64, 0x70, 0xB9];
        for chunk in data.chunks(4 << 20) {
            let c = lz4_flex::block::compress(chunk);
            if c.len() < chunk.len() {
                f.extend_from_slice(&(c.len() as u32).to_le_bytes());
                f.extend_from_slice(&c);
            } else {
                f.extend_from_slice(&(chunk.len() as u32 | 0x8000_0000).to_le_bytes());
                f.extend_from_slice(chunk);
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&xxh32(data, 0).to_le_bytes());
        f
    }

    fn legacy_frame(data: &[u8]) -> Vec<u8> {
        let mut f = LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(LEGACY_BLOCK_MAX) {
            let c = lz4_flex::block::compress(chunk);
            f.extend_from_slice(&(c.len() as u32).to_le_bytes());
            f.extend_from_slice(&c);
        }
        f
    }

    fn skippable(n: usize) -> Vec<u8> {
        let mut f = (SKIPPABLE_MAGIC_MIN + 3).to_le_bytes().to_vec();
        f.extend_from_slice(&(n as u32).to_le_bytes());
        f.extend(std::iter::repeat_n(0xAB, n));
        f
    }

    #[test]
    fn walg_header_is_validated_and_accepted() {
        // The header checksum of FLG 0x64 BD 0x70 is 0xB9, as WAL-G writes.
        assert_eq!((xxh32(&[0x64, 0x70], 0) >> 8) as u8, 0xB9);
        let empty = [
            0x04, 0x22, 0x4D, 0x18, 0x64, 0x70, 0xB9, 0, 0, 0, 0, 0x05, 0x5D, 0xCC, 0x02,
        ];
        assert_eq!(decode(&empty).unwrap(), b"");
        for data in [walish(9 << 20, 1), noise(5 << 20, 2), walish(100, 3)] {
            let f = walg_frame(&data);
            assert!(decode(&f).unwrap() == data);
        }
    }

    #[test]
    fn our_frames_look_like_walg_frames() {
        let empty = ours(b"");
        // FLG 0x64 as WAL-G; BD 0x40 (64 KiB blocks) instead of 0x70.
        let hc = (xxh32(&[0x64, 0x40], 0) >> 8) as u8;
        assert_eq!(
            empty,
            [
                0x04, 0x22, 0x4D, 0x18, 0x64, 0x40, hc, 0, 0, 0, 0, 0x05, 0x5D, 0xCC, 0x02
            ]
        );
        let data = walish(1 << 20, 4);
        let f = ours(&data);
        assert_eq!(&f[..7], &[0x04, 0x22, 0x4D, 0x18, 0x64, 0x40, hc]);
        let mut check = Vec::new();
        FrameDecoder::new(&f[..]).read_to_end(&mut check).unwrap();
        assert!(check == data);
        assert!(decode(&f).unwrap() == data);
    }

    #[test]
    fn lz4_flex_frames_of_every_shape() {
        let inputs = [
            Vec::new(),
            vec![7u8],
            walish(100_000, 5),
            noise(300_000, 6),
            walish(5 << 20, 7),
            [noise(3 << 20, 8), walish(3 << 20, 9)].concat(),
        ];
        for size in [
            BlockSize::Max64KB,
            BlockSize::Max256KB,
            BlockSize::Max1MB,
            BlockSize::Max4MB,
        ] {
            for mode in [BlockMode::Independent, BlockMode::Linked] {
                for (bc, cc) in [(false, false), (true, false), (false, true), (true, true)] {
                    for data in &inputs {
                        for cs in [None, Some(data.len() as u64)] {
                            let info = FrameInfo::new()
                                .block_size(size)
                                .block_mode(mode)
                                .block_checksums(bc)
                                .content_checksum(cc)
                                .content_size(cs);
                            let f = flex(info, data);
                            let got = decode(&f).unwrap();
                            assert!(
                                got == *data,
                                "{size:?} {mode:?} bc={bc} cc={cc} len={}",
                                data.len()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn suspension_points_do_not_matter() {
        let data = walish(400_000, 10);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max256KB)
            .block_mode(BlockMode::Linked)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(data.len() as u64));
        let f = flex(info, &data);
        for (step, rbuf) in [
            (1, 1),
            (1, 7000),
            (3, 100),
            (4096, 1),
            (100_000, 65_536),
            (7, 200_000),
        ] {
            assert!(
                decode_trickle(&f, step, rbuf).unwrap() == data,
                "step {step} rbuf {rbuf}"
            );
        }
    }

    #[test]
    fn concatenated_skippable_and_legacy_frames() {
        let a = walish(200_000, 11);
        let b = noise(70_000, 12);
        let c = walish(9 << 20, 13);
        let mut s = skippable(10);
        s.extend(walg_frame(&a));
        s.extend(skippable(0));
        s.extend(ours(&b));
        s.extend(legacy_frame(&c));
        s.extend(ours(&a));
        s.extend(skippable(5));
        let want = [&a[..], &b, &c, &a].concat();
        assert!(decode(&s).unwrap() == want);
        assert!(decode_trickle(&s, 5, 3000).unwrap() == want);
        assert_eq!(decode(&legacy_frame(b"")).unwrap(), b"");
        assert_eq!(decode(&skippable(3)).unwrap(), b"");
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let data = walish(3000, 14);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(data.len() as u64));
        let frames = [
            ours(&data),
            walg_frame(&data),
            flex(info, &data),
            ours(b""),
            skippable(4),
        ];
        for f in frames {
            for cut in 0..f.len() {
                let err = decode(&f[..cut]).err_of();
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}: {err}");
            }
            // A truncated second frame is an error too.
            let two = [&f[..], &f[..f.len() - 1]].concat();
            assert!(decode(&two).is_err());
        }
    }

    #[test]
    fn every_bit_flip_in_stored_data_is_detected() {
        let data = noise(300, 16);
        let f = walg_frame(&data);
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            assert!(decode(&g).is_err(), "bit {i}");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let data = walish(600, 15);
        for f in [ours(&data), walg_frame(&data)] {
            for i in 0..f.len() * 8 {
                let mut g = f.clone();
                g[i / 8] ^= 1 << (i % 8);
                match decode(&g) {
                    Err(e) => assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                        ),
                        "{e}"
                    ),
                    // An offset flipped to an identical earlier copy of the
                    // same bytes changes nothing; anything else must fail.
                    Ok(out) => assert!(out == data, "bit {i} decoded to garbage"),
                }
            }
        }
    }

    /// A frame without checksums around hand-written block contents.
    fn raw_block_frame(block: &[u8], independent: bool) -> Vec<u8> {
        let flg = if independent { 0x60 } else { 0x40 };
        let mut f = vec![0x04, 0x22, 0x4D, 0x18, flg, 0x40];
        f.push((xxh32(&[flg, 0x40], 0) >> 8) as u8);
        f.extend_from_slice(&(block.len() as u32).to_le_bytes());
        f.extend_from_slice(block);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f
    }

    #[test]
    fn hand_made_blocks() {
        // "abcd" then a 10-byte match at offset 4, then 5 literals.
        let ok = [
            0x46, b'a', b'b', b'c', b'd', 4, 0, 0x50, b'v', b'w', b'x', b'y', b'z',
        ];
        assert_eq!(
            decode(&raw_block_frame(&ok, true)).unwrap(),
            b"abcdabcdabcdabvwxyz"
        );
        // Offset 1 repeats a single byte (the run-length case).
        let rle = [0x1F, b'z', 1, 0, 200, 0x00];
        let out = decode(&raw_block_frame(&rle, true)).unwrap();
        assert_eq!(out, vec![b'z'; 1 + 15 + 4 + 200]);

        let bad = [
            (&[0x40, b'a', b'b', b'c', b'd', 0, 0, 0x00][..], "offset 0"),
            (
                &[0x40, b'a', b'b', b'c', b'd', 5, 0, 0x00][..],
                "offset beyond history",
            ),
            (
                &[0x40, b'a', b'b', b'c', b'd', 4, 0][..],
                "ends with a match",
            ),
            (
                &[0x40, b'a', b'b', b'c', b'd', 4][..],
                "ends inside the offset",
            ),
            (
                &[0x50, b'a', b'b', b'c', b'd'][..],
                "literals past block end",
            ),
            (&[0xF0, 255, 255][..], "literal length past block end"),
            (
                &[0x4F, b'a', b'b', b'c', b'd', 4, 0, 255][..],
                "match length past block end",
            ),
        ];
        for (block, what) in bad {
            let err = decode(&raw_block_frame(block, true)).err_of();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        }
        // A match longer than the 64 KiB maximum block size.
        let mut long = vec![0x1F, b'q', 1, 0];
        long.extend(std::iter::repeat_n(255, 300));
        long.extend_from_slice(&[0, 0x00]);
        assert!(decode(&raw_block_frame(&long, true)).is_err());
    }

    #[test]
    fn independent_blocks_cannot_reach_back() {
        // Block 2 references block 1: fine when linked, corrupt when not.
        let b1 = [0x40, b'a', b'b', b'c', b'd'];
        let b2 = [0x00, 4, 0, 0x00];
        let frame = |flg: u8| {
            let mut f = vec![0x04, 0x22, 0x4D, 0x18, flg, 0x40];
            f.push((xxh32(&[flg, 0x40], 0) >> 8) as u8);
            for b in [&b1[..], &b2[..]] {
                f.extend_from_slice(&(b.len() as u32).to_le_bytes());
                f.extend_from_slice(b);
            }
            f.extend_from_slice(&[0, 0, 0, 0]);
            f
        };
        assert_eq!(decode(&frame(0x40)).unwrap(), b"abcdabcd");
        assert_eq!(
            decode(&frame(0x60)).err_of().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn malformed_headers() {
        let good = ours(b"hello");
        let mut garbage_after = good.clone();
        garbage_after.extend_from_slice(b"junk");
        assert_eq!(
            decode(&garbage_after).err_of().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            decode(b"not lz4").err_of().kind(),
            io::ErrorKind::InvalidData
        );
        // Dictionary id (FLG bit 0) with a valid header checksum.
        let flg = 0x65;
        let mut f = vec![0x04, 0x22, 0x4D, 0x18, flg, 0x40, 1, 2, 3, 4];
        f.push((xxh32(&f[4..10], 0) >> 8) as u8);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let err = decode(&f).err_of();
        assert!(err.to_string().contains("dictionary"), "{err}");
        // Content size that does not match.
        let info = FrameInfo::new().content_size(Some(5));
        let mut f = flex(info, b"hello");
        let before = decode(&f).unwrap();
        assert_eq!(before, b"hello");
        f[6] = 6; // content size field, then fix the header checksum
        f[14] = (xxh32(&f[4..14], 0) >> 8) as u8;
        assert!(decode(&f).err_of().to_string().contains("content size"));
    }

    #[test]
    fn errors_are_sticky() {
        let f = ours(&walish(100_000, 17));
        let mut d = Lz4Decoder::new(&f[..f.len() - 3]);
        let mut sink = Vec::new();
        assert!(d.read_to_end(&mut sink).is_err());
        assert!(d.read(&mut [0; 10]).is_err());
    }

    #[test]
    fn aligned_writes_leave_nothing_pending() {
        let data = walish(5 * WRITE_BLOCK_BYTES + 1000, 31);
        let mut e = Lz4Encoder::new(Vec::new());
        for block in data.chunks(WRITE_BLOCK_BYTES) {
            e.write_all(block).unwrap();
        }
        // Only the short last write is held back, and it did allocate.
        assert_eq!(e.pending.len(), 1000);
        let mut aligned = Lz4Encoder::new(Vec::new());
        for block in data[..5 * WRITE_BLOCK_BYTES].chunks(WRITE_BLOCK_BYTES) {
            aligned.write_all(block).unwrap();
        }
        assert_eq!(aligned.pending.capacity(), 0);
        // Every block is at most 64 KiB and the frame decodes in lz4_flex too.
        let f = e.finish().unwrap();
        let mut check = Vec::new();
        FrameDecoder::new(&f[..]).read_to_end(&mut check).unwrap();
        assert!(check == data);
        assert_eq!(f, ours(&data));
    }

    #[test]
    fn buffers_stay_fixed_for_4mib_blocks() {
        let data = walish(16 << 20, 18);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max4MB)
            .content_checksum(true);
        let f = flex(info, &data);
        let mut d = Lz4Decoder::new(&f[..]);
        let mut n = 0;
        let mut buf = vec![0; 1 << 20];
        loop {
            let k = d.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            assert!(buf[..k] == data[n..n + k]);
            n += k;
        }
        assert_eq!(n, data.len());
        assert_eq!(d.inb.len() + d.out.len(), IN_BUF_BYTES + OUT_BYTES);
        assert!(std::mem::size_of::<Lz4Decoder<&[u8]>>() <= DECODER_STRUCT_BYTES);
        assert!(std::mem::size_of::<Lz4Encoder<std::fs::File>>() <= ENCODER_STRUCT_BYTES);
    }
}
