//! The LZ4 frame reader: a state machine fed from a small input buffer into a 64 KiB
//! history window, so that its memory does not depend on the block size of the frames it
//! reads (WAL-G writes 4 MiB blocks). This file holds the buffers and the dispatch; the
//! frame structure and the block contents are read in the two submodules.

use std::io::{self, Read};

use xxhash_rust::xxh32::Xxh32;

use crate::codec::{IN_BUF_BYTES, Sticky, read_retry, remember, truncated};

mod frame;
mod sequences;

/// Bytes kept behind the write position for matches (offsets are `u16`).
const HISTORY: usize = 64 * 1024;
/// Output window: the history plus as much again of fresh output, so the
/// history is moved to the front once per 64 KiB produced rather than per read.
pub(super) const OUT_BYTES: usize = 2 * HISTORY;
/// Allowance for the decoder struct itself (it is boxed).
pub(super) const DECODER_STRUCT_BYTES: usize = 1024;

const MSG_TRUNCATED: &str = "lz4: truncated frame";
const MSG_SEQUENCE: &str = "lz4: block ends inside a sequence";

/// Heap of [`Lz4Decoder`]: fixed, whatever the block size of the frame.
pub(in crate::codec) fn decoder_state_bytes() -> u64 {
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

/// What a frame's header (or the legacy format) says about the blocks that follow.
#[derive(Clone, Copy, Default)]
struct FrameFormat {
    legacy: bool,
    block_max: usize,
    linked: bool,
    block_checksum: bool,
    content_checksum: bool,
    content_size: Option<u64>,
}

/// Streaming LZ4 decoder with memory independent of the frame's block size.
///
/// Handles the frame format (any block size, linked or independent blocks,
/// block and content checksums, content size), skippable frames, the legacy
/// format, and any number of concatenated frames.
pub(in crate::codec) struct Lz4Decoder<R> {
    inner: R,
    pub(super) inb: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    in_eof: bool,
    /// Decoded bytes: `out[rpos..wpos]` not yet handed to the caller, and up
    /// to `HISTORY` bytes before `wpos` available to matches.
    pub(super) out: Box<[u8]>,
    rpos: usize,
    wpos: usize,
    state: State,
    token: u8,
    frames: u64,
    failed: Option<Sticky>,
    /// How the current frame is laid out.
    frame: FrameFormat,
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
    pub(in crate::codec) fn new(inner: R) -> Self {
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
            frame: FrameFormat::default(),
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

    /// Moves the last `HISTORY` bytes to the front of `out` once everything
    /// in it has been handed out.
    fn slide(&mut self) {
        debug_assert!(self.wpos == OUT_BYTES && self.rpos == self.wpos);
        if self.frame.content_checksum {
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
