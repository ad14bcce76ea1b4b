//! The frame structure around the blocks: magic numbers, the frame descriptor, block
//! headers and the checksums, for the frame format, the legacy format and skippable frames.
//! Kept apart from the block contents because it runs once per frame or block, not per
//! byte.

use std::io::{self, Read};

use xxhash_rust::xxh32::{Xxh32, xxh32};

use super::super::{
    FRAME_MAGIC, LEGACY_BLOCK_MAX, LEGACY_COMPRESSED_MAX, LEGACY_MAGIC, SKIPPABLE_MAGIC_MAX,
    SKIPPABLE_MAGIC_MIN,
};
use super::{FrameFormat, Lz4Decoder, MSG_TRUNCATED, State};
use crate::codec::{corrupt, truncated};

impl<R: Read> Lz4Decoder<R> {
    pub(super) fn frame_start(&mut self) -> io::Result<()> {
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
                self.begin_frame(FrameFormat {
                    legacy: true,
                    block_max: LEGACY_BLOCK_MAX,
                    ..FrameFormat::default()
                });
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
        self.begin_frame(FrameFormat {
            legacy: false,
            block_max,
            linked,
            block_checksum: flg & 0x10 != 0,
            content_checksum: flg & 0x04 != 0,
            content_size,
        });
        self.state = State::BlockHeader;
        Ok(())
    }

    fn begin_frame(&mut self, frame: FrameFormat) {
        self.frame = frame;
        self.frame_out = 0;
        self.content_hash = Xxh32::new(0);
        self.hash_mark = self.wpos;
        self.history = 0;
    }

    pub(super) fn skip(&mut self, mut left: u32) -> io::Result<()> {
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

    pub(super) fn block_header(&mut self) -> io::Result<()> {
        let v = self.take_u32()?;
        if v == 0 {
            self.state = State::FrameEnd;
            return Ok(());
        }
        let size = (v & 0x7FFF_FFFF) as usize;
        if size > self.frame.block_max {
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

    pub(super) fn legacy_block_header(&mut self) -> io::Result<()> {
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
        if !self.frame.linked {
            self.history = 0;
        }
        if self.frame.block_checksum {
            self.block_hash = Xxh32::new(0);
            self.block_mark = self.in_pos;
            self.block_hash_on = true;
        }
    }

    pub(super) fn end_block(&mut self) {
        if self.block_hash_on {
            self.block_hash
                .update(&self.inb[self.block_mark..self.in_pos]);
            self.block_hash_on = false;
            self.state = State::BlockChecksum;
        } else if self.frame.legacy {
            self.state = State::LegacyBlockHeader;
        } else {
            self.state = State::BlockHeader;
        }
    }

    pub(super) fn check_block_checksum(&mut self) -> io::Result<()> {
        let stored = self.take_u32()?;
        if stored != self.block_hash.digest() {
            return Err(corrupt("lz4: block checksum mismatch"));
        }
        self.state = State::BlockHeader;
        Ok(())
    }

    pub(super) fn frame_end(&mut self) -> io::Result<()> {
        if self.frame.content_checksum {
            let stored = self.take_u32()?;
            self.content_hash
                .update(&self.out[self.hash_mark..self.wpos]);
            self.hash_mark = self.wpos;
            if stored != self.content_hash.digest() {
                return Err(corrupt("lz4: content checksum mismatch"));
            }
        }
        if let Some(size) = self.frame.content_size
            && size != self.frame_out
        {
            return Err(corrupt("lz4: content size mismatch"));
        }
        self.frames += 1;
        self.state = State::Magic;
        Ok(())
    }
}
