//! The facts of a finished backup, gathered once and written twice: into `metadata.json`
//! and into the sentinel, which repeat most of them (walg-compat §2, §3).

use crate::format::go_json::backup_time_string;
use crate::format::lsn::Lsn;
use crate::format::metadata::ExtendedMetadata;
use crate::format::sentinel::{CURRENT_VERSION, DATE_FMT, DeltaInfo, Sentinel};
use crate::format::spec::TablespaceSpec;
use crate::pipeline::tar_stream::Tablespace;
use std::time::SystemTime;

/// Everything both documents say about one backup.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BackupFacts {
    pub start_time: SystemTime,
    pub finish_time: SystemTime,
    pub hostname: String,
    pub data_dir: String,
    /// `server_version_num`.
    pub pg_version: u32,
    pub system_identifier: Option<u64>,
    pub start_lsn: Lsn,
    pub finish_lsn: Lsn,
    pub permanent: bool,
    /// Bytes read into tars.
    pub uncompressed_size: u64,
    /// Bytes stored.
    pub compressed_size: u64,
    /// Sentinel only: bytes of the files below the data directory.
    pub data_catalog_size: u64,
    /// Sentinel only: where the tablespaces were, when there are any.
    pub spec: Option<TablespaceSpec>,
    pub user_data: Option<serde_json::Value>,
    /// The delta members, for a delta.
    pub delta: Option<DeltaInfo>,
}

impl BackupFacts {
    /// `metadata.json`.
    pub fn metadata(&self) -> ExtendedMetadata {
        ExtendedMetadata {
            start_time: backup_time_string(self.start_time),
            finish_time: backup_time_string(self.finish_time),
            date_fmt: DATE_FMT.into(),
            hostname: self.hostname.clone(),
            data_dir: self.data_dir.clone(),
            pg_version: self.pg_version,
            start_lsn: self.start_lsn,
            finish_lsn: self.finish_lsn,
            is_permanent: self.permanent,
            system_identifier: self.system_identifier,
            uncompressed_size: self.uncompressed_size,
            compressed_size: self.compressed_size,
            user_data: self.user_data.clone(),
            unknown: Vec::new(),
        }
    }

    /// `<name>_backup_stop_sentinel.json`, with files metadata stored apart.
    pub fn sentinel(&self) -> Sentinel {
        Sentinel {
            lsn: Some(self.start_lsn),
            delta: self.delta.clone(),
            pg_version: self.pg_version,
            finish_lsn: Some(self.finish_lsn),
            system_identifier: self.system_identifier,
            uncompressed_size: self.uncompressed_size,
            compressed_size: self.compressed_size,
            data_catalog_size: self.data_catalog_size,
            spec: self.spec.clone(),
            user_data: self.user_data.clone(),
            files_metadata_disabled: false,
            chkp_num: None,
            delta_chkp_num: None,
            version: CURRENT_VERSION,
            start_time: backup_time_string(self.start_time),
            finish_time: backup_time_string(self.finish_time),
            date_fmt: DATE_FMT.into(),
            hostname: self.hostname.clone(),
            data_dir: self.data_dir.clone(),
            is_permanent: self.permanent,
            has_embedded_files: false,
            has_embedded_tar_file_sets: false,
        }
    }
}

/// The sentinel's `Spec`: the tablespaces the walk found, or none without any.
pub(super) fn tablespace_spec(
    data_dir: &str,
    tablespaces: &[Tablespace],
) -> Option<TablespaceSpec> {
    (!tablespaces.is_empty()).then(|| {
        let mut spec = TablespaceSpec::new(data_dir);
        for t in tablespaces {
            spec.add(&t.name, &t.location);
        }
        spec
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::time::{Duration, UNIX_EPOCH};

    fn facts() -> BackupFacts {
        BackupFacts {
            start_time: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            finish_time: UNIX_EPOCH + Duration::new(1_700_000_042, 5_000),
            hostname: "db1".into(),
            data_dir: "/var/lib/postgresql/15/main".into(),
            pg_version: 150004,
            system_identifier: Some(7_300_000_000_000_000_001),
            start_lsn: Lsn(0x2000028),
            finish_lsn: Lsn(0x2000100),
            permanent: true,
            uncompressed_size: 40_000_000,
            compressed_size: 9_000_000,
            data_catalog_size: 39_000_000,
            spec: None,
            user_data: Some(json!({"k": ["v", 1]})),
            delta: None,
        }
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn both_documents_say_the_same() {
        let facts = facts();
        let m = facts.metadata();
        let s = facts.sentinel();
        assert_eq!(
            (
                &m.start_time,
                &m.finish_time,
                &m.date_fmt,
                &m.hostname,
                &m.data_dir
            ),
            (
                &s.start_time,
                &s.finish_time,
                &s.date_fmt,
                &s.hostname,
                &s.data_dir
            )
        );
        assert_eq!(
            (
                m.pg_version,
                Some(m.start_lsn),
                Some(m.finish_lsn),
                m.is_permanent
            ),
            (s.pg_version, s.lsn, s.finish_lsn, s.is_permanent)
        );
        assert_eq!(
            (
                m.system_identifier,
                m.uncompressed_size,
                m.compressed_size,
                &m.user_data
            ),
            (
                s.system_identifier,
                s.uncompressed_size,
                s.compressed_size,
                &s.user_data
            )
        );
        let meta = parse(&m.to_json());
        assert_eq!(meta["hostname"], "db1");
        assert_eq!(meta["pg_version"], 150004);
        assert_eq!(meta["start_lsn"], 0x2000028);
        assert_eq!(meta["is_permanent"], true);
        assert_eq!(meta["user_data"], json!({"k": ["v", 1]}));
        let sentinel = parse(&s.to_json());
        assert_eq!(sentinel["StartTime"], meta["start_time"]);
        assert_eq!(sentinel["DataCatalogSize"], 39_000_000);
        assert_eq!(sentinel["Version"], CURRENT_VERSION);
    }

    #[test]
    fn documents_read_back() {
        let facts = facts();
        let meta = ExtendedMetadata::from_slice(facts.metadata().to_json().as_bytes()).unwrap();
        assert_eq!(meta, facts.metadata());
        let sentinel = Sentinel::from_slice(facts.sentinel().to_json().as_bytes()).unwrap();
        assert_eq!(sentinel.lsn, Some(facts.start_lsn));
        assert_eq!(sentinel.finish_lsn, Some(facts.finish_lsn));
        assert_eq!(sentinel.start_time, meta.start_time);
        assert_eq!(sentinel.finish_time, meta.finish_time);
        assert!(!sentinel.is_delta());
        assert!(sentinel.spec.is_none());
    }

    #[test]
    fn tablespaces_make_a_spec() {
        assert_eq!(tablespace_spec("/data", &[]), None);
        let found = [Tablespace {
            name: "16384".into(),
            location: "/mnt/fast/ts".into(),
        }];
        let spec = tablespace_spec("/data", &found).unwrap();
        let mut expected = TablespaceSpec::new("/data");
        expected.add("16384", "/mnt/fast/ts");
        assert_eq!(spec, expected);
        let mut with_spec = facts();
        with_spec.spec = Some(spec.clone());
        let sentinel = Sentinel::from_slice(with_spec.sentinel().to_json().as_bytes()).unwrap();
        assert_eq!(sentinel.spec, Some(spec));
    }
}
