//! Tar headers as WAL-G's partitions carry them (walg-compat §3.2–3.3): USTAR when the entry
//! fits, a PAX extended header before it when it does not (long names or link targets, sizes
//! of 8 GiB and more, large ids).
//!
//! Written by hand because WAL-G's entry names are absolute (`/base/5/1259`), which general
//! tar libraries refuse to write.

/// Tar block size.
pub const BLOCK: usize = 512;

/// The end-of-archive marker: two zero blocks, nothing after them.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Entry types wal-rus writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file (`'0'`).
    File,
    /// Directory (`'5'`).
    Dir,
    /// Symbolic link (`'2'`).
    Symlink,
}

/// One entry's header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Entry name, e.g. `/base/5/1259` or `backup_label`.
    pub name: String,
    /// Entry type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Bytes of data that follow (0 for directories and links).
    pub size: u64,
    /// Link target (symlinks).
    pub link: String,
}

/// Bytes of zero padding after `size` bytes of data.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Writes `value` as zero-padded octal filling `field` but its last byte (a NUL); false when
/// it does not fit.
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

/// Copies `text` into `field`; false when it does not fit.
fn text(field: &mut [u8], value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() > field.len() {
        return false;
    }
    field[..b.len()].copy_from_slice(b);
    true
}

/// Splits a long name into USTAR's prefix (≤155) and name (≤100) at a `/`.
fn split_ustar(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    let bytes = name.as_bytes();
    (0..bytes.len().min(156)).rev().find_map(|i| {
        (bytes[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0)
            .then(|| (&name[..i], &name[i + 1..]))
    })
}

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len = format!("{len}{body}").len();
    }
    format!("{len}{body}")
}

/// A bare USTAR header block; `None` for fields that do not fit.
fn ustar_block(h: &Header, name: &str, prefix: &str, size: u64, typeflag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    text(&mut b[0..100], name);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    if !octal(&mut b[108..116], h.uid) {
        octal(&mut b[108..116], 0);
    }
    if !octal(&mut b[116..124], h.gid) {
        octal(&mut b[116..124], 0);
    }
    if !octal(&mut b[124..136], size) {
        octal(&mut b[124..136], 0);
    }
    octal(&mut b[136..148], h.mtime.max(0) as u64);
    b[156] = typeflag;
    if h.link.len() <= 100 {
        text(&mut b[157..257], &h.link);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    text(&mut b[265..297], &h.uname);
    text(&mut b[297..329], &h.gname);
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    text(&mut b[345..500], prefix);
    // The checksum is computed with its own field as eight spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let field = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(field.as_bytes());
    b
}

/// Appends the header of `h` (and a PAX header before it when needed) to `out`.
pub fn encode(h: &Header, out: &mut Vec<u8>) {
    let typeflag = match h.kind {
        Kind::File => b'0',
        Kind::Dir => b'5',
        Kind::Symlink => b'2',
    };
    let mut pax = String::new();
    let (prefix, name) = match split_ustar(&h.name) {
        Some(p) if h.name.is_ascii() => p,
        _ => {
            pax.push_str(&pax_record("path", &h.name));
            ("", "")
        }
    };
    if h.link.len() > 100 || !h.link.is_ascii() {
        pax.push_str(&pax_record("linkpath", &h.link));
    }
    if h.size >= 1 << 33 {
        pax.push_str(&pax_record("size", &h.size.to_string()));
    }
    for (key, v) in [("uid", h.uid), ("gid", h.gid)] {
        if v >= 1 << 21 {
            pax.push_str(&pax_record(key, &v.to_string()));
        }
    }
    let name: &str = if name.is_empty() && !pax.is_empty() {
        // A USTAR name for readers that ignore PAX: the tail of the real name.
        let n = h.name.len();
        let mut start = n.saturating_sub(100);
        while !h.name.is_char_boundary(start) {
            start += 1;
        }
        &h.name[start..]
    } else {
        name
    };
    if !pax.is_empty() {
        let pax_header = Header {
            name: "././@PaxHeader".into(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: h.mtime,
            size: pax.len() as u64,
            link: String::new(),
        };
        out.extend_from_slice(&ustar_block(
            &pax_header,
            &pax_header.name,
            "",
            pax.len() as u64,
            b'x',
        ));
        out.extend_from_slice(pax.as_bytes());
        out.extend(std::iter::repeat_n(0u8, padding(pax.len() as u64)));
    }
    out.extend_from_slice(&ustar_block(
        h,
        name,
        if pax.contains(" path=") { "" } else { prefix },
        h.size,
        typeflag,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn header(name: &str, kind: Kind, size: u64) -> Header {
        Header {
            name: name.into(),
            kind,
            mode: 0o600,
            uid: 999,
            gid: 999,
            uname: "postgres".into(),
            gname: "postgres".into(),
            mtime: 1_700_000_000,
            size,
            link: String::new(),
        }
    }

    /// Builds an archive with our headers and reads it back with the `tar` crate, a reader
    /// like Go's `archive/tar` that understands USTAR and PAX.
    #[test]
    fn readable_by_a_standard_reader() {
        let long = format!("/base/{}/{}", "d".repeat(120), "f".repeat(90));
        let very_long = format!("/{}", "x".repeat(300));
        let entries = vec![
            (header("/", Kind::Dir, 0), vec![]),
            (header("/PG_VERSION", Kind::File, 3), b"15\n".to_vec()),
            (header(&long, Kind::File, 5), b"hello".to_vec()),
            (header(&very_long, Kind::File, 1), b"z".to_vec()),
            (
                Header {
                    link: "/mnt/ts1".into(),
                    ..header("/pg_tblspc/16384", Kind::Symlink, 0)
                },
                vec![],
            ),
            (header("backup_label", Kind::File, 0), vec![]),
        ];
        let mut archive = Vec::new();
        for (h, data) in &entries {
            encode(h, &mut archive);
            archive.extend_from_slice(data);
            archive.extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
        }
        archive.extend_from_slice(&END_OF_ARCHIVE);
        let mut reader = tar::Archive::new(&archive[..]);
        let mut seen = Vec::new();
        for e in reader.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((
                name,
                e.header().entry_type(),
                data,
                e.header().mode().unwrap(),
                e.header().mtime().unwrap(),
            ));
        }
        assert_eq!(seen.len(), entries.len());
        for ((h, data), (name, ty, got, mode, mtime)) in entries.iter().zip(seen) {
            assert_eq!(&name, &h.name);
            assert_eq!(&got, data);
            assert_eq!(mode, 0o600);
            assert_eq!(mtime, 1_700_000_000);
            let want = match h.kind {
                Kind::File => tar::EntryType::Regular,
                Kind::Dir => tar::EntryType::Directory,
                Kind::Symlink => tar::EntryType::Symlink,
            };
            assert_eq!(ty, want);
        }
    }

    #[test]
    fn pax_records_count_themselves() {
        assert_eq!(pax_record("path", "a"), "9 path=a\n");
        let r = pax_record("path", &"y".repeat(95));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
