//! The read stage of a remote base backup: the server's tar archives, as they arrive in
//! pieces over the replication session, re-packed into WAL-G's partitions (walg-compat §3.7).
//!
//! The server's tars are parsed header by header. Each entry's size is in its header, so
//! its data is copied straight from the message it arrived in into the partition stream, in
//! bounded steps, never gathered: memory is one message, one header and `pg_control` (8 KiB,
//! kept for `pg_control.tar`), whatever the size of the database. Entry names are the
//! server's (relative: `base/5/1259`, `backup_label`), those of a tablespace's archive put
//! under `pg_tblspc/<oid>/`, as WAL-G's remote mode names them. The links in the main
//! archive's `pg_tblspc/` are left out: a restore makes them from the sentinel's `Spec`
//! (wal-rus refuses archive-made tablespace links, WAL-G fails on the existing one). So is a
//! standby's `standby.signal`, as WAL-G's local backups leave it out: restored, it would make
//! the new cluster follow the old primary instead of recovering.
//!
//! A partition is closed when the next file would take its payload past the threshold (a
//! larger file gets a partition of its own) and at the start of each archive, so that a
//! partition never mixes tablespaces (as WAL-G master does).

use crate::format::tar::{self, BLOCK, Header, Kind};
use bytes::Bytes;
use std::io::{self, Read};

/// The name of `pg_control` in the main archive.
pub const CONTROL_NAME: &str = "global/pg_control";

/// The file that makes a cluster start as a standby, left out as local backups leave it.
const STANDBY_SIGNAL: &str = "standby.signal";

/// Largest `pg_control` kept (PostgreSQL's is 8 KiB).
const CONTROL_MAX: u64 = 64 * 1024;

/// One piece of the server's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The data directory's archive begins.
    MainArchive,
    /// The archive of the tablespace with this OID begins.
    Tablespace(u32),
    /// Bytes of the current archive.
    Data(Bytes),
    /// No more archives.
    End,
}

/// Where the pieces come from (the replication session, or a test).
pub trait ChunkSource {
    /// The next piece.
    fn next_chunk(&mut self) -> io::Result<Chunk>;

    /// The main archive's `pg_control`, its last entry, has been read whole: what follows is
    /// the server stopping the backup.
    fn control_read(&mut self) {}
}

impl<T: ChunkSource + ?Sized> ChunkSource for &mut T {
    fn next_chunk(&mut self) -> io::Result<Chunk> {
        (**self).next_chunk()
    }

    fn control_read(&mut self) {
        (**self).control_read()
    }
}

/// What the re-packer reports about each entry it wrote.
pub trait RepackSink {
    /// Entry `h` (renamed) was written whole into the current partition.
    fn stored(&mut self, h: &Header);
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A parsed server header, with the rename applied.
#[derive(Clone, Debug)]
struct Pending {
    header: Header,
    /// From archive number `archive`.
    archive: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first archive.
    Start,
    /// Reading a header (bytes of it so far in `head`).
    Header,
    /// Copying an entry's data.
    Data,
    /// Skipping the server's padding after an entry.
    Padding,
    /// After the archive's end marker: only zeros until the next archive.
    Trailer,
    /// Every archive read.
    End,
}

/// The parse of the server's stream, kept across partitions.
pub struct Repacker<S: ChunkSource> {
    source: S,
    /// Unread bytes of the current data piece.
    chunk: Bytes,
    state: State,
    head: [u8; BLOCK],
    head_fill: usize,
    /// Number of the current archive (1 = the first).
    archive: u32,
    /// `pg_tblspc/<oid>/` in a tablespace's archive, empty in the main one.
    prefix: String,
    main: bool,
    /// The next entry, parsed and not yet written.
    pending: Option<Pending>,
    /// Data bytes of the entry being copied still to come, and its padding.
    data_left: u64,
    pad_left: u64,
    /// Whether the entry being copied is `pg_control`, kept in `control`.
    teeing: bool,
    /// `pg_control` as read from the main archive.
    pub control: Option<Vec<u8>>,
    /// Entries left out (tablespace links).
    pub dropped: u64,
}

impl<S: ChunkSource> Repacker<S> {
    /// A re-packer over `source`.
    pub fn new(source: S) -> Repacker<S> {
        Repacker {
            source,
            chunk: Bytes::new(),
            state: State::Start,
            head: [0; BLOCK],
            head_fill: 0,
            archive: 0,
            prefix: String::new(),
            main: false,
            pending: None,
            data_left: 0,
            pad_left: 0,
            teeing: false,
            control: None,
            dropped: 0,
        }
    }

    /// The source, once the stream is over.
    pub fn source(&mut self) -> &mut S {
        &mut self.source
    }

    /// Whether any entry is left to write (reads up to the next one).
    pub fn has_more(&mut self) -> io::Result<bool> {
        Ok(self.peek()?.is_some())
    }

    /// Fills `chunk` with the next data of the current archive; false when the archive
    /// ended (a new one began, or the stream ended: `state` tells).
    fn fill(&mut self) -> io::Result<bool> {
        while self.chunk.is_empty() {
            match self.source.next_chunk()? {
                Chunk::Data(b) => {
                    if self.state == State::Start {
                        return Err(invalid("archive data before any archive began"));
                    }
                    self.chunk = b;
                }
                Chunk::MainArchive => {
                    self.begin_archive(true, String::new())?;
                    return Ok(false);
                }
                Chunk::Tablespace(oid) => {
                    self.begin_archive(false, format!("pg_tblspc/{oid}/"))?;
                    return Ok(false);
                }
                Chunk::End => {
                    self.end_archive()?;
                    self.state = State::End;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn end_archive(&self) -> io::Result<()> {
        match self.state {
            State::Start | State::Trailer => Ok(()),
            State::Header if self.head_fill == 0 => Ok(()),
            _ => Err(invalid(format!(
                "archive {} ended inside an entry",
                self.archive
            ))),
        }
    }

    fn begin_archive(&mut self, main: bool, prefix: String) -> io::Result<()> {
        self.end_archive()?;
        self.archive += 1;
        self.main = main;
        self.prefix = prefix;
        self.state = State::Header;
        self.head_fill = 0;
        Ok(())
    }

    /// The next entry to write, parsed (and kept until taken); `None` at the end.
    fn peek(&mut self) -> io::Result<Option<&Pending>> {
        while self.pending.is_none() {
            match self.state {
                State::End => return Ok(None),
                State::Data => {
                    return Err(invalid("an entry's data was not read before the next"));
                }
                State::Start => {
                    self.fill()?;
                }
                State::Padding => {
                    if self.pad_left == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    if !self.fill()? {
                        return Err(invalid(format!(
                            "archive {} ended inside an entry's padding",
                            self.archive
                        )));
                    }
                    let n = (self.chunk.len() as u64).min(self.pad_left) as usize;
                    let _ = self.chunk.split_to(n);
                    self.pad_left -= n as u64;
                }
                State::Trailer => {
                    if !self.fill()? {
                        continue;
                    }
                    if self.chunk.iter().any(|&b| b != 0) {
                        return Err(invalid(format!(
                            "data after the end of archive {}",
                            self.archive
                        )));
                    }
                    self.chunk.clear();
                }
                State::Header => {
                    if !self.fill()? {
                        continue;
                    }
                    let n = self.chunk.len().min(BLOCK - self.head_fill);
                    self.head[self.head_fill..self.head_fill + n]
                        .copy_from_slice(&self.chunk.split_to(n));
                    self.head_fill += n;
                    if self.head_fill == BLOCK {
                        self.head_fill = 0;
                        self.header()?;
                    }
                }
            }
        }
        Ok(self.pending.as_ref())
    }

    /// Parses the full header block in `head`.
    fn header(&mut self) -> io::Result<()> {
        if self.head.iter().all(|&b| b == 0) {
            self.state = State::Trailer;
            return Ok(());
        }
        let mut h = parse_header(&self.head)
            .map_err(|e| invalid(format!("archive {}: {e}", self.archive)))?;
        let size = h.size;
        let tablespace_link =
            self.main && h.kind == Kind::Symlink && h.name.starts_with("pg_tblspc/");
        // A standby's signal file: PostgreSQL sends it, WAL-G's local backups leave it out
        // (a restore that found it would follow the old primary instead of recovering).
        let standby_signal = self.main && h.name == STANDBY_SIGNAL;
        if tablespace_link || standby_signal {
            // A tablespace link: the restore makes it from the spec.
            self.dropped += 1;
            self.data_left = size;
            self.pad_left = tar::padding(size) as u64;
            self.skip_data()?;
            return Ok(());
        }
        h.name = format!("{}{}", self.prefix, h.name);
        self.pending = Some(Pending {
            header: h,
            archive: self.archive,
        });
        Ok(())
    }

    /// Skips the data of an entry left out.
    fn skip_data(&mut self) -> io::Result<()> {
        self.state = State::Data;
        while self.data_left > 0 {
            if self.chunk.is_empty() && !self.fill()? {
                return Err(invalid(format!(
                    "archive {} ended inside an entry",
                    self.archive
                )));
            }
            let n = (self.chunk.len() as u64).min(self.data_left) as usize;
            let _ = self.chunk.split_to(n);
            self.data_left -= n as u64;
        }
        self.state = State::Padding;
        Ok(())
    }

    /// Takes the pending entry for writing: its data is read next.
    fn take(&mut self) -> Option<Header> {
        let p = self.pending.take()?;
        self.data_left = p.header.size;
        self.pad_left = tar::padding(p.header.size) as u64;
        self.teeing = self.main && p.header.name == CONTROL_NAME && p.header.kind == Kind::File;
        if self.teeing {
            self.control = Some(Vec::with_capacity(p.header.size.min(CONTROL_MAX) as usize));
        }
        self.state = State::Data;
        Some(p.header)
    }

    /// Copies the current entry's next data into `buf`; 0 once it is all read.
    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data_left == 0 {
            if self.state == State::Data {
                self.state = State::Padding;
                if self.teeing {
                    self.teeing = false;
                    self.source.control_read();
                }
            }
            return Ok(0);
        }
        if self.chunk.is_empty() && !self.fill()? {
            return Err(invalid(format!(
                "archive {} ended inside an entry",
                self.archive
            )));
        }
        let n = (self.chunk.len() as u64)
            .min(self.data_left)
            .min(buf.len() as u64) as usize;
        let data = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&data);
        self.data_left -= n as u64;
        if self.teeing
            && let Some(c) = self.control.as_mut()
        {
            if c.len() as u64 + n as u64 > CONTROL_MAX {
                return Err(invalid(format!(
                    "{CONTROL_NAME} is larger than {CONTROL_MAX} bytes"
                )));
            }
            c.extend_from_slice(&data);
        }
        Ok(n)
    }
}

/// Reads an octal (or GNU base-256) number field.
fn number(field: &[u8], what: &str) -> Result<u64, String> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err(format!("negative {what}"));
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| format!("{what} too large"))?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("bad {what} field {text:?}"))
}

fn text_field(field: &[u8]) -> Result<String, String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| "a name that is not UTF-8".to_string())
}

/// Parses one USTAR header block as PostgreSQL writes them (checksum checked).
fn parse_header(b: &[u8; BLOCK]) -> Result<Header, String> {
    let stored = number(&b[148..156], "checksum")?;
    let unsigned: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(x)
            }
        })
        .sum();
    let signed: i64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(x as i8)
            }
        })
        .sum();
    if stored != unsigned && stored as i64 != signed {
        return Err(format!(
            "a tar header with a wrong checksum (stored {stored}, computed {unsigned}): the stream is not a tar archive"
        ));
    }
    let mut name = text_field(&b[0..100])?;
    if &b[257..262] == b"ustar" {
        let prefix = text_field(&b[345..500])?;
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    let kind = match b[156] {
        b'0' | 0 => Kind::File,
        b'5' => Kind::Dir,
        b'2' => Kind::Symlink,
        other => {
            return Err(format!(
                "entry {name:?} has tar type '{}', which a base backup never holds",
                char::from(other).escape_default()
            ));
        }
    };
    if name.is_empty() || name.split('/').any(|c| c == "..") {
        return Err(format!(
            "entry name {name:?} is not a path inside the cluster"
        ));
    }
    let size = number(&b[124..136], "size")?;
    Ok(Header {
        name,
        kind,
        mode: number(&b[100..108], "mode")? as u32 & 0o7777,
        uid: number(&b[108..116], "uid")?,
        gid: number(&b[116..124], "gid")?,
        uname: text_field(&b[265..297])?,
        gname: text_field(&b[297..329])?,
        mtime: number(&b[136..148], "mtime")? as i64,
        size: if kind == Kind::File { size } else { 0 },
        link: text_field(&b[157..257])?,
    })
}

/// One partition of a remote backup as a stream: entries taken from the re-packer until
/// the next file would pass `threshold` or a new archive begins, then the end marker.
pub struct RemotePartition<'a, S: ChunkSource, K: RepackSink> {
    repacker: &'a mut Repacker<S>,
    sink: &'a mut K,
    threshold: u64,
    /// Payload bytes (file data) written so far.
    pub payload: u64,
    /// Entries written so far.
    pub entries: u64,
    archive: Option<u32>,
    out: Vec<u8>,
    out_pos: usize,
    /// The entry whose data is being copied.
    current: Option<Header>,
    finished: bool,
}

impl<'a, S: ChunkSource, K: RepackSink> RemotePartition<'a, S, K> {
    /// The next partition of `repacker`'s stream.
    pub fn new(repacker: &'a mut Repacker<S>, sink: &'a mut K, threshold: u64) -> Self {
        RemotePartition {
            repacker,
            sink,
            threshold,
            payload: 0,
            entries: 0,
            archive: None,
            out: Vec::with_capacity(2 * BLOCK),
            out_pos: 0,
            current: None,
            finished: false,
        }
    }

    /// Queues the next entry's header; false at the end of the partition.
    fn advance(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.out_pos = 0;
        if self.finished {
            return Ok(false);
        }
        let cut = match self.repacker.peek()? {
            None => true,
            Some(p) => {
                let new_archive = self.archive.is_some_and(|a| a != p.archive);
                let too_big = self.payload > 0 && self.payload + p.header.size > self.threshold;
                new_archive || too_big
            }
        };
        if cut {
            self.finished = true;
            self.out.extend_from_slice(&tar::END_OF_ARCHIVE);
            return Ok(true);
        }
        let archive = self.repacker.pending.as_ref().map(|p| p.archive);
        let h = self.repacker.take().expect("peeked");
        self.archive = self.archive.or(archive);
        tar::encode(&h, &mut self.out);
        self.payload += h.size;
        self.entries += 1;
        self.current = Some(h);
        Ok(true)
    }
}

impl<S: ChunkSource, K: RepackSink> Read for RemotePartition<'_, S, K> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if let Some(h) = &self.current {
                let n = self.repacker.read_data(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                let pad = tar::padding(h.size);
                self.sink.stored(h);
                self.current = None;
                self.out.clear();
                self.out_pos = 0;
                self.out.resize(pad, 0);
                continue;
            }
            if !self.advance()? {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
