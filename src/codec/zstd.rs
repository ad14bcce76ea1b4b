//! Zstandard: one frame per object with a content checksum, through libzstd's
//! streaming API (`zstd_safe`), used directly so that we control the frame
//! boundary (truncation detection) and can ask libzstd how much it holds.
//!
//! The window is capped at 1 MiB (window log 20) so the encoder's memory
//! stays bounded: a 16 MiB segment then compresses 1.5% larger than with
//! level 3's own 2 MiB window, and wal-push holds 7.7 MiB instead of 9.6
//! (wal-fetch of it 6.7 instead of 8.6). WAL-G reads windows up to 512 MiB. Decoding accepts
//! windows up to 8 MiB (log 23), exactly what WAL-G writes, and refuses
//! larger ones instead of allocating them. No worker threads are used: the
//! crate is built without libzstd's multithreading and `NbWorkers` is 0.

use std::io::{self, Read, Write};

use ::zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};
use zstd_safe::zstd_sys::{ZSTD_EndDirective, ZSTD_ErrorCode};

use super::{IN_BUF_BYTES, Sticky, ZstdLevel, corrupt, read_retry, remember, truncated};

/// Largest window we write.
const OWN_MAX_WINDOW_LOG: u32 = 20;
/// Largest window any wal-rus version wrote (earlier ones capped at 2 MiB):
/// what the memory plan allows for reading our own objects.
const OWN_WRITTEN_WINDOW_LOG: u32 = 21;
/// Window WAL-G writes (8 MiB; 4 MiB at `fastest` on master).
pub(super) const WALG_WINDOW_LOG: u32 = 23;
/// Largest window we decode.
pub(super) const MAX_WINDOW_LOG: u32 = 23;

/// Size of the buffer between libzstd and the sink. libzstd keeps its own
/// block-sized output buffer, so this only sets the size of our writes.
const ENC_OUT_BYTES: usize = 32 * 1024;

/// libzstd's block size (`ZSTD_BLOCKSIZE_MAX`).
const BLOCK_BYTES: u64 = 128 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    Fast,
    DFast,
    Lazy,
    Lazy2,
}

/// libzstd's compression parameters for a level (the "default" row of
/// `clevels.h`, zstd 1.5.7, for inputs over 256 KiB or of unknown size);
/// smaller pledged sizes only ever shrink them.
#[derive(Clone, Copy, Debug)]
struct CParams {
    window_log: u32,
    chain_log: u32,
    hash_log: u32,
    strategy: Strategy,
}

/// The level's row, uncapped.
fn native_cparams(level: ZstdLevel) -> CParams {
    let (window_log, chain_log, hash_log, strategy) = match level {
        ZstdLevel::Fastest => (19, 13, 14, Strategy::Fast),
        ZstdLevel::Default => (21, 16, 17, Strategy::DFast),
        ZstdLevel::Better => (21, 19, 20, Strategy::Lazy),
        ZstdLevel::Best => (22, 21, 22, Strategy::Lazy2),
    };
    CParams {
        window_log,
        chain_log,
        hash_log,
        strategy,
    }
}

/// What we compress with: the level's row, window capped.
fn cparams(level: ZstdLevel) -> CParams {
    let p = native_cparams(level);
    CParams {
        window_log: p.window_log.min(OWN_MAX_WINDOW_LOG),
        ..p
    }
}

/// Window log of the frames we write at this level.
#[cfg(test)]
pub(super) fn own_window_log(level: ZstdLevel) -> u32 {
    cparams(level).window_log
}

/// Window log the plan allows for reading objects wal-rus wrote at this
/// level, with this version or an earlier one.
pub(super) fn own_read_window_log(level: ZstdLevel) -> u32 {
    native_cparams(level).window_log.min(OWN_WRITTEN_WINDOW_LOG)
}

/// Upper bound of libzstd's compression context for our parameters, after
/// `ZSTD_estimateCCtxSize_usingCCtxParams_internal` (zstd 1.5.7), which is not
/// exported without the crate's `experimental` feature:
/// window + one block of input buffer, one block of output buffer, the
/// match-finder tables, the sequence store and fixed workspaces. The greedy
/// and lazy strategies use the row-based match finder (no chain table, one
/// tag byte per hash entry); `fast` has no chain table; `dfast` uses the
/// chain table as its second hash table.
pub(super) fn encoder_state_bytes(level: ZstdLevel) -> u64 {
    let p = cparams(level);
    let window = 1u64 << p.window_log;
    let block = BLOCK_BYTES.min(window);
    let buffers = window + block + (block + block / 256 + 64);
    let hash = 4u64 << p.hash_log;
    let tables = match p.strategy {
        Strategy::Fast => hash,
        Strategy::DFast => hash + (4u64 << p.chain_log),
        Strategy::Lazy | Strategy::Lazy2 => hash + (1u64 << p.hash_log),
    };
    // Literals + sequences (8 bytes each, at most one per 4 bytes at
    // min-match >= 4) + 3 code arrays.
    let max_seq = block / 4;
    let seq_store = block + 32 + max_seq * 8 + 3 * max_seq;
    // Entropy workspace, two compressed-block states and the context struct
    // itself, rounded up; checked against `ZSTD_sizeof_CCtx` in the tests.
    let fixed = 48 * 1024;
    buffers + tables + seq_store + fixed + ENC_OUT_BYTES as u64
}

/// Most bytes one `write_all` of `len` bytes (or `finish`, `len` 0) hands
/// to the sink: libzstd compresses a block once 128 KiB of input are
/// buffered (and `write_all` drains what it completed), so a call emits at
/// most `ceil(len / 128 KiB)` blocks and `finish` one; a block never exceeds
/// its input by more than its 3-byte header (it is stored raw instead), plus
/// the frame header (18) and checksum (4).
pub(super) fn burst_bytes(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES).max(1) * (BLOCK_BYTES + 3) + 32
}

/// Size of libzstd's `ZSTD_DCtx` struct (entropy tables, 64 KiB literal
/// buffer, ...) rounded up; the tests check it against `ZSTD_sizeof_DCtx`.
const DCTX_STRUCT_BYTES: u64 = 168 * 1024;

/// Upper bound of a decoder for frames with windows up to `1 << window_log`:
/// `ZSTD_estimateDStreamSize` (context + one block of input buffer +
/// window + 2 blocks + 64 bytes of output buffer) plus our input buffer.
pub(super) fn decoder_state_bytes(window_log: u32) -> u64 {
    let window = 1u64 << window_log;
    let block = BLOCK_BYTES.min(window);
    DCTX_STRUCT_BYTES + block + window + 2 * block + 64 + IN_BUF_BYTES as u64 + 1024
}

fn zstd_error(code: usize) -> io::Error {
    corrupt(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

fn setup_error(what: &str, code: usize) -> io::Error {
    io::Error::other(format!(
        "zstd: cannot set {what}: {}",
        zstd_safe::get_error_name(code)
    ))
}

/// Streaming zstd compressor producing a single frame.
pub(super) struct ZstdEncoder<W: Write> {
    cctx: CCtx<'static>,
    out: Box<[u8]>,
    inner: W,
}

impl<W: Write> ZstdEncoder<W> {
    pub(super) fn new(inner: W, level: ZstdLevel, size_hint: Option<u64>) -> io::Result<Self> {
        let mut cctx = CCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        let p = cparams(level);
        cctx.set_parameter(CParameter::CompressionLevel(level.libzstd_level()))
            .map_err(|c| setup_error("level", c))?;
        // Only ever lowers the level's own window (level 11 would use 4 MiB).
        cctx.set_parameter(CParameter::WindowLog(p.window_log))
            .map_err(|c| setup_error("window", c))?;
        cctx.set_parameter(CParameter::ChecksumFlag(true))
            .map_err(|c| setup_error("checksum flag", c))?;
        cctx.set_parameter(CParameter::NbWorkers(0))
            .map_err(|c| setup_error("worker count", c))?;
        if size_hint.is_some() {
            cctx.set_pledged_src_size(size_hint)
                .map_err(|c| setup_error("pledged size", c))?;
        }
        Ok(ZstdEncoder {
            cctx,
            out: vec![0; ENC_OUT_BYTES].into_boxed_slice(),
            inner,
        })
    }

    /// One call of libzstd over `input` into `out`, whose bytes go on to the sink; returns
    /// the bytes written and what libzstd says it still holds.
    fn step(
        &mut self,
        input: &mut InBuffer<'_>,
        end: ZSTD_EndDirective,
    ) -> io::Result<(usize, usize)> {
        let mut output = OutBuffer::around(&mut self.out[..]);
        let left = self
            .cctx
            .compress_stream2(&mut output, input, end)
            .map_err(|c| io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(c))))?;
        let n = output.pos();
        self.inner.write_all(&self.out[..n])?;
        Ok((n, left))
    }

    pub(super) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut input = InBuffer::around(buf);
        while input.pos() < buf.len() {
            self.step(&mut input, ZSTD_EndDirective::ZSTD_e_continue)?;
        }
        // Drain what libzstd still holds of the blocks this call completed,
        // so no call carries output of an earlier one (see `burst_bytes`).
        // Only moves bytes: no new block is started without input.
        loop {
            let (n, _) = self.step(
                &mut InBuffer::around(&[]),
                ZSTD_EndDirective::ZSTD_e_continue,
            )?;
            if n < self.out.len() {
                return Ok(());
            }
        }
    }

    /// Passes on the flush to the sink without ending a zstd block: output
    /// must not depend on when callers flush.
    pub(super) fn flush_output(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub(super) fn finish(mut self) -> io::Result<W> {
        loop {
            let (_, left) = self.step(&mut InBuffer::around(&[]), ZSTD_EndDirective::ZSTD_e_end)?;
            if left == 0 {
                return Ok(self.inner);
            }
        }
    }

    pub(super) fn native_heap_bytes(&self) -> u64 {
        self.cctx.sizeof() as u64
    }
}

/// Streaming zstd decompressor. Reads any number of frames (including
/// skippable ones) and treats a 0-byte object as empty content, which is what
/// WAL-G writes for empty input.
pub(super) struct ZstdDecoder<R> {
    dctx: DCtx<'static>,
    inner: R,
    inb: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    in_eof: bool,
    /// Whether a frame has been started and not yet completely decoded and
    /// flushed. End of input in this state is a truncation.
    in_frame: bool,
    failed: Option<Sticky>,
}

impl<R: Read> ZstdDecoder<R> {
    pub(super) fn new(inner: R) -> io::Result<Self> {
        let mut dctx = DCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a decompression context"))?;
        dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(|c| setup_error("window limit", c))?;
        Ok(ZstdDecoder {
            dctx,
            inner,
            inb: vec![0; IN_BUF_BYTES].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_eof: false,
            in_frame: false,
            failed: None,
        })
    }

    pub(super) fn native_heap_bytes(&self) -> u64 {
        self.dctx.sizeof() as u64
    }

    fn step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.in_pos == self.in_len && !self.in_eof {
                self.in_pos = 0;
                self.in_len = read_retry(&mut self.inner, &mut self.inb)?;
                self.in_eof = self.in_len == 0;
            }
            let mut output = OutBuffer::around(&mut *buf);
            let mut input = InBuffer::around(&self.inb[self.in_pos..self.in_len]);
            let hint = self
                .dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|c| {
                    // libzstd returns error codes as `(size_t)-code`.
                    let too_large =
                        ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge as usize;
                    if c == 0usize.wrapping_sub(too_large) {
                        corrupt(format!(
                            "zstd: frame window larger than the {} MiB limit",
                            1 << (MAX_WINDOW_LOG - 20)
                        ))
                    } else {
                        zstd_error(c)
                    }
                })?;
            let consumed = input.pos();
            let produced = output.pos();
            self.in_pos += consumed;
            // Only a call that made progress says anything about the frame:
            // with no input at a boundary libzstd returns a non-zero hint too.
            if consumed > 0 || produced > 0 {
                self.in_frame = hint != 0;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if self.in_eof && self.in_pos == self.in_len {
                if self.in_frame {
                    return Err(truncated("zstd: truncated frame"));
                }
                return Ok(0);
            }
        }
    }
}

impl<R: Read> Read for ZstdDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.error());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.step(buf).map_err(|e| remember(&mut self.failed, e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{ErrOf, noise, walish};
    use super::*;

    fn encode(level: ZstdLevel, data: &[u8], hint: Option<u64>) -> (Vec<u8>, u64) {
        let mut e = ZstdEncoder::new(Vec::new(), level, hint).unwrap();
        for c in data.chunks(100_000) {
            e.write_all(c).unwrap();
        }
        let held = e.native_heap_bytes();
        (e.finish().unwrap(), held)
    }

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdDecoder::new(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    const LEVELS: [ZstdLevel; 4] = [
        ZstdLevel::Fastest,
        ZstdLevel::Default,
        ZstdLevel::Better,
        ZstdLevel::Best,
    ];

    #[test]
    fn frame_shape() {
        let (f, _) = encode(ZstdLevel::Default, b"", None);
        assert_eq!(&f[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
        // Frame header descriptor: checksum flag (bit 2) set.
        assert_ne!(f[4] & 0x04, 0);
        assert_eq!(decode(&f).unwrap(), b"");
        let data = walish(3 << 20, 1);
        let (f, _) = encode(ZstdLevel::Default, &data, None);
        let window_log = (f[5] >> 3) as u32 + 10;
        assert!(window_log <= OWN_MAX_WINDOW_LOG, "window log {window_log}");
        assert!(decode(&f).unwrap() == data);
    }

    #[test]
    fn empty_object_is_empty_content() {
        assert_eq!(decode(b"").unwrap(), b"");
    }

    #[test]
    fn truncated_frames_are_errors() {
        let data = walish(300_000, 2);
        let (f, _) = encode(ZstdLevel::Default, &data, None);
        for cut in (1..f.len()).step_by(97).chain(f.len() - 8..f.len()) {
            let err = decode(&f[..cut]).err_of();
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                ),
                "cut {cut}: {err}"
            );
        }
        let err = decode(&f[..f.len() - 1]).err_of();
        assert_eq!(err.to_string(), "zstd: truncated frame");
    }

    #[test]
    fn concatenated_and_skippable_frames() {
        let a = walish(100_000, 3);
        let b = noise(50_000, 4);
        let (fa, _) = encode(ZstdLevel::Fastest, &a, None);
        let (fb, _) = encode(ZstdLevel::Best, &b, Some(b.len() as u64));
        let mut skip = vec![0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3];
        skip.extend_from_slice(&fa);
        skip.extend_from_slice(&fb);
        assert!(decode(&skip).unwrap() == [a, b].concat());
    }

    #[test]
    fn corruption_is_detected() {
        let data = walish(50_000, 5);
        let (f, _) = encode(ZstdLevel::Default, &data, None);
        for i in (0..f.len()).step_by(13) {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decode(&g).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn wrong_size_hint_fails_at_finish() {
        let mut e = ZstdEncoder::new(Vec::new(), ZstdLevel::Default, Some(10)).unwrap();
        e.write_all(b"12345").unwrap();
        assert!(e.finish().is_err());
    }

    #[test]
    fn windows_above_limit_are_refused() {
        // Compress with a 16 MiB window through a raw context.
        let data = walish(1 << 20, 6);
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::WindowLog(24)).unwrap();
        cctx.set_parameter(CParameter::ContentSizeFlag(false))
            .unwrap();
        let mut out = vec![0; data.len() + 1024];
        let mut o = OutBuffer::around(&mut out[..]);
        // Stream the input first: an `e_end` on the first call would let
        // libzstd see the whole input and shrink the window to fit it.
        let mut i = InBuffer::around(&data);
        cctx.compress_stream2(&mut o, &mut i, ZSTD_EndDirective::ZSTD_e_continue)
            .unwrap();
        let mut i = InBuffer::around(&[]);
        while cctx
            .compress_stream2(&mut o, &mut i, ZSTD_EndDirective::ZSTD_e_end)
            .unwrap()
            != 0
        {}
        let n = o.pos();
        assert_eq!((out[5] >> 3) + 10, 24, "window descriptor");
        let err = decode(&out[..n]).err_of();
        assert!(err.to_string().contains("window"), "{err}");
    }

    #[test]
    fn reported_sizes_cover_libzstd() {
        let big = walish(16 << 20, 7);
        for level in LEVELS {
            for len in [1000usize, 100_000, 1 << 20, 16 << 20] {
                let hint = if len == 16 << 20 {
                    None
                } else {
                    Some(len as u64)
                };
                let (f, held) = encode(level, &big[..len], hint);
                let bound = encoder_state_bytes(level) - ENC_OUT_BYTES as u64;
                assert!(
                    held <= bound,
                    "{level:?} len {len}: libzstd holds {held} > {bound}"
                );
                if len == 16 << 20 {
                    assert!(
                        held * 10 >= bound * 8,
                        "{level:?}: bound {bound} loose vs {held}"
                    );
                }
                let mut d = ZstdDecoder::new(&f[..]).unwrap();
                let mut out = Vec::new();
                d.read_to_end(&mut out).unwrap();
                let dheld = d.native_heap_bytes();
                let dbound = decoder_state_bytes(own_window_log(level)) - IN_BUF_BYTES as u64;
                assert!(dheld <= dbound, "{level:?} len {len}: {dheld} > {dbound}");
            }
        }
        assert!(DCtx::create().sizeof() as u64 <= DCTX_STRUCT_BYTES);
    }
}
