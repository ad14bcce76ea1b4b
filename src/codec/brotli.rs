//! Brotli: a raw stream (RFC 7932) at quality 3, like WAL-G's `cbrotli`
//! writer, through the pure-Rust `brotli` crate's state machines directly.
//! The crate's `io` wrappers are not used because its writer ignores errors
//! when finishing and its reader reports a truncated stream only once.
//!
//! Window: WAL-G uses the library default, lgwin 22 (4 MiB). At quality 3 the
//! encoder keeps a ring buffer of twice the window and an output buffer of
//! twice the largest metablock, which is itself up to twice the window (long
//! literal runs or long matches never reach the symbol count that cuts it
//! earlier). lgwin 22 measured 16.5 MiB on a 16 MiB WAL-like input (bound
//! 24.7 MiB); we write lgwin 20 instead (6.5 MiB measured, 7.1 MiB bound) for
//! output ~1 % larger. Every Brotli decoder, WAL-G's included, reads every
//! window size.
//!
//! Decoding refuses "large window" streams (not RFC 7932) and so never needs
//! more than a 16 MiB window (lgwin 24). Brotli has no checksum: truncation
//! is always detected, but a corrupted byte may decode to wrong data.

use std::io::{self, Read, Write};

use ::brotli::enc::StandardAlloc;
use ::brotli::enc::encode::{
    BrotliEncoderOperation, BrotliEncoderParameter, BrotliEncoderStateStruct,
};
use ::brotli::enc::interface::{
    InputPair, InputReferenceMut, PredictionModeContextMap, StaticCommand,
};
use ::brotli::{BrotliDecompressStream, BrotliResult, BrotliState, HuffmanCode};

use super::{IN_BUF_BYTES, Sticky, corrupt, read_retry, remember, truncated};

/// Quality WAL-G writes.
const QUALITY: u32 = 3;
/// Window we write (see the module docs).
pub(super) const OWN_LGWIN: u32 = 20;
/// Window WAL-G writes.
pub(super) const WALG_LGWIN: u32 = 22;
/// Largest window of a standard Brotli stream.
pub(super) const MAX_LGWIN: u32 = 24;

/// Block size the encoder uses below quality 4 (`ComputeLgBlock`).
const LGBLOCK: u32 = 14;
/// Output chunk handed to the sink.
const ENC_OUT_BYTES: usize = 32 * 1024;

/// Heap of [`BrotliEncoder`] at quality 3 and [`OWN_LGWIN`], from the
/// encoder's allocation rules (`brotli` 9.1):
/// * ring buffer: `2^(lgwin+1)` plus one block (`2^14`) of tail;
/// * metablock output storage: `2 * metablock + 503`, where a metablock is at
///   most `2^(lgwin+1)` bytes of input (it is cut earlier only by symbol
///   count, which long runs never reach);
/// * command buffer: grown while 0x2FFF symbols accumulate, 16 bytes each, at
///   most ~24.6 K commands, counted twice for the grow-by-copy;
/// * the quality-3 hasher (`H3`: 2^16 + 2 `u32` buckets) and small tables.
pub(super) fn encoder_state_bytes() -> u64 {
    encoder_state_bytes_for(OWN_LGWIN)
}

fn encoder_state_bytes_for(lgwin: u32) -> u64 {
    let ring = (1u64 << (lgwin + 1)) + (1 << LGBLOCK) + 16;
    let metablock = 1u64 << (lgwin + 1).min(24);
    let storage = 2 * metablock + 503;
    let block = 1u64 << LGBLOCK;
    let max_commands = 0x2FFF + block / 2 + 1 + block / 4 + 16;
    let commands = 2 * max_commands * 16;
    let hasher = ((1u64 << 16) + 2) * 4;
    let fixed = 64 * 1024;
    ring + storage + commands + hasher + fixed + ENC_OUT_BYTES as u64
}

/// Most bytes one `write_all` of `len` bytes (or `finish`, `len` 0) hands
/// to the sink: a metablock holds up to `2^(lgwin+1)` bytes of input and is
/// emitted whole by the call that completes it, plus the input of that call;
/// a metablock that would come out larger than its input is stored instead
/// (a few header bytes per metablock).
pub(super) fn burst_bytes(len: u64) -> u64 {
    let input = len + (1u64 << (OWN_LGWIN + 1));
    input + input / 64 + 1024
}

/// Heap of a decoder for windows up to `2^lgwin`: the ring buffer (allocated
/// once at full size, see [`BrotliDecoder::new`]) with its write-ahead slack,
/// plus Huffman tables and context maps. For the quality-3 streams WAL-G and
/// we write, each tree group holds a single tree (quality < 4 uses no block
/// splitting or context modelling), so tables are small; for `MAX_LGWIN`
/// (any foreign stream) they are counted at the format's maximum of 256 trees
/// per group, twice over for the decoder's grow-by-copy.
pub(super) fn decoder_state_bytes(lgwin: u32) -> u64 {
    let ring = (1u64 << lgwin) + 542 + 24 + 64;
    let trees = if lgwin >= MAX_LGWIN { 256 } else { 1 };
    let hc = size_of::<HuffmanCode>() as u64;
    // Largest table per tree: alphabet + 376 entries (literal 256,
    // insert-and-copy 704, distance at most 520 symbols).
    let groups = trees * (256 + 376 + 704 + 376 + 520 + 376) * hc;
    let grow = if trees > 1 { 2 } else { 1 };
    let context_maps = trees * (64 + 4);
    let fixed = 48 * 1024;
    ring + grow * groups + context_maps + fixed + IN_BUF_BYTES as u64
}

fn no_metablock_callback(
    _: &mut PredictionModeContextMap<InputReferenceMut>,
    _: &mut [StaticCommand],
    _: InputPair,
    _: &mut StandardAlloc,
) {
}

/// Streaming Brotli compressor.
pub(super) struct BrotliEncoder<W: Write> {
    state: BrotliEncoderStateStruct<StandardAlloc>,
    out: Box<[u8]>,
    total_out: Option<usize>,
    inner: W,
}

impl<W: Write> BrotliEncoder<W> {
    pub(super) fn new(inner: W) -> Self {
        Self::with_lgwin(inner, OWN_LGWIN)
    }

    fn with_lgwin(inner: W, lgwin: u32) -> Self {
        let mut state = BrotliEncoderStateStruct::new(StandardAlloc::default());
        state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_QUALITY, QUALITY);
        state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_LGWIN, lgwin);
        BrotliEncoder {
            state,
            out: vec![0; ENC_OUT_BYTES].into_boxed_slice(),
            total_out: Some(0),
            inner,
        }
    }

    /// Runs the encoder once on `input[*offset..]` and writes what it made.
    fn run(
        &mut self,
        op: BrotliEncoderOperation,
        input: &[u8],
        offset: &mut usize,
    ) -> io::Result<()> {
        let mut avail_in = input.len() - *offset;
        let mut avail_out = self.out.len();
        let mut out_offset = 0;
        let ok = self.state.compress_stream(
            op,
            &mut avail_in,
            input,
            offset,
            &mut avail_out,
            &mut self.out,
            &mut out_offset,
            &mut self.total_out,
            &mut no_metablock_callback,
        );
        if !ok {
            return Err(io::Error::other("brotli: compression failed"));
        }
        self.inner.write_all(&self.out[..out_offset])
    }

    pub(super) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut offset = 0;
        while offset < buf.len() {
            self.run(
                BrotliEncoderOperation::BROTLI_OPERATION_PROCESS,
                buf,
                &mut offset,
            )?;
        }
        // Hand out a finished metablock now rather than on the next call,
        // so one call never carries a previous call's output (see
        // `burst_bytes`). Only moves bytes: the stream is the same.
        while self.state.has_more_output() {
            self.run(
                BrotliEncoderOperation::BROTLI_OPERATION_PROCESS,
                &[],
                &mut 0,
            )?;
        }
        Ok(())
    }

    /// Passes the flush on to the sink without a Brotli flush, which would
    /// end the metablock and make the output depend on flush calls.
    pub(super) fn flush_output(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub(super) fn finish(mut self) -> io::Result<W> {
        let mut offset = 0;
        loop {
            self.run(
                BrotliEncoderOperation::BROTLI_OPERATION_FINISH,
                &[],
                &mut offset,
            )?;
            if self.state.is_finished() && !self.state.has_more_output() {
                return Ok(self.inner);
            }
        }
    }
}

/// Streaming Brotli decompressor. Truncation and data after the end of the
/// stream are errors.
pub(super) struct BrotliDecoder<R> {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    inner: R,
    inb: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    in_eof: bool,
    total_out: usize,
    done: bool,
    failed: Option<Sticky>,
}

impl<R: Read> BrotliDecoder<R> {
    pub(super) fn new(inner: R) -> Self {
        // Strict: no large-window streams (up to 1 GiB windows).
        let mut state = BrotliState::new_strict(
            StandardAlloc::default(),
            StandardAlloc::default(),
            StandardAlloc::default(),
        );
        // Allocate the ring buffer at its final size at once (still sized to
        // fit when the first metablock is the last): growing it by copying
        // would briefly hold 1.5 windows.
        state.set_initial_ring_buffer_size(u32::MAX);
        BrotliDecoder {
            state,
            inner,
            inb: vec![0; IN_BUF_BYTES].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_eof: false,
            total_out: 0,
            done: false,
            failed: None,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        self.in_pos = 0;
        self.in_len = read_retry(&mut self.inner, &mut self.inb)?;
        self.in_eof = self.in_len == 0;
        Ok(())
    }

    fn step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done {
                if self.in_pos == self.in_len && !self.in_eof {
                    self.refill()?;
                }
                if self.in_pos < self.in_len {
                    return Err(corrupt("brotli: data after the end of the stream"));
                }
                return Ok(0);
            }
            if self.in_pos == self.in_len && !self.in_eof {
                self.refill()?;
            }
            let mut avail_in = self.in_len - self.in_pos;
            let mut in_offset = self.in_pos;
            let mut avail_out = buf.len();
            let mut out_offset = 0;
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_offset,
                &self.inb[..self.in_len],
                &mut avail_out,
                &mut out_offset,
                buf,
                &mut self.total_out,
                &mut self.state,
            );
            self.in_pos = in_offset;
            match result {
                BrotliResult::ResultSuccess => {
                    self.done = true;
                    if out_offset > 0 {
                        return Ok(out_offset);
                    }
                }
                BrotliResult::NeedsMoreOutput => {
                    // Only reported with `buf` full; never let it pass as EOF.
                    if out_offset == 0 {
                        return Err(corrupt("brotli: decoder made no progress"));
                    }
                    return Ok(out_offset);
                }
                BrotliResult::NeedsMoreInput => {
                    if out_offset > 0 {
                        return Ok(out_offset);
                    }
                    if self.in_eof {
                        return Err(truncated("brotli: truncated stream"));
                    }
                }
                BrotliResult::ResultFailure => {
                    return Err(corrupt(format!(
                        "brotli: corrupt stream ({:?})",
                        self.state.error_code
                    )));
                }
            }
        }
    }
}

impl<R: Read> Read for BrotliDecoder<R> {
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
pub(super) mod tests {
    use super::super::testdata::{ErrOf, noise, walish};
    use super::*;

    pub(crate) fn encode_lgwin(data: &[u8], lgwin: u32) -> Vec<u8> {
        let mut e = BrotliEncoder::with_lgwin(Vec::new(), lgwin);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        BrotliDecoder::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn reads_walg_window_and_reference_decoder_agrees() {
        let data = walish(6 << 20, 1);
        for lgwin in [OWN_LGWIN, WALG_LGWIN, MAX_LGWIN] {
            let f = encode_lgwin(&data, lgwin);
            assert!(decode(&f).unwrap() == data);
            let mut check = Vec::new();
            ::brotli::Decompressor::new(&f[..], 4096)
                .read_to_end(&mut check)
                .unwrap();
            assert!(check == data);
        }
    }

    #[test]
    fn empty_and_tiny() {
        for data in [&b""[..], b"x", &noise(100, 2)] {
            assert_eq!(decode(&encode_lgwin(data, OWN_LGWIN)).unwrap(), data);
        }
        assert_eq!(decode(b"").err_of().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn truncation_and_trailing_data() {
        let data = walish(200_000, 3);
        let f = encode_lgwin(&data, OWN_LGWIN);
        for cut in (0..f.len()).step_by(31).chain(f.len() - 3..f.len()) {
            assert!(decode(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut g = f.clone();
        g.push(0);
        assert!(decode(&g).err_of().to_string().contains("after the end"));
    }

    #[test]
    fn large_window_streams_are_refused() {
        // WBITS for large window: 0x11 in the first 7 bits, then 6 bits.
        let err = decode(&[0x11, 0x1E, 0x00]).err_of();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
