//! `basebackups_005/<name>/metadata.json`, the "extended metadata" (walg-compat §2.3).
//!
//! It is small and read often: listings with `--detail`, deletion (permanence, start
//! times) and `backup-mark`, which rewrites it in place. `is_permanent` here is the single
//! source of truth for permanence; the sentinel's copy goes stale and is never consulted.
//!
//! Reading matches names case-insensitively like Go's decoder. Unlike WAL-G, members this
//! version does not know are kept and written back after the known ones, so a `backup-mark`
//! by wal-rus does not strip what a newer WAL-G may have added.

use crate::format::go_json::{GO_ZERO_TIME, ObjectWriter, PreciseTime};
use crate::format::lsn::Lsn;
use serde_json::{Map, Value};
use std::fmt;

/// The contents of `metadata.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExtendedMetadata {
    /// `start_time` (RFC 3339, UTC, µs-ceiled), as stored; empty when absent.
    pub start_time: String,
    /// `finish_time`, as stored; empty when absent.
    pub finish_time: String,
    /// `date_fmt`: the constant `sentinel::DATE_FMT`.
    pub date_fmt: String,
    /// `hostname`.
    pub hostname: String,
    /// `data_dir`.
    pub data_dir: String,
    /// `pg_version`: `server_version_num`.
    pub pg_version: u32,
    /// `start_lsn`.
    pub start_lsn: Lsn,
    /// `finish_lsn`.
    pub finish_lsn: Lsn,
    /// `is_permanent`: authoritative permanence.
    pub is_permanent: bool,
    /// `system_identifier`, written as `null` when unknown.
    pub system_identifier: Option<u64>,
    /// `uncompressed_size`.
    pub uncompressed_size: u64,
    /// `compressed_size`.
    pub compressed_size: u64,
    /// `user_data`, omitted when `None`.
    pub user_data: Option<Value>,
    /// Members this version does not know, in name order, written back unchanged.
    pub unknown: Vec<(String, Value)>,
}

/// A `metadata.json` that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid metadata.json: {}", self.0)
    }
}

impl std::error::Error for MetadataError {}

impl ExtendedMetadata {
    /// `start_time` parsed; `None` when absent, malformed or Go's zero time.
    pub fn start_time_parsed(&self) -> Option<PreciseTime> {
        PreciseTime::parse(&self.start_time).filter(|t| !t.is_go_zero())
    }

    /// `finish_time` parsed; `None` when absent, malformed or Go's zero time.
    pub fn finish_time_parsed(&self) -> Option<PreciseTime> {
        PreciseTime::parse(&self.finish_time).filter(|t| !t.is_go_zero())
    }

    /// Appends the members, in WAL-G's order, to `o` (shared with `backup-list --detail
    /// --json`, whose elements embed them).
    pub fn write_members(&self, o: &mut ObjectWriter) {
        let time = |t: &str| {
            if t.is_empty() {
                GO_ZERO_TIME.to_string()
            } else {
                t.to_string()
            }
        };
        o.str("start_time", &time(&self.start_time))
            .str("finish_time", &time(&self.finish_time))
            .str("date_fmt", &self.date_fmt)
            .str("hostname", &self.hostname)
            .str("data_dir", &self.data_dir)
            .u64("pg_version", u64::from(self.pg_version))
            .u64("start_lsn", self.start_lsn.0)
            .u64("finish_lsn", self.finish_lsn.0)
            .bool("is_permanent", self.is_permanent)
            .opt_u64("system_identifier", self.system_identifier)
            .u64("uncompressed_size", self.uncompressed_size)
            .u64("compressed_size", self.compressed_size);
        if let Some(v) = self.user_data.as_ref().filter(|v| !v.is_null()) {
            o.value("user_data", v);
        }
        for (k, v) in &self.unknown {
            o.value(k, v);
        }
    }

    /// The document: compact, WAL-G's member order, no trailing newline.
    pub fn to_json(&self) -> String {
        let mut o = ObjectWriter::new();
        self.write_members(&mut o);
        o.finish()
    }

    /// Parses the document. Numbers are read as exact integers (`serde_json` keeps integers
    /// that fit `u64` exact); a non-integer LSN or size is an error.
    pub fn from_slice(bytes: &[u8]) -> Result<ExtendedMetadata, MetadataError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| MetadataError(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(MetadataError("not a JSON object".into()));
        };
        Self::from_object(obj)
    }

    fn from_object(obj: Map<String, Value>) -> Result<ExtendedMetadata, MetadataError> {
        let mut m = ExtendedMetadata::default();
        let text = |k: &str, v: Value| match v {
            Value::String(s) => Ok(s),
            Value::Null => Ok(String::new()),
            _ => Err(MetadataError(format!("{k} must be a string"))),
        };
        let number = |k: &str, v: &Value| -> Result<Option<u64>, MetadataError> {
            match v {
                Value::Null => Ok(None),
                Value::Number(n) => n
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| MetadataError(format!("{k} must be an unsigned integer"))),
                _ => Err(MetadataError(format!("{k} must be a number"))),
            }
        };
        for (key, v) in obj {
            match key.to_ascii_lowercase().as_str() {
                "start_time" => m.start_time = text(&key, v)?,
                "finish_time" => m.finish_time = text(&key, v)?,
                "date_fmt" => m.date_fmt = text(&key, v)?,
                "hostname" => m.hostname = text(&key, v)?,
                "data_dir" => m.data_dir = text(&key, v)?,
                "pg_version" => {
                    let n = number(&key, &v)?.unwrap_or(0);
                    m.pg_version = u32::try_from(n)
                        .map_err(|_| MetadataError("pg_version out of range".into()))?;
                }
                "start_lsn" => m.start_lsn = Lsn(number(&key, &v)?.unwrap_or(0)),
                "finish_lsn" => m.finish_lsn = Lsn(number(&key, &v)?.unwrap_or(0)),
                "is_permanent" => {
                    m.is_permanent = match v {
                        Value::Bool(b) => b,
                        Value::Null => false,
                        _ => return Err(MetadataError("is_permanent must be a boolean".into())),
                    }
                }
                "system_identifier" => m.system_identifier = number(&key, &v)?,
                "uncompressed_size" => m.uncompressed_size = number(&key, &v)?.unwrap_or(0),
                "compressed_size" => m.compressed_size = number(&key, &v)?.unwrap_or(0),
                "user_data" => m.user_data = Some(v).filter(|v| !v.is_null()),
                _ => m.unknown.push((key, v)),
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(
        r#"{"start_time":"2024-05-01T10:00:00.123456Z","finish_time":"2024-05-01T10:00:07.654321Z","#,
        r#""date_fmt":"%Y-%m-%dT%H:%M:%S.%fZ","hostname":"db1","data_dir":"/var/lib/postgresql/16/main","#,
        r#""pg_version":160002,"start_lsn":50331688,"finish_lsn":50331904,"is_permanent":false,"#,
        r#""system_identifier":7358945610532415487,"uncompressed_size":23567890,"compressed_size":4201337}"#
    );

    fn example() -> ExtendedMetadata {
        ExtendedMetadata {
            start_time: "2024-05-01T10:00:00.123456Z".into(),
            finish_time: "2024-05-01T10:00:07.654321Z".into(),
            date_fmt: crate::format::sentinel::DATE_FMT.into(),
            hostname: "db1".into(),
            data_dir: "/var/lib/postgresql/16/main".into(),
            pg_version: 160_002,
            start_lsn: Lsn(50_331_688),
            finish_lsn: Lsn(50_331_904),
            is_permanent: false,
            system_identifier: Some(7_358_945_610_532_415_487),
            uncompressed_size: 23_567_890,
            compressed_size: 4_201_337,
            user_data: None,
            unknown: Vec::new(),
        }
    }

    #[test]
    fn spec_example_byte_for_byte() {
        assert_eq!(example().to_json(), EXAMPLE);
        assert_eq!(
            ExtendedMetadata::from_slice(EXAMPLE.as_bytes()).unwrap(),
            example()
        );
        assert_eq!(
            example().start_time_parsed().unwrap().to_rfc3339_utc(),
            "2024-05-01T10:00:00.123456Z"
        );
    }

    #[test]
    fn null_identifier_user_data_and_unknown_members() {
        let mut m = example();
        m.system_identifier = None;
        m.is_permanent = true;
        m.user_data = Some(serde_json::json!({"b": 1, "a": "<"}));
        let json = m.to_json();
        assert!(
            json.contains(r#""is_permanent":true,"system_identifier":null,"#),
            "{json}"
        );
        assert!(
            json.ends_with(r#","user_data":{"a":"\u003c","b":1}}"#),
            "{json}"
        );
        assert_eq!(ExtendedMetadata::from_slice(json.as_bytes()).unwrap(), m);

        let odd = br#"{"Is_Permanent":true,"START_LSN":18446744073709551615,"future":{"x":1}}"#;
        let m = ExtendedMetadata::from_slice(odd).unwrap();
        assert!(m.is_permanent);
        assert_eq!(m.start_lsn, Lsn(u64::MAX));
        assert_eq!(m.start_time_parsed(), None);
        assert!(m.to_json().ends_with(r#""future":{"x":1}}"#));
    }

    #[test]
    fn rejects_bad_types() {
        assert!(ExtendedMetadata::from_slice(br#"{"start_lsn":1.5}"#).is_err());
        assert!(ExtendedMetadata::from_slice(br#"{"is_permanent":"yes"}"#).is_err());
        assert!(ExtendedMetadata::from_slice(b"[]").is_err());
        assert!(ExtendedMetadata::from_slice(b"{").is_err());
    }
}
