//! The read stage of a base backup: walk the data directory in WAL-G's order and turn it into
//! tar partitions, one `Read` stream per partition, pulled by the compress stage.
//!
//! Nothing is collected up front: the walker holds one sorted listing per directory level,
//! and a partition reads one file at a time through a fixed buffer. A file is stored with the
//! size it had at `stat` time: one that shrinks while read is padded with zeros, one that
//! grows is cut, one that vanishes is left out (WAL replay repairs all three, walg-compat
//! §3.4).

use super::delta::{DeltaBase, Stored};
use super::increment::IncrementReader;
use super::rate::RateLimit;
use crate::format::page;
use crate::format::tar::{self, Header, Kind};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Base names WAL-G leaves out of a backup (a directory of that name is kept, empty).
pub const EXCLUDED: &[&str] = &[
    "log",
    "pg_log",
    "pg_xlog",
    "pg_wal",
    "pgsql_tmp",
    "postgresql.auto.conf.tmp",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.conf",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_stat_tmp",
    "pg_snapshots",
    "pg_subtrans",
    "standby.signal",
];

/// One thing found by the walk.
#[derive(Debug)]
pub struct Entry {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its tar name: `/` for the root, `/base/5/1259`, `/pg_tblspc/<oid>/...`.
    pub name: String,
    /// File, directory or link.
    pub kind: Kind,
    /// Its metadata at walk time.
    pub meta: Metadata,
    /// Link target for symlinks.
    pub link: String,
}

/// A tablespace found under `pg_tblspc/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    /// The link's name (the tablespace OID).
    pub name: String,
    /// The real directory (link target, trailing `/` removed).
    pub location: String,
}

struct Level {
    dir: PathBuf,
    name: String,
    children: std::vec::IntoIter<String>,
    /// Inside a tablespace's real directory, where links are not tablespaces.
    in_tablespace: bool,
}

/// Depth-first walk of a data directory in lexical order, without following symlinks except
/// the tablespace links in `pg_tblspc/`.
pub struct Walker {
    stack: Vec<Level>,
    root: PathBuf,
    started: bool,
    /// Paths of `pg_control` files diverted from the data partitions.
    pub pg_control: Option<PathBuf>,
    /// Tablespaces in discovery order.
    pub tablespaces: Vec<Tablespace>,
    /// Sum of `stat` sizes of every entry visited (sentinel `DataCatalogSize`).
    pub catalog_size: u64,
}

fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

impl Walker {
    /// A walk of `root`.
    pub fn new(root: &Path) -> Walker {
        Walker {
            stack: Vec::new(),
            root: root.to_path_buf(),
            started: false,
            pg_control: None,
            tablespaces: Vec::new(),
            catalog_size: 0,
        }
    }

    fn push_dir(&mut self, dir: PathBuf, name: String, in_tablespace: bool) -> io::Result<()> {
        let children = sorted_names(&dir)?.into_iter();
        self.stack.push(Level {
            dir,
            name,
            children,
            in_tablespace,
        });
        Ok(())
    }

    /// The next entry to store, or `None` at the end of the walk.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        if !self.started {
            self.started = true;
            let meta = fs::metadata(&self.root)?;
            self.catalog_size += meta.len();
            self.push_dir(self.root.clone(), String::new(), false)?;
            return Ok(Some(Entry::plain(
                self.root.clone(),
                "/".into(),
                Kind::Dir,
                meta,
            )));
        }
        loop {
            let Some(level) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(child) = level.children.next() else {
                self.stack.pop();
                continue;
            };
            let path = level.dir.join(&child);
            let name = format!("{}/{child}", level.name);
            let in_tablespace = level.in_tablespace;
            let at_tblspc = level.name == "/pg_tblspc" && !in_tablespace;
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Vanished since the listing: nothing to store.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            self.catalog_size += meta.len();
            if at_tblspc && meta.file_type().is_symlink() {
                self.enter_tablespace(&path, child, name)?;
                continue;
            }
            let found = Found {
                path,
                name,
                child,
                meta,
                in_tablespace,
            };
            if let Some(entry) = self.visit(found)? {
                return Ok(Some(entry));
            }
        }
    }

    /// Follows a tablespace link of `pg_tblspc/`: the link and the real root are not
    /// entries, what is inside them is, under the link's name.
    fn enter_tablespace(&mut self, path: &Path, child: String, name: String) -> io::Result<()> {
        let target = fs::read_link(path)?;
        let real = if target.is_absolute() {
            target
        } else {
            level_dir(path).join(target)
        };
        let location = real.to_string_lossy().trim_end_matches('/').to_string();
        self.tablespaces.push(Tablespace {
            name: child,
            location,
        });
        self.push_dir(real, name, true)
    }

    /// The entry to store for what was found, if any: names WAL-G excludes are left out
    /// (their directories kept, empty), and `pg_control` is set aside, as it is stored apart
    /// from the data partitions.
    fn visit(&mut self, f: Found) -> io::Result<Option<Entry>> {
        let ft = f.meta.file_type();
        if EXCLUDED.contains(&f.child.as_str()) {
            return Ok(ft
                .is_dir()
                .then(|| Entry::plain(f.path, f.name, Kind::Dir, f.meta)));
        }
        if f.child == "pg_control" && ft.is_file() {
            self.pg_control = Some(f.path);
            return Ok(None);
        }
        if ft.is_dir() {
            self.push_dir(f.path.clone(), f.name.clone(), f.in_tablespace)?;
            return Ok(Some(Entry::plain(f.path, f.name, Kind::Dir, f.meta)));
        }
        if ft.is_symlink() {
            let link = fs::read_link(&f.path)?.to_string_lossy().into_owned();
            return Ok(Some(Entry {
                path: f.path,
                name: f.name,
                kind: Kind::Symlink,
                meta: f.meta,
                link,
            }));
        }
        if ft.is_file() {
            return Ok(Some(Entry::plain(f.path, f.name, Kind::File, f.meta)));
        }
        // Sockets, FIFOs, devices: not part of a cluster's data.
        Ok(None)
    }
}

/// One directory entry as the walk found it, before it is known whether it is stored.
struct Found {
    path: PathBuf,
    name: String,
    /// The base name.
    child: String,
    meta: Metadata,
    in_tablespace: bool,
}

impl Entry {
    /// An entry that is not a symlink.
    fn plain(path: PathBuf, name: String, kind: Kind, meta: Metadata) -> Entry {
        Entry {
            path,
            name,
            kind,
            meta,
            link: String::new(),
        }
    }
}

fn level_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The tar header for an entry read from disk.
pub fn header_for(e: &Entry, size: u64) -> Header {
    Header {
        name: e.name.clone(),
        kind: e.kind,
        mode: e.meta.permissions().mode() & 0o7777,
        uid: u64::from(e.meta.uid()),
        gid: u64::from(e.meta.gid()),
        uname: String::new(),
        gname: String::new(),
        mtime: e.meta.mtime(),
        size,
        link: e.link.clone(),
    }
}

/// What a partition reports about each entry it stored, for `files_metadata.json`.
pub trait EntrySink {
    /// `entry` was written into the current partition (a file once all its data was read),
    /// as an increment when `incremented`; `corrupt` lists the blocks that failed page
    /// verification, when it was asked for.
    fn stored(&mut self, entry: &Entry, corrupt: &[u32], incremented: bool);

    /// A delta left regular file `entry` out: unchanged since its base.
    fn skipped(&mut self, entry: &Entry);
}

/// The data of one regular file entry: the file itself or its increment.
enum Source {
    Plain(File),
    Increment(Box<IncrementReader>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(f) => f.read(buf),
            Source::Increment(r) => r.read(buf),
        }
    }
}

/// Checks the pages of one relation file as its bytes stream past, in page-sized steps.
struct PageCheck {
    page: Vec<u8>,
    filled: usize,
    next_block: u32,
    corrupt: Vec<u32>,
}

impl PageCheck {
    fn new(segment: u32) -> PageCheck {
        PageCheck {
            page: vec![0; page::BLCKSZ],
            filled: 0,
            next_block: segment.wrapping_mul(page::RELSEG_SIZE),
            corrupt: Vec::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8], start_lsn: u64) {
        while !data.is_empty() {
            let n = data.len().min(page::BLCKSZ - self.filled);
            self.page[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == page::BLCKSZ {
                if page::is_corrupt(&self.page, self.next_block, start_lsn) {
                    self.corrupt.push(self.next_block);
                }
                self.next_block = self.next_block.wrapping_add(1);
                self.filled = 0;
            }
        }
    }
}

/// One tar partition as a stream: entries pulled from the walker until the payload passes
/// `threshold` bytes (files are never split) or the walk ends, then the end-of-archive marker.
pub struct Partition<'a, S: EntrySink> {
    walker: &'a mut Walker,
    sink: &'a mut S,
    threshold: u64,
    /// Payload bytes (file data) written so far.
    pub payload: u64,
    /// Entries written so far.
    pub entries: u64,
    pending: Vec<u8>,
    pending_pos: usize,
    file: Option<(Source, u64, usize)>,
    /// The file whose data is being read, reported to the sink when its data is done.
    current: Option<Entry>,
    /// A delta's base: files are skipped, incremented or stored whole against it.
    delta: Option<&'a mut DeltaBase>,
    /// Page verification: the backup's start LSN (pages written after it are not checked).
    verify_from: Option<u64>,
    check: Option<PageCheck>,
    /// `WALG_DISK_RATE_LIMIT`: file data read is paid from this bucket.
    disk_limit: Option<&'a RateLimit>,
    finished: bool,
    /// True when the walk has no more entries.
    pub walk_done: bool,
}

impl<'a, S: EntrySink> Partition<'a, S> {
    /// A partition that continues `walker`.
    pub fn new(walker: &'a mut Walker, sink: &'a mut S, threshold: u64) -> Self {
        Partition {
            walker,
            sink,
            threshold,
            payload: 0,
            entries: 0,
            pending: Vec::with_capacity(2048),
            pending_pos: 0,
            file: None,
            current: None,
            delta: None,
            verify_from: None,
            check: None,
            disk_limit: None,
            finished: false,
            walk_done: false,
        }
    }

    /// Verifies page checksums of relation files, skipping pages whose LSN is at or after
    /// `start_lsn` (they are being written during the backup and come back from WAL).
    pub fn verify_pages(mut self, start_lsn: Option<u64>) -> Self {
        self.verify_from = start_lsn;
        self
    }

    /// Takes a delta against `base` (no effect when `None`).
    pub fn delta(mut self, base: Option<&'a mut DeltaBase>) -> Self {
        self.delta = base;
        self
    }

    /// Reads file data no faster than `limit` allows (`WALG_DISK_RATE_LIMIT`).
    pub fn rate_limited(mut self, limit: Option<&'a RateLimit>) -> Self {
        self.disk_limit = limit;
        self
    }

    /// Queues the next entry's header (and opens its file); false at the end of the partition.
    fn advance(&mut self) -> io::Result<bool> {
        self.pending.clear();
        self.pending_pos = 0;
        if self.finished {
            return Ok(false);
        }
        if self.payload > self.threshold {
            self.finish();
            return Ok(true);
        }
        let entry = loop {
            match self.walker.next_entry()? {
                None => {
                    self.walk_done = true;
                    self.finish();
                    return Ok(true);
                }
                Some(e) if e.kind == Kind::File => match self.open_file(&e)? {
                    Some(size) => break (e, size),
                    // Gone, or unchanged since a delta's base.
                    None => continue,
                },
                Some(e) => break (e, 0),
            }
        };
        let (entry, size) = entry;
        tar::encode(&header_for(&entry, size), &mut self.pending);
        self.payload += size;
        self.entries += 1;
        if entry.kind == Kind::File {
            self.current = Some(entry);
        } else {
            self.sink.stored(&entry, &[], false);
        }
        Ok(true)
    }

    /// Opens regular file `e` for its entry: the file, or its increment in a delta; returns
    /// the entry's size, or `None` when nothing is stored (gone since the walk, or unchanged
    /// since the delta's base).
    fn open_file(&mut self, e: &Entry) -> io::Result<Option<u64>> {
        if let Some(base) = self.delta.as_deref_mut()
            && base.unchanged(e)?
        {
            self.sink.skipped(e);
            return Ok(None);
        }
        let file = match File::open(&e.path) {
            Ok(f) => f,
            // Gone between the walk and the open: leave it out.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("{}: {err}", e.path.display()),
                ));
            }
        };
        let size = e.meta.len();
        let segment = page::paged_segment(&e.name, size);
        self.check = self.verify_from.and(segment).map(PageCheck::new);
        let source = match self.delta.as_deref_mut() {
            None => Source::Plain(file),
            Some(base) => {
                let (check, lsn, limit) = (&mut self.check, self.verify_from, self.disk_limit);
                let mut on_data = |d: &[u8]| {
                    if let Some(l) = limit {
                        l.take(d.len());
                    }
                    if let (Some(c), Some(lsn)) = (check.as_mut(), lsn) {
                        c.feed(d, lsn);
                    }
                };
                match base.choose(e, file, size, &mut on_data)? {
                    Stored::Increment(r) => Source::Increment(r),
                    Stored::Whole(f) => {
                        // A scan that gave up fed the check part of the file: start over.
                        self.check = self.verify_from.and(segment).map(PageCheck::new);
                        Source::Plain(f)
                    }
                }
            }
        };
        let size = match &source {
            Source::Increment(r) => r.len(),
            Source::Plain(_) => size,
        };
        self.file = Some((source, size, tar::padding(size)));
        Ok(Some(size))
    }

    fn finish(&mut self) {
        self.finished = true;
        self.pending.extend_from_slice(&tar::END_OF_ARCHIVE);
    }
}

impl<S: EntrySink> Read for Partition<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pending_pos < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pending_pos);
                buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                return Ok(n);
            }
            if let Some((file, remaining, pad)) = self.file.as_mut() {
                if *remaining > 0 {
                    let want = buf.len().min(*remaining as usize);
                    let n = match file.read(&mut buf[..want]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if let Some(limit) = self.disk_limit {
                        limit.take(n);
                    }
                    // Shrunk while read: the rest of the recorded size is zeros.
                    let n = if n == 0 {
                        buf[..want].fill(0);
                        want
                    } else {
                        n
                    };
                    *remaining -= n as u64;
                    if let (Source::Plain(_), Some(check), Some(lsn)) =
                        (&*file, self.check.as_mut(), self.verify_from)
                    {
                        check.feed(&buf[..n], lsn);
                    }
                    return Ok(n);
                }
                let pad = *pad;
                let incremented = matches!(file, Source::Increment(_));
                self.file = None;
                if let Some(entry) = self.current.take() {
                    let corrupt = self.check.take().map(|c| c.corrupt).unwrap_or_default();
                    self.sink.stored(&entry, &corrupt, incremented);
                }
                self.pending.clear();
                self.pending_pos = 0;
                self.pending.resize(pad, 0);
                continue;
            }
            if !self.advance()? {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(Vec<(String, String)>);
    impl EntrySink for Names {
        fn stored(&mut self, e: &Entry, _corrupt: &[u32], _incremented: bool) {
            self.0.push((e.name.clone(), format!("{:?}", e.kind)));
        }
        fn skipped(&mut self, e: &Entry) {
            self.0.push((e.name.clone(), "Skipped".into()));
        }
    }

    #[test]
    fn walks_like_walg_and_splits_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let ts = dir.path().join("ts1");
        for p in [
            "base/1",
            "global",
            "pg_wal/archive_status",
            "pg_tblspc",
            "pg_stat_tmp",
        ] {
            fs::create_dir_all(d.join(p)).unwrap();
        }
        fs::create_dir_all(ts.join("PG_15_202209061/5")).unwrap();
        fs::write(d.join("PG_VERSION"), "15\n").unwrap();
        fs::write(d.join("base/1/1259"), vec![1u8; 9000]).unwrap();
        fs::write(d.join("base/1/1260"), vec![2u8; 10]).unwrap();
        fs::write(d.join("global/pg_control"), vec![3u8; 8192]).unwrap();
        fs::write(d.join("pg_wal/000000010000000000000001"), vec![0u8; 100]).unwrap();
        fs::write(d.join("postmaster.pid"), "1").unwrap();
        fs::write(ts.join("PG_15_202209061/5/16400"), vec![4u8; 700]).unwrap();
        std::os::unix::fs::symlink(&ts, d.join("pg_tblspc/16400")).unwrap();

        let mut walker = Walker::new(&d);
        let mut names = Names(Vec::new());
        let mut parts = Vec::new();
        loop {
            let mut p = Partition::new(&mut walker, &mut names, 5000);
            let mut bytes = Vec::new();
            p.read_to_end(&mut bytes).unwrap();
            let done = p.walk_done;
            parts.push(bytes);
            if done {
                break;
            }
        }
        assert_eq!(
            parts.len(),
            2,
            "cut after the 9000-byte file passed the threshold"
        );
        let listed: Vec<&str> = names.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            listed,
            [
                "/",
                "/PG_VERSION",
                "/base",
                "/base/1",
                "/base/1/1259",
                "/base/1/1260",
                "/global",
                "/pg_stat_tmp",
                "/pg_tblspc",
                "/pg_tblspc/16400/PG_15_202209061",
                "/pg_tblspc/16400/PG_15_202209061/5",
                "/pg_tblspc/16400/PG_15_202209061/5/16400",
                "/pg_wal",
            ]
        );
        assert_eq!(
            walker.pg_control.as_deref(),
            Some(d.join("global/pg_control").as_path())
        );
        assert_eq!(
            walker.tablespaces,
            [Tablespace {
                name: "16400".into(),
                location: ts.display().to_string()
            }]
        );
        // Every partition is a valid tar whose entries carry the data.
        let mut found = Vec::new();
        for bytes in &parts {
            let mut a = ::tar::Archive::new(&bytes[..]);
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                found.push((
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    data.len(),
                ));
            }
            assert!(bytes.ends_with(&[0u8; 1024]));
        }
        assert!(found.contains(&("/base/1/1259".to_string(), 9000)));
        assert!(found.contains(&("/pg_tblspc/16400/PG_15_202209061/5/16400".to_string(), 700)));
    }

    #[test]
    fn a_file_that_shrinks_is_padded_to_its_recorded_size() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![9u8; 3000]).unwrap();
        let mut walker = Walker::new(dir.path());
        let mut names = Names(Vec::new());
        let mut p = Partition::new(&mut walker, &mut names, 1 << 30);
        let mut out = vec![0u8; 2000];
        let mut got = 0;
        // Read the root header and the file header, then shrink the file.
        while got < 1024 {
            got += p.read(&mut out[got..1024]).unwrap();
        }
        fs::write(dir.path().join("f"), vec![9u8; 100]).unwrap();
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).unwrap();
        let mut all = out[..1024].to_vec();
        all.extend(rest);
        let mut a = ::tar::Archive::new(&all[..]);
        let sizes: Vec<u64> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().size().unwrap())
            .collect();
        assert_eq!(sizes, [0, 3000]);
    }
}
