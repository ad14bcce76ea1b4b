//! `basebackups_005/<name>/files_metadata.json` (walg-compat §2.4): one entry per tar entry
//! (and per skipped file) of a backup, and which partition holds which entry.
//!
//! The document grows with the number of files in the cluster, while wal-rus promises
//! memory that does not, so nothing here holds the document: `pipeline::files_spool` keeps
//! the entries of a backup being taken on disk and renders them with the functions here,
//! and the readers stream:
//!
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
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use std::fmt::{self, Write as _};
use std::io::{self, BufReader, Read};
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
pub fn push_name(out: &mut String, s: &str) {
    go_json::push_str_with(out, s, false);
}

/// Appends `"name":{...}`, one member of `Files`.
pub fn push_file_member(out: &mut String, name: &str, d: &FileDescription) {
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
pub(crate) mod tests {
    use super::*;

    /// Every file and every partition member of a document, in order.
    pub(crate) type Collected = (Vec<(String, FileDescription)>, Vec<(String, String)>);

    /// Reads a whole document into `Collected` (tests here and of the spool).
    pub(crate) fn collect(doc: &[u8]) -> Collected {
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
