//! The backup sentinel `<name>_backup_stop_sentinel.json` (walg-compat §2.2): its presence
//! makes a backup exist, and it says where the backup starts and stops and which backup a
//! delta is built on.
//!
//! Writing follows WAL-G's version-2 document exactly (member order, omitted members, Go
//! escaping, `ChkpNum: null`), so the two tools' sentinels diff cleanly. Reading is as
//! lenient as Go's decoder: member names match case-insensitively, unknown members are
//! skipped, and the legacy variants of §2.2.3 are understood (`DeltaFromLSN`, lower-case
//! `spec`, `Files`/`TarFileSets` embedded by pre-2021 WAL-G). The reader is a serde visitor
//! over the stream rather than a `serde_json::Value`, for two reasons: LSNs and sizes are
//! read as `u64` directly (never through `f64`), and an embedded `Files` map of a legacy
//! sentinel, which has one entry per database file, is skipped without being held in memory
//! (`format::files_metadata` can stream it when a restore needs it).

use crate::format::budget::{self, Budget, Budgeted};
use crate::format::go_json::{self, GO_ZERO_TIME, ObjectWriter, PreciseTime};
use crate::format::lsn::Lsn;
use crate::format::spec::TablespaceSpec;
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::io::{BufReader, Read};
use std::rc::Rc;

/// The constant WAL-G writes as `DateFmt` / `date_fmt` (informative only; never parsed with).
pub const DATE_FMT: &str = "%Y-%m-%dT%H:%M:%S.%fZ";

/// The sentinel `Version` WAL-G writes today.
pub const CURRENT_VERSION: u32 = 2;

/// What makes a backup a delta: the four members WAL-G writes together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaInfo {
    /// `DeltaLSN` (legacy: `DeltaFromLSN`): start LSN of the base backup.
    pub lsn: Lsn,
    /// `DeltaFrom`: the immediate base backup.
    pub from: String,
    /// `DeltaFullName`: the full backup at the root of the chain.
    pub full_name: String,
    /// `DeltaCount`: position in the chain (1 on top of a full backup).
    pub count: u64,
}

/// A backup sentinel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sentinel {
    /// `LSN`: backup start LSN. `None` only in WAL-E sentinels (such backups cannot be delta
    /// bases); written as `null` when `None`, as Go writes a nil pointer.
    pub lsn: Option<Lsn>,
    /// The delta members, present exactly when the backup is a delta.
    pub delta: Option<DeltaInfo>,
    /// `PgVersion`: `server_version_num`.
    pub pg_version: u32,
    /// `FinishLSN`: backup stop LSN (`null` when unknown).
    pub finish_lsn: Option<Lsn>,
    /// `SystemIdentifier`, omitted when unknown.
    pub system_identifier: Option<u64>,
    /// `UncompressedSize`.
    pub uncompressed_size: u64,
    /// `CompressedSize`.
    pub compressed_size: u64,
    /// `DataCatalogSize`, omitted when 0.
    pub data_catalog_size: u64,
    /// `Spec` (legacy `spec`): tablespaces, omitted when `None`.
    pub spec: Option<TablespaceSpec>,
    /// `UserData`, omitted when `None`.
    pub user_data: Option<Value>,
    /// `FilesMetadataDisabled`: no `files_metadata.json` was written. Omitted when false.
    pub files_metadata_disabled: bool,
    /// `ChkpNum` (OrioleDB); always written, `null` for PostgreSQL.
    pub chkp_num: Option<u64>,
    /// `DeltaChkpNum` (OrioleDB deltas), omitted when `None`.
    pub delta_chkp_num: Option<u64>,
    /// `Version`: 2 for current sentinels, 0 when absent (pre-2021 WAL-G, WAL-E).
    pub version: u32,
    /// `StartTime`, as stored (RFC 3339); empty when absent.
    pub start_time: String,
    /// `FinishTime`, as stored; empty when absent.
    pub finish_time: String,
    /// `DateFmt`.
    pub date_fmt: String,
    /// `Hostname`.
    pub hostname: String,
    /// `DataDir`.
    pub data_dir: String,
    /// `IsPermanent` at push time (stale after `backup-mark`; `metadata.json` decides).
    pub is_permanent: bool,
    /// A legacy sentinel carried a non-null `Files` map (read it with
    /// `files_metadata::read_entries` on the sentinel body when `files_metadata.json` is absent).
    pub has_embedded_files: bool,
    /// A legacy sentinel carried a non-null `TarFileSets` map.
    pub has_embedded_tar_file_sets: bool,
}

/// A sentinel that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelError(pub String);

impl fmt::Display for SentinelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid backup sentinel: {}", self.0)
    }
}

impl std::error::Error for SentinelError {}

impl Sentinel {
    /// Whether the backup is a delta (WAL-G decides by `DeltaFrom` alone).
    pub fn is_delta(&self) -> bool {
        self.delta.is_some()
    }

    /// `StartTime` parsed, when present and well-formed.
    pub fn start_time_parsed(&self) -> Option<PreciseTime> {
        PreciseTime::parse(&self.start_time)
    }

    /// The version-2 document: compact, WAL-G's member order, no trailing newline.
    pub fn to_json(&self) -> String {
        let time = |t: &str| {
            if t.is_empty() {
                GO_ZERO_TIME.to_string()
            } else {
                t.to_string()
            }
        };
        let mut o = ObjectWriter::new();
        o.opt_u64("LSN", self.lsn.map(|l| l.0));
        if let Some(d) = &self.delta {
            o.u64("DeltaLSN", d.lsn.0)
                .str("DeltaFrom", &d.from)
                .str("DeltaFullName", &d.full_name)
                .u64("DeltaCount", d.count);
        }
        o.u64("PgVersion", u64::from(self.pg_version));
        o.opt_u64("FinishLSN", self.finish_lsn.map(|l| l.0));
        if let Some(id) = self.system_identifier {
            o.u64("SystemIdentifier", id);
        }
        o.u64("UncompressedSize", self.uncompressed_size)
            .u64("CompressedSize", self.compressed_size);
        if self.data_catalog_size != 0 {
            o.u64("DataCatalogSize", self.data_catalog_size);
        }
        if let Some(spec) = &self.spec {
            o.raw("Spec", &spec.to_json());
        }
        if let Some(v) = self.user_data.as_ref().filter(|v| !v.is_null()) {
            o.value("UserData", v);
        }
        if self.files_metadata_disabled {
            o.bool("FilesMetadataDisabled", true);
        }
        o.opt_u64("ChkpNum", self.chkp_num);
        if let Some(n) = self.delta_chkp_num {
            o.u64("DeltaChkpNum", n);
        }
        o.u64("Version", u64::from(self.version))
            .str("StartTime", &time(&self.start_time))
            .str("FinishTime", &time(&self.finish_time))
            .str("DateFmt", &self.date_fmt)
            .str("Hostname", &self.hostname)
            .str("DataDir", &self.data_dir)
            .bool("IsPermanent", self.is_permanent);
        o.finish()
    }

    /// Parses a sentinel from its bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Sentinel, SentinelError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        Self::finish(&mut de, None)
    }

    /// Parses a sentinel from a stream, holding at most one member in memory at a time, and
    /// no member it keeps larger than [`budget::MEMBER_CAP`].
    pub fn from_reader(reader: impl Read) -> Result<Sentinel, SentinelError> {
        let budget = Rc::new(Budget::new(budget::MEMBER_CAP));
        let reader = Budgeted::new(reader, budget.clone());
        let mut de = serde_json::Deserializer::from_reader(BufReader::new(reader));
        Self::finish(&mut de, Some(&budget))
    }

    fn finish<'de, R: serde_json::de::Read<'de>>(
        de: &mut serde_json::Deserializer<R>,
        budget: Option<&Budget>,
    ) -> Result<Sentinel, SentinelError> {
        let raw = de
            .deserialize_map(RawVisitor(budget))
            .map_err(|e| SentinelError(e.to_string()))?;
        de.end().map_err(|e| SentinelError(e.to_string()))?;
        raw.into_sentinel()
    }
}

/// Members as found, before the cross-member rules are applied.
#[derive(Default)]
struct Raw {
    lsn: Option<u64>,
    delta_lsn: Option<u64>,
    delta_from_lsn: Option<u64>,
    delta_from: Option<String>,
    delta_full_name: Option<String>,
    delta_count: Option<u64>,
    pg_version: Option<u64>,
    finish_lsn: Option<u64>,
    system_identifier: Option<u64>,
    uncompressed_size: Option<u64>,
    compressed_size: Option<u64>,
    data_catalog_size: Option<u64>,
    spec: Option<Value>,
    user_data: Option<Value>,
    files_metadata_disabled: Option<bool>,
    chkp_num: Option<u64>,
    delta_chkp_num: Option<u64>,
    version: Option<u64>,
    start_time: Option<String>,
    finish_time: Option<String>,
    date_fmt: Option<String>,
    hostname: Option<String>,
    data_dir: Option<String>,
    is_permanent: Option<bool>,
    has_files: bool,
    has_tar_file_sets: bool,
}

/// The visitor of the sentinel's members; with a budget when reading a stream.
struct RawVisitor<'b>(Option<&'b Budget>);

/// Whether a skipped member held something other than `null`.
struct Presence(bool);

impl<'de> de::Deserialize<'de> for Presence {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Presence, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Presence;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Presence, E> {
                Ok(Presence(false))
            }
            fn visit_none<E>(self) -> Result<Presence, E> {
                Ok(Presence(false))
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Presence, D::Error> {
                d.deserialize_ignored_any(IgnoredAny)
                    .map(|_| Presence(true))
            }
        }
        d.deserialize_option(V)
    }
}

impl<'de> Visitor<'de> for RawVisitor<'_> {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut r = Raw::default();
        let allow = || self.0.inspect(|b| b.allow());
        // A later spelling of the same member wins, as in Go's decoder.
        while let Some(key) = {
            allow();
            map.next_key::<String>()?
        } {
            let key = key.to_ascii_lowercase();
            // Members skipped without being held may be as long as they like (a legacy
            // sentinel's Files map); the rest get the budget's allowance.
            match key.as_str() {
                "files" | "tarfilesets" => self.0.inspect(|b| b.unlimited()),
                _ => allow(),
            };
            match key.as_str() {
                "lsn" => r.lsn = map.next_value()?,
                "deltalsn" => r.delta_lsn = map.next_value()?,
                "deltafromlsn" => r.delta_from_lsn = map.next_value()?,
                "deltafrom" => r.delta_from = map.next_value()?,
                "deltafullname" => r.delta_full_name = map.next_value()?,
                "deltacount" => r.delta_count = map.next_value()?,
                "pgversion" => r.pg_version = map.next_value()?,
                "finishlsn" => r.finish_lsn = map.next_value()?,
                "systemidentifier" => r.system_identifier = map.next_value()?,
                "uncompressedsize" => r.uncompressed_size = map.next_value()?,
                "compressedsize" => r.compressed_size = map.next_value()?,
                "datacatalogsize" => r.data_catalog_size = map.next_value()?,
                "spec" => r.spec = map.next_value()?,
                "userdata" => r.user_data = map.next_value()?,
                "filesmetadatadisabled" => r.files_metadata_disabled = map.next_value()?,
                "chkpnum" => r.chkp_num = map.next_value()?,
                "deltachkpnum" => r.delta_chkp_num = map.next_value()?,
                "version" => r.version = map.next_value()?,
                "starttime" => r.start_time = map.next_value()?,
                "finishtime" => r.finish_time = map.next_value()?,
                "datefmt" => r.date_fmt = map.next_value()?,
                "hostname" => r.hostname = map.next_value()?,
                "datadir" => r.data_dir = map.next_value()?,
                "ispermanent" => r.is_permanent = map.next_value()?,
                "files" => r.has_files = map.next_value::<Presence>()?.0,
                "tarfilesets" => r.has_tar_file_sets = map.next_value::<Presence>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

impl Raw {
    fn into_sentinel(self) -> Result<Sentinel, SentinelError> {
        let delta = match self.delta_from {
            None => None,
            Some(from) => {
                // WAL-G panics on a delta sentinel missing any of the other three members.
                let missing =
                    |what: &str| SentinelError(format!("delta from {from} has no {what}"));
                let lsn = self
                    .delta_lsn
                    .or(self.delta_from_lsn)
                    .ok_or_else(|| missing("DeltaLSN"))?;
                let full_name = self
                    .delta_full_name
                    .ok_or_else(|| missing("DeltaFullName"))?;
                let count = self.delta_count.ok_or_else(|| missing("DeltaCount"))?;
                Some(DeltaInfo {
                    lsn: Lsn(lsn),
                    from,
                    full_name,
                    count,
                })
            }
        };
        let spec = match self.spec {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(TablespaceSpec::from_value(&v).map_err(|e| SentinelError(e.to_string()))?)
            }
        };
        let small = |v: Option<u64>, what: &str| -> Result<u32, SentinelError> {
            u32::try_from(v.unwrap_or(0)).map_err(|_| SentinelError(format!("{what} out of range")))
        };
        Ok(Sentinel {
            lsn: self.lsn.map(Lsn),
            delta,
            pg_version: small(self.pg_version, "PgVersion")?,
            finish_lsn: self.finish_lsn.map(Lsn),
            system_identifier: self.system_identifier,
            uncompressed_size: self.uncompressed_size.unwrap_or(0),
            compressed_size: self.compressed_size.unwrap_or(0),
            data_catalog_size: self.data_catalog_size.unwrap_or(0),
            spec,
            user_data: self.user_data.filter(|v| !v.is_null()),
            files_metadata_disabled: self.files_metadata_disabled.unwrap_or(false),
            chkp_num: self.chkp_num,
            delta_chkp_num: self.delta_chkp_num,
            version: small(self.version, "Version")?,
            start_time: self.start_time.unwrap_or_default(),
            finish_time: self.finish_time.unwrap_or_default(),
            date_fmt: self.date_fmt.unwrap_or_default(),
            hostname: self.hostname.unwrap_or_default(),
            data_dir: self.data_dir.unwrap_or_default(),
            is_permanent: self.is_permanent.unwrap_or(false),
            has_embedded_files: self.has_files,
            has_embedded_tar_file_sets: self.has_tar_file_sets,
        })
    }
}

/// Go-compatible JSON helpers re-exported for callers that build related documents.
pub use go_json::backup_time_string;

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = concat!(
        r#"{"LSN":50331688,"PgVersion":160002,"FinishLSN":50331904,"SystemIdentifier":7358945610532415487,"#,
        r#""UncompressedSize":23567890,"CompressedSize":4201337,"DataCatalogSize":23876543,"ChkpNum":null,"#,
        r#""Version":2,"StartTime":"2024-05-01T10:00:00.123456Z","FinishTime":"2024-05-01T10:00:07.654321Z","#,
        r#""DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"db1","DataDir":"/var/lib/postgresql/16/main","#,
        r#""IsPermanent":false}"#
    );

    const DELTA: &str = concat!(
        r#"{"LSN":117440552,"DeltaLSN":50331688,"DeltaFrom":"base_000000010000000000000003","#,
        r#""DeltaFullName":"base_000000010000000000000003","DeltaCount":1,"PgVersion":160002,"#,
        r#""FinishLSN":117440768,"SystemIdentifier":7358945610532415487,"UncompressedSize":1843200,"#,
        r#""CompressedSize":301776,"DataCatalogSize":23990111,"#,
        r#""Spec":{"16384":{"loc":"/mnt/ts1","link":"pg_tblspc/16384"},"base_prefix":"/var/lib/postgresql/16/main","tablespaces":["16384"]},"#,
        r#""UserData":{"origin":"nightly","x":[3]},"ChkpNum":null,"Version":2,"#,
        r#""StartTime":"2024-05-02T10:00:00.5Z","FinishTime":"2024-05-02T10:00:03.25Z","#,
        r#""DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"db1","DataDir":"/var/lib/postgresql/16/main","#,
        r#""IsPermanent":false}"#
    );

    fn full() -> Sentinel {
        Sentinel {
            lsn: Some(Lsn(50_331_688)),
            pg_version: 160_002,
            finish_lsn: Some(Lsn(50_331_904)),
            system_identifier: Some(7_358_945_610_532_415_487),
            uncompressed_size: 23_567_890,
            compressed_size: 4_201_337,
            data_catalog_size: 23_876_543,
            version: CURRENT_VERSION,
            start_time: "2024-05-01T10:00:00.123456Z".into(),
            finish_time: "2024-05-01T10:00:07.654321Z".into(),
            date_fmt: DATE_FMT.into(),
            hostname: "db1".into(),
            data_dir: "/var/lib/postgresql/16/main".into(),
            ..Default::default()
        }
    }

    #[test]
    fn spec_examples_byte_for_byte() {
        assert_eq!(full().to_json(), FULL);
        assert_eq!(Sentinel::from_slice(FULL.as_bytes()).unwrap(), full());

        let mut spec = TablespaceSpec::new("/var/lib/postgresql/16/main");
        spec.add("16384", "/mnt/ts1");
        let delta = Sentinel {
            lsn: Some(Lsn(117_440_552)),
            delta: Some(DeltaInfo {
                lsn: Lsn(50_331_688),
                from: "base_000000010000000000000003".into(),
                full_name: "base_000000010000000000000003".into(),
                count: 1,
            }),
            finish_lsn: Some(Lsn(117_440_768)),
            uncompressed_size: 1_843_200,
            compressed_size: 301_776,
            data_catalog_size: 23_990_111,
            spec: Some(spec),
            user_data: Some(serde_json::json!({"x": [3], "origin": "nightly"})),
            start_time: "2024-05-02T10:00:00.5Z".into(),
            finish_time: "2024-05-02T10:00:03.25Z".into(),
            ..full()
        };
        assert_eq!(delta.to_json(), DELTA);
        let back = Sentinel::from_reader(DELTA.as_bytes()).unwrap();
        assert!(back.is_delta());
        assert_eq!(back, delta);
    }

    #[test]
    fn u64_values_are_exact_and_floats_refused() {
        let s = Sentinel::from_slice(
            br#"{"LSN":18446744073709551615,"SystemIdentifier":9007199254740993}"#,
        )
        .unwrap();
        assert_eq!(s.lsn, Some(Lsn(u64::MAX)));
        assert_eq!(s.system_identifier, Some(9_007_199_254_740_993));
        assert!(Sentinel::from_slice(br#"{"LSN":5.0e7}"#).is_err());
    }

    #[test]
    fn lenient_reading() {
        // Case-insensitive names, unknown members, legacy DeltaFromLSN, lower-case spec,
        // embedded Files/TarFileSets, nulls.
        let text = br#"{"lsn":117440552,"deltaFrom":"base_000000010000000000000003","DeltaFromLSN":50331688,
            "DeltaFullName":"base_000000010000000000000003","DeltaCount":1,"Unknown":{"a":[1,2]},
            "spec":{"base_prefix":"/d","tablespaces":[]},"Files":{"/PG_VERSION":{"IsSkipped":false}},
            "TarFileSets":null,"UserData":null,"FinishLSN":null}"#;
        let s = Sentinel::from_slice(text).unwrap();
        assert_eq!(s.delta.as_ref().unwrap().lsn, Lsn(50_331_688));
        assert_eq!(s.spec.as_ref().unwrap().base_prefix, "/d");
        assert!(s.has_embedded_files && !s.has_embedded_tar_file_sets);
        assert_eq!(
            (s.version, s.user_data.clone(), s.finish_lsn),
            (0, None, None)
        );
        // DeltaLSN wins over the legacy name when both are present.
        let both = Sentinel::from_slice(br#"{"DeltaFrom":"b","DeltaLSN":2,"DeltaFromLSN":1,"DeltaFullName":"b","DeltaCount":1}"#).unwrap();
        assert_eq!(both.delta.unwrap().lsn, Lsn(2));
        // WAL-E: no LSN at all.
        let wale = Sentinel::from_slice(
            br#"{"wal_segment_backup_stop":"000000010000000000000004","expanded_size_bytes":1}"#,
        )
        .unwrap();
        assert_eq!((wale.lsn, wale.is_delta()), (None, false));
    }

    #[test]
    fn corrupt_sentinels() {
        assert!(
            Sentinel::from_slice(br#"{"DeltaFrom":"base_x","DeltaLSN":1,"DeltaCount":1}"#).is_err()
        );
        assert!(Sentinel::from_slice(b"[1]").is_err());
        assert!(Sentinel::from_slice(br#"{"LSN":1} x"#).is_err());
        assert!(Sentinel::from_slice(br#"{"Spec":{"tablespaces":["1"]}}"#).is_err());
    }

    #[test]
    fn escaping_and_defaults() {
        let s = Sentinel {
            hostname: "a<b>&c".into(),
            ..Default::default()
        };
        let json = s.to_json();
        assert!(
            json.contains(r#""Hostname":"a\u003cb\u003e\u0026c""#),
            "{json}"
        );
        assert!(json.starts_with(r#"{"LSN":null,"PgVersion":0,"FinishLSN":null,"UncompressedSize":0,"CompressedSize":0,"ChkpNum":null,"Version":0,"StartTime":"0001-01-01T00:00:00Z""#), "{json}");
        assert_eq!(
            Sentinel::from_slice(json.as_bytes()).unwrap().hostname,
            "a<b>&c"
        );
    }
}
