use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

/// A server-side entry: name as PostgreSQL writes it (directories with a trailing slash).
fn entry(name: &str, kind: Kind, data: &[u8], link: &str) -> (Header, Vec<u8>) {
    (
        Header {
            name: name.into(),
            kind,
            mode: if kind == Kind::Dir { 0o700 } else { 0o600 },
            uid: 101,
            gid: 102,
            uname: "postgres".into(),
            gname: "postgres".into(),
            mtime: 1_700_000_000,
            size: data.len() as u64,
            link: link.into(),
        },
        data.to_vec(),
    )
}

/// A tar as the server streams it: no end marker unless asked.
fn server_tar(entries: &[(Header, Vec<u8>)], terminator: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        tar::encode(h, &mut out);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, tar::padding(data.len() as u64)));
    }
    if terminator {
        out.extend_from_slice(&tar::END_OF_ARCHIVE);
    }
    out
}

struct Feed {
    chunks: VecDeque<Chunk>,
    control_reads: u32,
}

impl Feed {
    /// The archives split into data pieces of `sizes` (cycled).
    fn new(archives: &[(Chunk, Vec<u8>)], sizes: &[usize]) -> Feed {
        let mut chunks = VecDeque::new();
        let mut k = 0;
        for (start, bytes) in archives {
            chunks.push_back(start.clone());
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = sizes[k % sizes.len()].clamp(1, rest.len());
                k += 1;
                chunks.push_back(Chunk::Data(Bytes::copy_from_slice(&rest[..n])));
                rest = &rest[n..];
            }
        }
        chunks.push_back(Chunk::End);
        Feed {
            chunks,
            control_reads: 0,
        }
    }
}

impl ChunkSource for Feed {
    fn next_chunk(&mut self) -> io::Result<Chunk> {
        Ok(self.chunks.pop_front().unwrap_or(Chunk::End))
    }
    fn control_read(&mut self) {
        self.control_reads += 1;
    }
}

#[derive(Default)]
struct Names(Vec<String>);
impl RepackSink for Names {
    fn stored(&mut self, h: &Header) {
        self.0.push(h.name.clone());
    }
}

/// Re-packs everything; the partitions' bytes.
fn repack(feed: Feed, threshold: u64) -> io::Result<(Vec<Vec<u8>>, Names, Repacker<Feed>)> {
    let mut r = Repacker::new(feed);
    let mut names = Names::default();
    let mut parts = Vec::new();
    while r.has_more()? {
        let mut p = RemotePartition::new(&mut r, &mut names, threshold);
        let mut bytes = Vec::new();
        p.read_to_end(&mut bytes)?;
        parts.push(bytes);
    }
    Ok((parts, names, r))
}

/// Entries of a partition, read by a standard tar reader: (name, kind, data, mode, mtime).
/// An archive entry read back: name, type, contents, link target.
type Entry = (String, ::tar::EntryType, Vec<u8>, String);

fn read_back(bytes: &[u8]) -> Vec<Entry> {
    assert!(bytes.ends_with(&[0u8; 1024]));
    let mut a = ::tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                e.header().entry_type(),
                data,
                link,
            )
        })
        .collect()
}

fn cluster() -> Vec<(Chunk, Vec<u8>)> {
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let ts = server_tar(
        &[
            entry("PG_15_202209061/", Kind::Dir, b"", ""),
            entry("PG_15_202209061/5/", Kind::Dir, b"", ""),
            entry("PG_15_202209061/5/16400", Kind::File, &big[..9000], ""),
        ],
        false,
    );
    let main = server_tar(
        &[
            entry(
                "backup_label",
                Kind::File,
                b"START WAL LOCATION: 0/2000028\n",
                "",
            ),
            entry("tablespace_map", Kind::File, b"16400 /mnt/ts\n", ""),
            entry("PG_VERSION", Kind::File, b"15\n", ""),
            entry("standby.signal", Kind::File, b"", ""),
            entry("base/", Kind::Dir, b"", ""),
            entry("base/5/", Kind::Dir, b"", ""),
            entry("base/5/1259", Kind::File, &big, ""),
            entry("base/5/1260", Kind::File, b"", ""),
            entry("pg_tblspc/", Kind::Dir, b"", ""),
            entry("pg_tblspc/16400/", Kind::Symlink, b"", "/mnt/ts"),
            entry("pg_wal/", Kind::Dir, b"", ""),
            entry(CONTROL_NAME, Kind::File, &[7u8; 8192], ""),
        ],
        true,
    );
    vec![(Chunk::Tablespace(16400), ts), (Chunk::MainArchive, main)]
}

#[test]
fn repacks_into_walg_remote_partitions() {
    let (parts, names, mut r) = repack(Feed::new(&cluster(), &[700, 33, 32768]), 10_000).unwrap();
    // The tablespace's archive alone; then the main archive cut before the big file (the
    // label and map are small) and after it (it passes the threshold on its own).
    let got: Vec<Vec<Entry>> = parts.iter().map(|p| read_back(p)).collect();
    let listed: Vec<Vec<&str>> = got
        .iter()
        .map(|p| p.iter().map(|e| e.0.as_str()).collect())
        .collect();
    assert_eq!(
        listed,
        vec![
            vec![
                "pg_tblspc/16400/PG_15_202209061/",
                "pg_tblspc/16400/PG_15_202209061/5/",
                "pg_tblspc/16400/PG_15_202209061/5/16400",
            ],
            vec![
                "backup_label",
                "tablespace_map",
                "PG_VERSION",
                "base/",
                "base/5/"
            ],
            vec!["base/5/1259"],
            vec!["base/5/1260", "pg_tblspc/", "pg_wal/", CONTROL_NAME],
        ]
    );
    let file = |name: &str| {
        got.iter()
            .flatten()
            .find(|e| e.0 == name)
            .map(|e| e.2.clone())
            .unwrap()
    };
    assert_eq!(file("base/5/1259").len(), 20_000);
    assert_eq!(file("base/5/1259")[19_999], (19_999 % 251) as u8);
    assert_eq!(file("pg_tblspc/16400/PG_15_202209061/5/16400").len(), 9000);
    assert_eq!(file("backup_label"), b"START WAL LOCATION: 0/2000028\n");
    assert_eq!(r.control.as_deref(), Some(&[7u8; 8192][..]));
    assert_eq!(
        r.dropped, 2,
        "the tablespace link and standby.signal are left out"
    );
    assert_eq!(r.source().control_reads, 1);
    assert_eq!(names.0.len(), 13);
    assert!(names.0.contains(&"base/5/1259".to_string()));
    let dir = &got[1][3];
    assert_eq!(dir.1, ::tar::EntryType::Directory);
}

#[test]
fn one_partition_when_everything_fits() {
    let (parts, _, _) = repack(Feed::new(&cluster()[1..], &[512]), 1 << 30).unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(read_back(&parts[0]).len(), 10);
}

proptest! {
    /// However the server splits its messages, the same partitions come out.
    #[test]
    fn any_message_split_gives_the_same_partitions(sizes in proptest::collection::vec(1usize..3000, 1..8)) {
        let (want, _, _) = repack(Feed::new(&cluster(), &[32768]), 10_000).unwrap();
        let (got, _, _) = repack(Feed::new(&cluster(), &sizes), 10_000).unwrap();
        prop_assert_eq!(want, got);
    }
}

#[test]
fn damaged_streams_fail_clearly() {
    let main = cluster().remove(1).1;
    // Tagged protocol bytes taken for tar data (what WAL-G v3.0.8 does on PostgreSQL 15).
    let mut tagged = vec![b'd'];
    tagged.extend_from_slice(&main);
    let e = repack(
        Feed::new(&[(Chunk::MainArchive, tagged)], &[32768]),
        1 << 30,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("wrong checksum"), "{e}");
    // Cut inside an entry's data.
    let e = repack(
        Feed::new(&[(Chunk::MainArchive, main[..3000].to_vec())], &[1000]),
        1 << 30,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("ended inside an entry"), "{e}");
    // Something after the end marker.
    let mut trailing = main.clone();
    trailing.extend_from_slice(b"junk");
    let e = repack(
        Feed::new(&[(Chunk::MainArchive, trailing)], &[4096]),
        1 << 30,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("after the end"), "{e}");
    // A name that climbs out.
    let evil = server_tar(&[entry("../etc/passwd", Kind::File, b"x", "")], false);
    let e = repack(Feed::new(&[(Chunk::MainArchive, evil)], &[512]), 1 << 30)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a path inside"), "{e}");
}

#[test]
fn numbers_in_both_encodings() {
    assert_eq!(number(b"00000000017\0", "size").unwrap(), 15);
    assert_eq!(number(b"     17 ", "size").unwrap(), 15);
    assert_eq!(number(b"\0\0\0\0", "size").unwrap(), 0);
    let mut big = [0u8; 12];
    big[0] = 0x80;
    big[11] = 1;
    big[10] = 2;
    assert_eq!(number(&big, "size").unwrap(), 513);
    assert!(number(b"9", "size").is_err());
}
