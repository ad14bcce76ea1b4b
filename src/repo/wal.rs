//! Finding, reading and writing one WAL file in `wal_005/`, shared by wal-push (its overwrite
//! check), wal-fetch and wal-prefetch.
//!
//! WAL-G probes candidate names one GET at a time (walg-compat §4.4). wal-rus first tries
//! the name the configured method would have written, which is where nearly every file is;
//! only on a miss does it list `wal_005/<name>` once and pick among what exists in WAL-G's
//! probe order, so a missing file costs two requests instead of eight.

use super::WAL_FOLDER;
use crate::codec::{Crypter, Decoder, Method, ReadFormat, WAL_PROBE_ORDER};
use crate::error::Error;
use crate::storage::{ObjectReader, Storage, StorageError, read_full};
use std::collections::HashSet;
use std::io::{self, Read, Write};

/// The key wal-rus writes for `name` with `method`. For `none` it writes WAL-G master's
/// dot-less name, which every WAL-G version reads.
pub fn key_for(name: &str, method: Method) -> String {
    match method.extension() {
        "" => format!("{WAL_FOLDER}/{name}"),
        ext => format!("{WAL_FOLDER}/{name}.{ext}"),
    }
}

/// The key and format of one candidate: `<name>.<ext>`, or `<name>.` for plain (v3.0.8's
/// `none`).
fn candidate_key(name: &str, format: ReadFormat) -> String {
    format!("{WAL_FOLDER}/{name}.{}", format.extension())
}

/// An archived WAL file, opened.
pub struct Found {
    /// Its key.
    pub key: String,
    /// How it is compressed.
    pub format: ReadFormat,
    /// Its raw (compressed) bytes.
    pub reader: ObjectReader,
}

/// Opens the archived copy of `name`, or `None` when no candidate exists.
pub fn open(
    storage: &dyn Storage,
    name: &str,
    preferred: Method,
) -> Result<Option<Found>, StorageError> {
    let preferred_key = key_for(name, preferred);
    let preferred_format =
        ReadFormat::from_extension(preferred.extension()).unwrap_or(ReadFormat::Plain);
    match storage.get(&preferred_key) {
        Ok(reader) => {
            return Ok(Some(Found {
                key: preferred_key,
                format: preferred_format,
                reader,
            }));
        }
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut present = HashSet::new();
    let folder_prefix = format!("{WAL_FOLDER}/{name}");
    storage.list(&folder_prefix, false, &mut |m| {
        present.insert(m.key);
    })?;
    let mut candidates: Vec<(String, ReadFormat)> = WAL_PROBE_ORDER
        .iter()
        .map(|f| (candidate_key(name, *f), *f))
        .collect();
    candidates.push((folder_prefix.clone(), ReadFormat::Plain));
    for (key, format) in candidates {
        if key == preferred_key || !present.contains(&key) {
            continue;
        }
        match storage.get(&key) {
            Ok(reader) => {
                return Ok(Some(Found {
                    key,
                    format,
                    reader,
                }));
            }
            // Deleted between the listing and the GET: look at the next candidate.
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Streams the decompressed content of `found` into `out` through `buf`; returns its length.
pub fn decode_into(
    found: Found,
    crypter: &Crypter,
    out: &mut dyn Write,
    buf: &mut [u8],
) -> Result<u64, Error> {
    let key = found.key;
    let mut decoder = Decoder::new(found.format, crypter.decrypting(found.reader))
        .map_err(|e| Error::io(format!("decompressing {key}"), e))?;
    let mut total = 0u64;
    loop {
        let n = match decoder.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("reading {key}"), e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("writing", e))?;
        total += n as u64;
    }
}

/// Compares the decompressed content of `found` with `local`, chunk by chunk.
pub fn same_content(
    found: Found,
    crypter: &Crypter,
    local: &mut dyn Read,
    buf: &mut [u8],
) -> Result<bool, Error> {
    let key = found.key;
    let mut decoder = Decoder::new(found.format, crypter.decrypting(found.reader))
        .map_err(|e| Error::io(format!("decompressing {key}"), e))?;
    let half = buf.len() / 2;
    let (a, b) = buf.split_at_mut(half);
    loop {
        let n = read_full(&mut decoder, a).map_err(|e| Error::io(format!("reading {key}"), e))?;
        let m =
            read_full(local, &mut b[..n.max(1)]).map_err(|e| Error::io("reading local file", e))?;
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// wal-push's overwrite protection (walg-compat §6.2) for a file about to be stored as
/// `name`: with `WALG_PREVENT_WAL_OVERWRITE`, and always for `.history`, an archived copy is
/// compared with the local content (`local` opens it, only when there is a copy): true when
/// they are equal (the upload is skipped), a conflict when they differ; false when there is
/// nothing to protect.
pub fn archived_equal<'a>(
    storage: &dyn Storage,
    settings: &crate::config::Settings,
    name: &str,
    arena: &crate::pipeline::arena::Arena,
    local: &mut dyn FnMut() -> Result<Box<dyn Read + 'a>, Error>,
) -> Result<bool, Error> {
    use crate::format::wal_name::{WalFileKind, kind_of};
    let protect = settings.prevent_wal_overwrite
        || kind_of(name, settings.wal_segment_size) == WalFileKind::History;
    let Some(found) = protect
        .then(|| open(storage, name, settings.encode.method))
        .transpose()?
        .flatten()
    else {
        return Ok(false);
    };
    let key = found.key.clone();
    let mut buf = arena
        .lease()
        .map_err(|e| Error::io("comparing with the archive", e))?;
    if same_content(found, &settings.crypter, &mut local()?, &mut buf)? {
        crate::info!("{name} is already archived with equal content as {key}; skipping upload");
        return Ok(true);
    }
    Err(Error::Conflict(format!(
        "{name} is already archived as {key}, contents differ, unable to overwrite"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BytesBody, fs::FsStorage};

    #[test]
    fn keys() {
        assert_eq!(
            key_for("000000010000000000000003", Method::Lz4),
            "wal_005/000000010000000000000003.lz4"
        );
        assert_eq!(
            key_for("000000010000000000000003", Method::Zstd),
            "wal_005/000000010000000000000003.zst"
        );
        assert_eq!(
            key_for("00000002.history", Method::None),
            "wal_005/00000002.history"
        );
    }

    #[test]
    fn finds_walg_spellings_in_probe_order() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        let name = "000000010000000000000007";
        // v3.0.8 `none` spelling, with a trailing dot; plus a longer name sharing the prefix.
        st.put(&format!("wal_005/{name}."), &BytesBody(b"plain"))
            .unwrap();
        st.put(
            &format!("wal_005/{name}.00000028.backup.lz4"),
            &BytesBody(b"x"),
        )
        .unwrap();
        let found = open(&st, name, Method::Lz4).unwrap().unwrap();
        assert_eq!(
            (found.key.as_str(), found.format),
            ("wal_005/000000010000000000000007.", ReadFormat::Plain)
        );
        let mut out = Vec::new();
        decode_into(found, &Crypter::None, &mut out, &mut [0u8; 16]).unwrap();
        assert_eq!(out, b"plain");
        // The bare name is found last.
        st.put("wal_005/000000010000000000000008", &BytesBody(b"bare"))
            .unwrap();
        let f = open(&st, "000000010000000000000008", Method::Zstd)
            .unwrap()
            .unwrap();
        assert_eq!(f.key, "wal_005/000000010000000000000008");
        assert!(
            open(&st, "000000010000000000000009", Method::Lz4)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn compares_content() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        st.put(
            "wal_005/00000002.history",
            &BytesBody(b"1\t0/3000000\tno recovery target\n"),
        )
        .unwrap();
        let same = open(&st, "00000002.history", Method::None)
            .unwrap()
            .unwrap();
        assert!(
            same_content(
                same,
                &Crypter::None,
                &mut &b"1\t0/3000000\tno recovery target\n"[..],
                &mut [0u8; 8]
            )
            .unwrap()
        );
        let other = open(&st, "00000002.history", Method::None)
            .unwrap()
            .unwrap();
        assert!(
            !same_content(
                other,
                &Crypter::None,
                &mut &b"1\t0/3000000\tdifferent\n"[..],
                &mut [0u8; 8]
            )
            .unwrap()
        );
        let longer = open(&st, "00000002.history", Method::None)
            .unwrap()
            .unwrap();
        assert!(
            !same_content(
                longer,
                &Crypter::None,
                &mut &b"1\t0/3000000\tno recovery target\nmore"[..],
                &mut [0u8; 8]
            )
            .unwrap()
        );
    }

    /// What `open` asks of storage, and what it makes of the answers, on a store that can
    /// be made to fail on purpose.
    mod with_faults {
        use super::*;
        use crate::storage::Op;
        use crate::storage::memory::{Fault, MemStorage};

        const NAME: &str = "000000010000000000000007";

        /// The calls after the set-up's puts.
        fn ops(st: &MemStorage) -> Vec<Op> {
            let calls = st.calls().into_iter().map(|(op, _)| op);
            calls.filter(|op| *op != Op::Put).collect()
        }

        #[test]
        fn the_preferred_name_costs_one_get() {
            let st = MemStorage::new();
            st.put(&key_for(NAME, Method::Lz4), &BytesBody(b"x"))
                .unwrap();
            let found = open(&st, NAME, Method::Lz4).unwrap().unwrap();
            assert_eq!(found.format, ReadFormat::Lz4);
            assert_eq!(ops(&st), [Op::Get]);
        }

        #[test]
        fn a_miss_lists_once_then_gets_what_exists() {
            let st = MemStorage::new();
            st.put(&format!("wal_005/{NAME}.br"), &BytesBody(b"x"))
                .unwrap();
            let found = open(&st, NAME, Method::Lz4).unwrap().unwrap();
            assert_eq!(found.key, format!("wal_005/{NAME}.br"));
            assert_eq!(ops(&st), [Op::Get, Op::List, Op::Get]);
            let absent = MemStorage::new();
            assert!(open(&absent, NAME, Method::Lz4).unwrap().is_none());
            assert_eq!(ops(&absent), [Op::Get, Op::List], "two requests for a miss");
        }

        #[test]
        fn a_candidate_deleted_after_the_listing_is_passed_over() {
            let st = MemStorage::new();
            let lzma = format!("wal_005/{NAME}.lzma");
            st.put(&lzma, &BytesBody(b"x")).unwrap();
            st.put(&format!("wal_005/{NAME}.br"), &BytesBody(b"y"))
                .unwrap();
            st.fail_next_on(Op::Get, &lzma, 1, Fault::Missing);
            let found = open(&st, NAME, Method::Zstd).unwrap().unwrap();
            assert_eq!(found.key, format!("wal_005/{NAME}.br"));
        }

        #[test]
        fn other_failures_are_not_taken_for_a_miss() {
            let st = MemStorage::new();
            st.put(&format!("wal_005/{NAME}.br"), &BytesBody(b"x"))
                .unwrap();
            st.fail_next(Op::Get, 1, Fault::Retryable);
            let err = open(&st, NAME, Method::Lz4).err().unwrap();
            assert!(err.is_retryable(), "{err}");
            st.fail_next(Op::List, 1, Fault::Denied);
            assert!(open(&st, NAME, Method::Lz4).is_err());
            st.fail_next_on(Op::Get, &format!("wal_005/{NAME}.br"), 1, Fault::Denied);
            assert!(open(&st, NAME, Method::Lz4).is_err());
            assert!(open(&st, NAME, Method::Lz4).unwrap().is_some());
        }
    }
}
