//! The contents of one block: stored bytes copied through, or LZ4 sequences (a literal run,
//! then a match into the history) decoded one field at a time, so that decoding stops
//! wherever the caller's buffer is full and picks up there at the next read.

use std::io::{self, Read};

use super::{HISTORY, Lz4Decoder, MSG_SEQUENCE, MSG_TRUNCATED, State};
use crate::codec::{corrupt, truncated};

impl<R: Read> Lz4Decoder<R> {
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

    /// Accounts for `k` bytes about to be written at `wpos`.
    fn check_room(&self, k: usize) -> io::Result<()> {
        if self.block_out + k > self.frame.block_max {
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

    pub(super) fn stored(&mut self, target: usize) -> io::Result<()> {
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
    pub(super) fn sequences(&mut self, target: usize) -> io::Result<()> {
        loop {
            // Each step reads one field of a sequence and says whether to go on: it stops
            // once `out` holds `target` bytes or the block is over, and the state it leaves
            // lets the next call resume exactly there.
            let go_on = match self.state {
                State::Token => self.token()?,
                State::LitLenExt(len) => self.literal_length(len)?,
                State::Literals(left) => self.literals(left, target)?,
                State::Offset => self.offset()?,
                State::MatchLenExt { offset, len } => self.match_length(offset, len)?,
                State::Match { offset, left } => self.copy(offset, left, target)?,
                _ => false,
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    fn token(&mut self) -> io::Result<bool> {
        let t = self.block_byte()?;
        self.token = t;
        let lit = (t >> 4) as usize;
        self.state = if lit == 15 {
            State::LitLenExt(15)
        } else {
            State::Literals(lit)
        };
        Ok(true)
    }

    fn literal_length(&mut self, len: usize) -> io::Result<bool> {
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
        Ok(true)
    }

    fn literals(&mut self, left: usize, target: usize) -> io::Result<bool> {
        if left > self.block_left {
            return Err(corrupt("lz4: literal run longer than its block"));
        }
        if left == 0 {
            // The last sequence of a block is literals alone.
            if self.block_left == 0 {
                self.end_block();
                return Ok(false);
            }
            self.state = State::Offset;
            return Ok(true);
        }
        if self.wpos >= target {
            return Ok(false);
        }
        if self.avail() == 0 {
            self.need(1)?;
        }
        let k = left.min(self.avail()).min(target - self.wpos);
        self.check_room(k)?;
        self.out[self.wpos..self.wpos + k].copy_from_slice(&self.inb[self.in_pos..self.in_pos + k]);
        self.in_pos += k;
        self.block_left -= k;
        self.produced(k);
        self.state = State::Literals(left - k);
        Ok(true)
    }

    fn offset(&mut self) -> io::Result<bool> {
        if self.block_left < 2 {
            return Err(corrupt(MSG_SEQUENCE));
        }
        self.need(2)?;
        let offset =
            u16::from_le_bytes([self.inb[self.in_pos], self.inb[self.in_pos + 1]]) as usize;
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
        Ok(true)
    }

    fn match_length(&mut self, offset: usize, len: usize) -> io::Result<bool> {
        let b = self.block_byte()?;
        let len = len + b as usize;
        if len > self.frame.block_max {
            return Err(corrupt("lz4: match longer than its block"));
        }
        self.state = if b == 255 {
            State::MatchLenExt { offset, len }
        } else {
            State::Match { offset, left: len }
        };
        Ok(true)
    }

    fn copy(&mut self, offset: usize, left: usize, target: usize) -> io::Result<bool> {
        if left == 0 {
            if self.block_left == 0 {
                return Err(corrupt("lz4: block ends with a match"));
            }
            self.state = State::Token;
            return Ok(true);
        }
        if self.wpos >= target {
            return Ok(false);
        }
        let k = left.min(target - self.wpos);
        self.check_room(k)?;
        self.copy_match(offset, k);
        self.produced(k);
        self.state = State::Match {
            offset,
            left: left - k,
        };
        Ok(true)
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
