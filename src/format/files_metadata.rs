//! `basebackups_005/<name>/files_metadata.json` (walg-compat §2.4): one entry per tar entry
//! (and per skipped file) of a backup, and which partition holds which entry.
//!
//! The document grows with the number of files in the cluster, while wal-rus promises
//! memory that does not. So nothing here holds the document:
//!
//! * `FilesSpool` collects entries during a backup in temporary files on disk, one rendered
//!   JSON fragment per line, with a separate list per partition (the `TarFileSets` map needs
//!   each partition's entries together, and partitions fill concurrently).
//! * `FilesDocument`, made by `FilesSpool::finish`, renders the final document from the spool
//!   as a stream, as often as asked: it is a `storage::BodySource`, and S3 uploads read their
//!   body twice (once for length and digests, once to send).
//! * `FilesMetadataWriter` writes the same document straight to any `io::Write` for callers
//!   that produce entries already grouped.
//! * `read_entries` / `for_each_file` parse a document from a stream with serde's visitor,
//!   holding one entry at a time and skipping members they are not asked for. They read the
//!   `Files`/`TarFileSets` maps that pre-2021 WAL-G embedded in the sentinel just as well.
//!
//! WAL-G writes this file with Go's `encoding/json/v2`: map keys in arbitrary order, no HTML
//! escaping, and members that would be empty omitted. wal-rus writes `Files`, then
//! `TarFileSets`, each omitted when empty, and never writes `DatabasesByNames` (partial
//! restore is not supported); readers ignore its absence.

use crate::format::budget::{self, Budget, Budgeted};
use crate::format::go_json;
use crate::storage::BodySource;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Pages WAL-G found corrupt in one file while verifying checksums.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorruptBlocks {
    /// `CorruptBlocksCount`: how many blocks were corrupt.
    pub count: u64,
    /// `SomeCorruptBlocks`: some of their numbers (at most 10 unless configured otherwise).
    pub some: Vec<u32>,
}

/// What WAL-G records about one tar entry or skipped file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileDescription {
    /// `IsIncremented`: the entry holds an increment stream, not the file.
    pub is_incremented: bool,
    /// `IsSkipped`: unchanged since the base backup; there is no tar entry.
    pub is_skipped: bool,
    /// `MTime`: RFC 3339 with nanoseconds in the host's zone, compared by instant by the next
    /// delta.
    pub mtime: String,
    /// `CorruptBlocks`, omitted when `None`.
    pub corrupt_blocks: Option<CorruptBlocks>,
    /// `UpdatesCount` (rating composer statistic; 0 otherwise).
    pub updates_count: u64,
}

/// Appends a string literal as `encoding/json/v2` writes it (no HTML escaping).
fn push_name(out: &mut String, s: &str) {
    go_json::push_str_with(out, s, false);
}

/// Appends `"name":{...}`, one member of `Files`.
fn push_file_member(out: &mut String, name: &str, d: &FileDescription) {
    push_name(out, name);
    out.push_str(":{\"IsIncremented\":");
    out.push_str(if d.is_incremented { "true" } else { "false" });
    out.push_str(",\"IsSkipped\":");
    out.push_str(if d.is_skipped { "true" } else { "false" });
    out.push_str(",\"MTime\":");
    push_name(
        out,
        if d.mtime.is_empty() {
            go_json::GO_ZERO_TIME
        } else {
            &d.mtime
        },
    );
    if let Some(c) = &d.corrupt_blocks {
        let _ = write!(
            out,
            ",\"CorruptBlocks\":{{\"CorruptBlocksCount\":{},\"SomeCorruptBlocks\":[",
            c.count
        );
        for (i, b) in c.some.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{b}");
        }
        out.push_str("]}");
    }
    let _ = write!(out, ",\"UpdatesCount\":{}}}", d.updates_count);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriterState {
    Start,
    Files,
    Set,
}

/// Writes a `files_metadata.json` document straight to `out`, entry by entry.
///
/// All `file` calls come first, then each partition's `begin_tar_set` followed by its
/// members. The caller guarantees unique file and partition names (JSON objects must not
/// repeat a key).
pub struct FilesMetadataWriter<W: Write> {
    out: W,
    state: WriterState,
    first: bool,
    buf: String,
}

impl<W: Write> FilesMetadataWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(out: W) -> FilesMetadataWriter<W> {
        FilesMetadataWriter {
            out,
            state: WriterState::Start,
            first: true,
            buf: String::new(),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        self.out.write_all(self.buf.as_bytes())?;
        self.buf.clear();
        Ok(())
    }

    /// Adds one `Files` entry.
    pub fn file(&mut self, name: &str, desc: &FileDescription) -> io::Result<()> {
        match self.state {
            WriterState::Start => {
                self.buf.push_str("{\"Files\":{");
                self.state = WriterState::Files;
            }
            WriterState::Files => self.buf.push(','),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "files_metadata: Files entry after TarFileSets",
                ));
            }
        }
        push_file_member(&mut self.buf, name, desc);
        self.emit()
    }

    /// Starts the member list of partition `partition` (e.g. `part_001.tar.lz4`).
    pub fn begin_tar_set(&mut self, partition: &str) -> io::Result<()> {
        match self.state {
            WriterState::Start => self.buf.push_str("{\"TarFileSets\":{"),
            WriterState::Files => self.buf.push_str("},\"TarFileSets\":{"),
            WriterState::Set => self.buf.push_str("],"),
        }
        self.state = WriterState::Set;
        self.first = true;
        push_name(&mut self.buf, partition);
        self.buf.push_str(":[");
        self.emit()
    }

    /// Adds entry `name` to the partition begun last.
    pub fn tar_member(&mut self, name: &str) -> io::Result<()> {
        if self.state != WriterState::Set {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "files_metadata: tar member outside a tar set",
            ));
        }
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        push_name(&mut self.buf, name);
        self.emit()
    }

    /// Closes the document and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.buf.push_str(match self.state {
            WriterState::Start => "{}",
            WriterState::Files => "}}",
            WriterState::Set => "]}}",
        });
        self.emit()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// At most this many partition lists are open for appending at once; more are closed and
/// reopened on demand, so descriptors and buffers stay bounded however many partitions a
/// backup has.
const MAX_OPEN_PARTITIONS: usize = 8;

/// Buffer of each open spool file.
const SPOOL_BUFFER: usize = 8 * 1024;

struct PartitionList {
    name: String,
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    members: u64,
}

/// Entries of a backup being taken, spooled to disk until the document is written.
///
/// The spool lives in its own directory, removed when the spool or the `FilesDocument` made
/// from it is dropped. Memory is a few buffers, whatever the number of entries; disk use is
/// about the size of the final document.
pub struct FilesSpool {
    dir: SpoolDir,
    files: BufWriter<File>,
    file_count: u64,
    partitions: Vec<PartitionList>,
    by_name: HashMap<String, usize>,
    open: Vec<usize>,
    line: String,
}

/// A directory deleted with everything in it on drop.
struct SpoolDir(PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn unique_dir_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "walrus-files-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl FilesSpool {
    /// A spool in a new directory below the system temporary directory.
    pub fn new() -> io::Result<FilesSpool> {
        Self::new_in(&std::env::temp_dir())
    }

    /// A spool in a new directory below `parent`.
    pub fn new_in(parent: &Path) -> io::Result<FilesSpool> {
        let path = parent.join(unique_dir_name());
        fs::create_dir(&path)?;
        let dir = SpoolDir(path);
        let files = BufWriter::with_capacity(SPOOL_BUFFER, File::create(dir.0.join("files"))?);
        Ok(FilesSpool {
            dir,
            files,
            file_count: 0,
            partitions: Vec::new(),
            by_name: HashMap::new(),
            open: Vec::new(),
            line: String::new(),
        })
    }

    /// Records file `name` and, when it was written into a partition, its membership there.
    /// Names must be unique; skipped files have no partition.
    pub fn add_file(
        &mut self,
        name: &str,
        desc: &FileDescription,
        partition: Option<&str>,
    ) -> io::Result<()> {
        self.line.clear();
        push_file_member(&mut self.line, name, desc);
        self.line.push('\n');
        self.files.write_all(self.line.as_bytes())?;
        self.file_count += 1;
        if let Some(p) = partition {
            self.add_tar_member(p, name)?;
        }
        Ok(())
    }

    /// Records that entry `name` was written into `partition` (e.g. `backup_label` into
    /// `backup_label.tar.lz4`).
    pub fn add_tar_member(&mut self, partition: &str, name: &str) -> io::Result<()> {
        let idx = match self.by_name.get(partition) {
            Some(&i) => i,
            None => {
                let i = self.partitions.len();
                self.partitions.push(PartitionList {
                    name: partition.to_string(),
                    path: self.dir.0.join(format!("set_{i}")),
                    writer: None,
                    members: 0,
                });
                self.by_name.insert(partition.to_string(), i);
                i
            }
        };
        if self.partitions[idx].writer.is_none() {
            if self.open.len() >= MAX_OPEN_PARTITIONS {
                let oldest = self.open.remove(0);
                self.close_list(oldest)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.partitions[idx].path)?;
            self.partitions[idx].writer = Some(BufWriter::with_capacity(SPOOL_BUFFER, file));
            self.open.push(idx);
        }
        self.line.clear();
        push_name(&mut self.line, name);
        self.line.push('\n');
        let list = &mut self.partitions[idx];
        if let Some(w) = list.writer.as_mut() {
            w.write_all(self.line.as_bytes())?;
        }
        list.members += 1;
        Ok(())
    }

    /// Frees the buffer of a partition that will get no more members (optional: lists are
    /// also closed when too many are open, and all are closed by `finish`).
    pub fn finish_partition(&mut self, partition: &str) -> io::Result<()> {
        if let Some(&idx) = self.by_name.get(partition) {
            self.open.retain(|&i| i != idx);
            self.close_list(idx)?;
        }
        Ok(())
    }

    fn close_list(&mut self, idx: usize) -> io::Result<()> {
        if let Some(mut w) = self.partitions[idx].writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// Number of `Files` entries so far.
    pub fn file_count(&self) -> u64 {
        self.file_count
    }

    /// Closes the spool; the result renders the document as often as needed.
    pub fn finish(mut self) -> io::Result<FilesDocument> {
        self.files.flush()?;
        for idx in 0..self.partitions.len() {
            self.close_list(idx)?;
        }
        let FilesSpool {
            dir,
            file_count,
            partitions,
            ..
        } = self;
        Ok(FilesDocument {
            files_path: dir.0.join("files"),
            file_count,
            sets: partitions
                .into_iter()
                .map(|p| (p.name, p.path, p.members))
                .collect(),
            _dir: dir,
        })
    }
}

/// A finished spool: renders `files_metadata.json` from disk on every `open`.
pub struct FilesDocument {
    files_path: PathBuf,
    file_count: u64,
    sets: Vec<(String, PathBuf, u64)>,
    _dir: SpoolDir,
}

impl FilesDocument {
    /// Number of `Files` entries.
    pub fn file_count(&self) -> u64 {
        self.file_count
    }

    /// A stream of the whole document.
    pub fn reader(&self) -> DocumentReader {
        let mut pieces = Vec::new();
        let mut head = String::from("{");
        if self.file_count > 0 {
            head.push_str("\"Files\":{");
            pieces.push(Piece::Text(std::mem::take(&mut head).into_bytes()));
            pieces.push(Piece::Lines(self.files_path.clone()));
            head.push('}');
        }
        if !self.sets.is_empty() {
            if self.file_count > 0 {
                head.push(',');
            }
            head.push_str("\"TarFileSets\":{");
            for (i, (name, path, _)) in self.sets.iter().enumerate() {
                if i > 0 {
                    head.push(',');
                }
                push_name(&mut head, name);
                head.push_str(":[");
                pieces.push(Piece::Text(std::mem::take(&mut head).into_bytes()));
                pieces.push(Piece::Lines(path.clone()));
                head.push(']');
            }
            head.push('}');
        }
        head.push('}');
        pieces.push(Piece::Text(head.into_bytes()));
        pieces.reverse();
        DocumentReader {
            pieces,
            current: Current::None,
            pending: Vec::new(),
            pos: 0,
        }
    }
}

impl BodySource for FilesDocument {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.reader()))
    }
}

enum Piece {
    Text(Vec<u8>),
    Lines(PathBuf),
}

enum Current {
    None,
    Lines {
        reader: BufReader<File>,
        first: bool,
    },
}

/// Streams a `FilesDocument`: fixed text around the spooled lines, which are joined with
/// commas. Holds one spooled line at a time.
pub struct DocumentReader {
    /// Remaining pieces, last first.
    pieces: Vec<Piece>,
    current: Current,
    pending: Vec<u8>,
    pos: usize,
}

impl DocumentReader {
    /// Refills `pending`; false at the end of the document.
    fn refill(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.pos = 0;
        loop {
            if let Current::Lines { reader, first } = &mut self.current {
                if !*first {
                    self.pending.push(b',');
                }
                let n = reader.read_until(b'\n', &mut self.pending)?;
                if n == 0 {
                    self.pending.clear();
                    self.current = Current::None;
                    continue;
                }
                if self.pending.last() == Some(&b'\n') {
                    self.pending.pop();
                }
                *first = false;
                return Ok(true);
            }
            match self.pieces.pop() {
                None => return Ok(false),
                Some(Piece::Text(t)) => {
                    self.pending = t;
                    return Ok(true);
                }
                Some(Piece::Lines(path)) => {
                    let file = File::open(&path)?;
                    self.current = Current::Lines {
                        reader: BufReader::with_capacity(SPOOL_BUFFER, file),
                        first: true,
                    };
                }
            }
        }
    }
}

impl Read for DocumentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.pending.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ------------------------------------------------------------------------------- reading

impl<'de> de::Deserialize<'de> for FileDescription {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<FileDescription, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileDescription;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file description object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileDescription, A::Error> {
                let mut d = FileDescription::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "isincremented" => {
                            d.is_incremented = map.next_value::<Option<bool>>()?.unwrap_or(false)
                        }
                        "isskipped" => {
                            d.is_skipped = map.next_value::<Option<bool>>()?.unwrap_or(false)
                        }
                        "mtime" => {
                            d.mtime = map.next_value::<Option<String>>()?.unwrap_or_default()
                        }
                        "updatescount" => {
                            d.updates_count = map.next_value::<Option<u64>>()?.unwrap_or(0)
                        }
                        "corruptblocks" => {
                            d.corrupt_blocks = map.next_value::<Option<CorruptBlocks>>()?
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(d)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> de::Deserialize<'de> for CorruptBlocks {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<CorruptBlocks, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CorruptBlocks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a corrupt blocks object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CorruptBlocks, A::Error> {
                let mut c = CorruptBlocks::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "corruptblockscount" => {
                            c.count = map.next_value::<Option<u64>>()?.unwrap_or(0)
                        }
                        "somecorruptblocks" => {
                            c.some = map.next_value::<Option<Vec<u32>>>()?.unwrap_or_default()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// Callbacks for `read_entries`; an `Err` from either stops the parse and is returned.
type OnFile<'a> = &'a mut dyn FnMut(String, FileDescription) -> io::Result<()>;
type OnMember<'a> = &'a mut dyn FnMut(&str, String) -> io::Result<()>;

struct Handlers<'a, 'b> {
    on_file: Option<OnFile<'a>>,
    on_member: Option<OnMember<'b>>,
    failure: Option<io::Error>,
    /// The allowance of each entry held at a time (see [`budget`]).
    budget: Rc<Budget>,
}

fn stop<E: de::Error>(h: &mut Handlers<'_, '_>, e: io::Error) -> E {
    h.failure = Some(e);
    E::custom("stopped by callback")
}

struct DocVisitor<'h, 'a, 'b>(&'h mut Handlers<'a, 'b>);
struct FilesVisitor<'h, 'a, 'b>(&'h mut Handlers<'a, 'b>);
struct SetsVisitor<'h, 'a, 'b>(&'h mut Handlers<'a, 'b>);
struct SetVisitor<'h, 'a, 'b>(&'h mut Handlers<'a, 'b>, String);

impl<'de> Visitor<'de> for DocVisitor<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = {
            self.0.budget.allow();
            map.next_key::<String>()?
        } {
            // Entries are allowed one at a time below; skipped members are not held.
            self.0.budget.unlimited();
            match key.to_ascii_lowercase().as_str() {
                "files" if self.0.on_file.is_some() => {
                    map.next_value_seed(FilesVisitor(&mut *self.0))?
                }
                "tarfilesets" if self.0.on_member.is_some() => {
                    map.next_value_seed(SetsVisitor(&mut *self.0))?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for FilesVisitor<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FilesVisitor<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Files object")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = {
            self.0.budget.allow();
            map.next_key::<String>()?
        } {
            let desc: FileDescription = map.next_value()?;
            if let Some(f) = self.0.on_file.as_mut()
                && let Err(e) = f(name, desc)
            {
                return Err(stop(self.0, e));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for SetsVisitor<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SetsVisitor<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TarFileSets object")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(partition) = {
            self.0.budget.allow();
            map.next_key::<String>()?
        } {
            map.next_value_seed(SetVisitor(&mut *self.0, partition))?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for SetVisitor<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SetVisitor<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of entry names")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(name) = {
            self.0.budget.allow();
            seq.next_element::<String>()?
        } {
            if let Some(f) = self.0.on_member.as_mut()
                && let Err(e) = f(&self.1, name)
            {
                return Err(stop(self.0, e));
            }
        }
        Ok(())
    }
}

fn parse(reader: impl Read, handlers: &mut Handlers<'_, '_>) -> io::Result<()> {
    let reader = Budgeted::new(reader, handlers.budget.clone());
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(reader));
    let result = de
        .deserialize_map(DocVisitor(handlers))
        .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(handlers.failure.take().unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("files metadata: {e}"))
        })),
    }
}

/// Streams a `files_metadata.json` (or a legacy sentinel with embedded maps), calling
/// `on_file` for every `Files` entry and `on_member(partition, name)` for every
/// `TarFileSets` member. Holds one entry at a time. Malformed JSON is `InvalidData`; an
/// error returned by a callback stops the parse and is returned as is.
pub fn read_entries(
    reader: impl Read,
    on_file: &mut dyn FnMut(String, FileDescription) -> io::Result<()>,
    on_member: &mut dyn FnMut(&str, String) -> io::Result<()>,
) -> io::Result<()> {
    let mut h = Handlers {
        on_file: Some(on_file),
        on_member: Some(on_member),
        failure: None,
        budget: Rc::new(Budget::new(budget::MEMBER_CAP)),
    };
    parse(reader, &mut h)
}

/// Streams only the `Files` entries; `TarFileSets` and everything else is skipped.
pub fn for_each_file(
    reader: impl Read,
    mut on_file: impl FnMut(String, FileDescription) -> io::Result<()>,
) -> io::Result<()> {
    let mut h = Handlers {
        on_file: Some(&mut on_file),
        on_member: None,
        failure: None,
        budget: Rc::new(Budget::new(budget::MEMBER_CAP)),
    };
    parse(reader, &mut h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mtime: &str) -> FileDescription {
        FileDescription {
            mtime: mtime.into(),
            ..Default::default()
        }
    }

    type Collected = (Vec<(String, FileDescription)>, Vec<(String, String)>);

    fn collect(doc: &[u8]) -> Collected {
        let (mut files, mut members) = (Vec::new(), Vec::new());
        read_entries(
            doc,
            &mut |n, d| {
                files.push((n, d));
                Ok(())
            },
            &mut |p, n| {
                members.push((p.to_string(), n));
                Ok(())
            },
        )
        .unwrap();
        (files, members)
    }

    #[test]
    fn writer_layout() {
        let mut w = FilesMetadataWriter::new(Vec::new());
        w.file("/", &desc("2024-05-01T12:59:58.101010101+03:00"))
            .unwrap();
        let corrupt = FileDescription {
            is_incremented: true,
            corrupt_blocks: Some(CorruptBlocks {
                count: 2,
                some: vec![7, 9],
            }),
            updates_count: 3,
            ..desc("2024-05-01T12:59:59Z")
        };
        w.file("/base/<5>/1259", &corrupt).unwrap();
        w.begin_tar_set("part_001.tar.lz4").unwrap();
        w.tar_member("/").unwrap();
        w.tar_member("/base/<5>/1259").unwrap();
        w.begin_tar_set("backup_label.tar.lz4").unwrap();
        w.tar_member("tablespace_map").unwrap();
        w.tar_member("backup_label").unwrap();
        assert!(w.file("/late", &desc("x")).is_err());
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            concat!(
                r#"{"Files":{"/":{"IsIncremented":false,"IsSkipped":false,"MTime":"2024-05-01T12:59:58.101010101+03:00","UpdatesCount":0},"#,
                r#""/base/<5>/1259":{"IsIncremented":true,"IsSkipped":false,"MTime":"2024-05-01T12:59:59Z","CorruptBlocks":{"CorruptBlocksCount":2,"SomeCorruptBlocks":[7,9]},"UpdatesCount":3}},"#,
                r#""TarFileSets":{"part_001.tar.lz4":["/","/base/<5>/1259"],"backup_label.tar.lz4":["tablespace_map","backup_label"]}}"#
            )
        );
        let (files, members) = collect(out.as_bytes());
        assert_eq!(files[1], ("/base/<5>/1259".to_string(), corrupt));
        assert_eq!(members.len(), 4);
        assert_eq!(
            String::from_utf8(FilesMetadataWriter::new(Vec::new()).finish().unwrap()).unwrap(),
            "{}"
        );
        let mut only_sets = FilesMetadataWriter::new(Vec::new());
        only_sets.begin_tar_set("p").unwrap();
        assert_eq!(
            String::from_utf8(only_sets.finish().unwrap()).unwrap(),
            r#"{"TarFileSets":{"p":[]}}"#
        );
    }

    #[test]
    fn spool_renders_same_document_repeatedly() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = FilesSpool::new_in(dir.path()).unwrap();
        // Interleaved partitions, more than can stay open at once.
        let mut expected_files = Vec::new();
        for i in 0..200 {
            let name = format!("/base/5/{i}\n\"odd\"");
            let part = format!("part_{:03}.tar.lz4", i % 11 + 1);
            let d = FileDescription {
                is_skipped: i % 7 == 0,
                ..desc(&format!("2024-05-01T12:00:{:02}Z", i % 60))
            };
            spool
                .add_file(&name, &d, if d.is_skipped { None } else { Some(&part) })
                .unwrap();
            expected_files.push((name, d));
        }
        spool
            .add_tar_member("backup_label.tar.lz4", "backup_label")
            .unwrap();
        spool.finish_partition("part_001.tar.lz4").unwrap();
        assert_eq!(spool.file_count(), 200);
        let doc = spool.finish().unwrap();
        let mut first = Vec::new();
        doc.open().unwrap().read_to_end(&mut first).unwrap();
        let mut second = Vec::new();
        // Tiny reads exercise the piece boundaries.
        let mut r = doc.open().unwrap();
        let mut b = [0u8; 3];
        loop {
            let n = r.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            second.extend_from_slice(&b[..n]);
        }
        drop(r);
        assert_eq!(first, second);
        let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["Files"].as_object().unwrap().len(), 200);
        assert_eq!(
            v["TarFileSets"]["backup_label.tar.lz4"],
            serde_json::json!(["backup_label"])
        );
        let (files, members) = collect(&first);
        assert_eq!(files, expected_files);
        let in_part3: Vec<_> = members
            .iter()
            .filter(|(p, _)| p == "part_003.tar.lz4")
            .map(|(_, n)| n.clone())
            .collect();
        let want: Vec<_> = (0..200)
            .filter(|i| i % 11 == 2 && i % 7 != 0)
            .map(|i| format!("/base/5/{i}\n\"odd\""))
            .collect();
        assert_eq!(in_part3, want);
        // The spool directory goes away with the document.
        drop(doc);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn empty_spool_is_empty_object() {
        let dir = tempfile::tempdir().unwrap();
        let doc = FilesSpool::new_in(dir.path()).unwrap().finish().unwrap();
        let mut out = String::new();
        doc.open().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "{}");
    }

    #[test]
    fn reader_is_lenient_and_skips_other_members() {
        let doc = br#"{"DatabasesByNames":{"postgres":{"oid":5}},"files":{"/a":{"isskipped":true,"MTime":null,"Extra":[1]},"/b":{}},
            "TarFileSets":{"":[],"part_1.tar":["/b"]},"LSN":1}"#;
        let (files, members) = collect(doc);
        assert_eq!(files.len(), 2);
        assert!(files[0].1.is_skipped);
        assert_eq!(members, [("part_1.tar".to_string(), "/b".to_string())]);
        // A legacy sentinel's embedded Files.
        let mut names = Vec::new();
        for_each_file(
            &br#"{"LSN":1,"Files":{"/x":{"IsIncremented":true}},"Version":0}"#[..],
            |n, d| {
                assert!(d.is_incremented);
                names.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(names, ["/x"]);
        assert!(for_each_file(&b"{\"Files\":{\"/x\":1}}"[..], |_, _| Ok(())).is_err());
        assert!(for_each_file(&b"{\"Files\":{}"[..], |_, _| Ok(())).is_err());
        // A callback error stops the parse and comes back unchanged.
        let err = for_each_file(&br#"{"Files":{"/x":{},"/y":{}}}"#[..], |_, _| {
            Err(io::Error::other("enough"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "enough");
    }
}
