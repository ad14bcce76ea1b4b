//! `backup-show NAME|LATEST [--json]`: one backup as its documents describe it, delta
//! members and chain included.
//!
//! `backup-list` prints exactly what WAL-G's prints (scripts parse it, and WAL-G's
//! `--detail` says nothing of deltas), so what a DBA needs to know about a delta, its base,
//! its chain down to the full backup and how much of it is increments, is shown here. The
//! JSON form holds the sentinel and `metadata.json` as stored, the chain oldest first and
//! counts from `files_metadata.json`, read as a stream.

use crate::config::Settings;
use crate::error::Error;
use crate::format::files_metadata;
use crate::format::go_json::{self, ObjectWriter};
use crate::repo::backups::{self, files_metadata_key};
use crate::storage::Storage;
use std::fmt::Write as _;

/// What `backup-show` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Backup name, or `LATEST`.
    pub name: String,
    /// Print JSON.
    pub json: bool,
}

/// Entries of `files_metadata.json` by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct FileCounts {
    entries: u64,
    incremented: u64,
    skipped: u64,
}

fn count_files(storage: &dyn Storage, name: &str) -> Result<Option<FileCounts>, Error> {
    let key = files_metadata_key(name);
    backups::read_document(storage, &key, &mut |reader| {
        let mut c = FileCounts::default();
        files_metadata::for_each_file(reader, |_, d| {
            c.entries += 1;
            c.incremented += u64::from(d.is_incremented);
            c.skipped += u64::from(d.is_skipped);
            Ok(())
        })
        .map_err(|e| Error::io(format!("reading {key}"), e))?;
        Ok(c)
    })
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let storage = settings.open_storage()?;
    let storage = storage.as_ref();
    let backup = backups::resolve(storage, &args.name)?;
    let sentinel = backups::read_sentinel(storage, &backup.name)?;
    let metadata = backups::read_metadata(storage, &backup.name)?;
    let chain = backups::chain_of(storage, &backup.name, sentinel)?;
    let files = count_files(storage, &backup.name)?;
    let text = if args.json {
        let mut o = ObjectWriter::new();
        o.str("backup_name", &backup.name)
            .raw("sentinel", &chain[0].sentinel.to_json());
        match &metadata {
            Some(m) => o.raw("metadata", &m.to_json()),
            None => o.raw("metadata", "null"),
        };
        let names: Vec<String> = chain
            .iter()
            .rev()
            .map(|l| go_json::string_literal(&l.name))
            .collect();
        o.raw("chain", &format!("[{}]", names.join(",")));
        match files {
            Some(c) => o.raw(
                "files",
                &format!(
                    "{{\"entries\":{},\"incremented\":{},\"skipped\":{}}}",
                    c.entries, c.incremented, c.skipped
                ),
            ),
            None => o.raw("files", "null"),
        };
        o.finish() + "\n"
    } else {
        plain(&chain, metadata.as_ref(), files)
    };
    super::write_stdout(&text).map_err(|e| Error::io("writing to stdout", e))
}

fn plain(
    chain: &[backups::Link],
    metadata: Option<&crate::format::metadata::ExtendedMetadata>,
    files: Option<FileCounts>,
) -> String {
    let s = &chain[0].sentinel;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<18}{v}");
    };
    line("backup_name", chain[0].name.clone());
    match &s.delta {
        None => line("kind", "full".into()),
        Some(d) => {
            line("kind", format!("delta {} of {}", d.count, d.full_name));
            line("delta_from", d.from.clone());
            line("delta_lsn", d.lsn.to_string());
        }
    }
    let names: Vec<&str> = chain.iter().rev().map(|l| l.name.as_str()).collect();
    line("chain", names.join(" <- "));
    let lsn = |l: Option<crate::format::lsn::Lsn>| l.map_or("-".into(), |l| l.to_string());
    line("start_lsn", lsn(s.lsn));
    line("finish_lsn", lsn(s.finish_lsn));
    line("pg_version", s.pg_version.to_string());
    line(
        "system_identifier",
        s.system_identifier.map_or("-".into(), |i| i.to_string()),
    );
    line("start_time", s.start_time.clone());
    line("finish_time", s.finish_time.clone());
    line("uncompressed_size", s.uncompressed_size.to_string());
    line("compressed_size", s.compressed_size.to_string());
    line(
        "is_permanent",
        metadata.map_or("unknown (no metadata.json)".into(), |m| {
            m.is_permanent.to_string()
        }),
    );
    if let Some(c) = files {
        line(
            "files",
            format!(
                "{} entries: {} increments, {} unchanged since the base",
                c.entries, c.incremented, c.skipped
            ),
        );
    } else {
        line("files", "no files_metadata.json".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_by_kind() {
        let st = crate::storage::memory::MemStorage::new();
        let doc = br#"{"Files":{"/a":{"IsIncremented":true,"IsSkipped":false,"MTime":"2024-05-01T00:00:00Z","UpdatesCount":0},"/b":{"IsIncremented":false,"IsSkipped":true,"MTime":"2024-05-01T00:00:00Z","UpdatesCount":0},"/c":{"IsIncremented":false,"IsSkipped":false,"MTime":"2024-05-01T00:00:00Z","UpdatesCount":0}}}"#;
        crate::storage::Storage::put(
            &st,
            &files_metadata_key("b1"),
            &crate::storage::BytesBody(doc),
        )
        .unwrap();
        assert_eq!(
            count_files(&st, "b1").unwrap(),
            Some(FileCounts {
                entries: 3,
                incremented: 1,
                skipped: 1
            })
        );
        assert_eq!(count_files(&st, "b2").unwrap(), None);
    }
}
