//! The spool behind `files_metadata.json` (walg-compat §2.4) while a backup is taken.
//!
//! The document grows with the number of files in the cluster, while wal-rus promises
//! memory that does not. `FilesSpool` collects entries in temporary files on disk, one
//! rendered JSON fragment per line, with a separate list per partition (the `TarFileSets`
//! map needs each partition's entries together, and partitions fill concurrently).
//! `FilesDocument`, made by `FilesSpool::finish`, renders the final document from the spool
//! as a stream, as often as asked: it is a `storage::BodySource`, and S3 uploads read their
//! body twice (once for length and digests, once to send). The document's format (members,
//! their order, Go's escaping) is `format::files_metadata`'s; this module only keeps it off
//! the heap.

use crate::format::files_metadata::{FileDescription, push_file_member, push_name};
use crate::storage::BodySource;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

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

/// A directory deleted with everything in it on drop; the spools' and the file index's
/// scratch space.
pub(crate) struct SpoolDir(PathBuf);

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

impl SpoolDir {
    /// A new, uniquely named directory below `parent`.
    pub(crate) fn create(parent: &Path) -> io::Result<SpoolDir> {
        let path = parent.join(unique_dir_name());
        fs::create_dir(&path)?;
        Ok(SpoolDir(path))
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl FilesSpool {
    /// A spool in a new directory below the system temporary directory.
    pub fn new() -> io::Result<FilesSpool> {
        Self::new_in(&std::env::temp_dir())
    }

    /// A spool in a new directory below `parent`.
    pub fn new_in(parent: &Path) -> io::Result<FilesSpool> {
        let dir = SpoolDir::create(parent)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::files_metadata::CorruptBlocks;
    use crate::format::files_metadata::tests::collect;

    fn desc(mtime: &str) -> FileDescription {
        FileDescription {
            mtime: mtime.into(),
            ..Default::default()
        }
    }

    fn render(doc: &FilesDocument) -> String {
        let mut out = String::new();
        doc.open().unwrap().read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn layout_as_walg_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = FilesSpool::new_in(dir.path()).unwrap();
        let corrupt = FileDescription {
            is_incremented: true,
            corrupt_blocks: Some(CorruptBlocks {
                count: 2,
                some: vec![7, 9],
            }),
            updates_count: 3,
            ..desc("2024-05-01T12:59:59Z")
        };
        spool
            .add_file(
                "/",
                &desc("2024-05-01T12:59:58.101010101+03:00"),
                Some("part_001.tar.lz4"),
            )
            .unwrap();
        spool
            .add_file("/base/<5>/1259", &corrupt, Some("part_001.tar.lz4"))
            .unwrap();
        spool
            .add_tar_member("backup_label.tar.lz4", "tablespace_map")
            .unwrap();
        spool
            .add_tar_member("backup_label.tar.lz4", "backup_label")
            .unwrap();
        let out = render(&spool.finish().unwrap());
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
        // Partitions without entries, no files: only the sets.
        let mut only_sets = FilesSpool::new_in(dir.path()).unwrap();
        only_sets.finish_partition("p").unwrap();
        let out = render(&only_sets.finish().unwrap());
        assert!(out == r#"{"TarFileSets":{"p":[]}}"# || out == "{}", "{out}");
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
}
