//! The LZ4 reader against frames of every shape (ours, WAL-G's, lz4_flex's, legacy and
//! skippable ones), cut and corrupted, and the writer's layout and memory.

use super::super::IN_BUF_BYTES;
use super::super::testdata::{ErrOf, noise, walish};
use super::decode::{DECODER_STRUCT_BYTES, Lz4Decoder, OUT_BYTES};
use super::encode::{ENCODER_STRUCT_BYTES, Lz4Encoder, WRITE_BLOCK_BYTES};
use super::{LEGACY_BLOCK_MAX, LEGACY_MAGIC, SKIPPABLE_MAGIC_MIN};
use lz4_flex::frame::FrameDecoder;
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use std::io::{self, Read, Write};
use xxhash_rust::xxh32::xxh32;

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
