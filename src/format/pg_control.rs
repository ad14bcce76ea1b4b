//! The few fields of `global/pg_control` that WAL-G's `wal-restore` reads, at the offsets it
//! reads them (`pg_control_data.go`): the system identifier, the control file's version, the
//! latest checkpoint's location and its timeline. No CRC check, as in WAL-G.

use super::lsn::Lsn;

/// Size of `pg_control` as PostgreSQL writes it (`PG_CONTROL_FILE_SIZE`); WAL-G refuses a
/// shorter file.
pub const SIZE: usize = 8192;

/// Where the file is inside a data directory.
pub const PATH: &str = "global/pg_control";

/// What WAL-G reads of a cluster's control file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgControl {
    /// `system_identifier`: equal for a primary and every cluster made from it.
    pub system_identifier: u64,
    /// `pg_control_version` (1300 since PostgreSQL 13).
    pub version: u32,
    /// `checkPoint`: the latest checkpoint's location.
    pub checkpoint: Lsn,
    /// `checkPointCopy.ThisTimeLineID`: the latest checkpoint's timeline.
    pub timeline: u32,
}

/// Reads the fields from the file's bytes; `None` when it is shorter than [`SIZE`].
pub fn parse(bytes: &[u8]) -> Option<PgControl> {
    if bytes.len() < SIZE {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    // Before version 1100 (PostgreSQL 11) the checkpoint's copy began with two LSNs.
    let timeline = if version < 1100 {
        u32_at(56)
    } else {
        u32_at(48)
    };
    Some(PgControl {
        system_identifier: u64_at(0),
        version,
        checkpoint: Lsn(u64_at(32)),
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_at_walg_offsets() {
        let mut b = vec![0u8; SIZE];
        b[0..8].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
        b[8..12].copy_from_slice(&1300u32.to_le_bytes());
        b[32..40].copy_from_slice(&0x0000_0001_0200_0028u64.to_le_bytes());
        b[48..52].copy_from_slice(&3u32.to_le_bytes());
        b[56..60].copy_from_slice(&9u32.to_le_bytes());
        let c = parse(&b).unwrap();
        assert_eq!(c.system_identifier, 0x1234_5678_9ABC_DEF0);
        assert_eq!((c.version, c.timeline), (1300, 3));
        assert_eq!(c.checkpoint, Lsn(0x0000_0001_0200_0028));
        b[8..12].copy_from_slice(&1002u32.to_le_bytes());
        assert_eq!(parse(&b).unwrap().timeline, 9);
        assert_eq!(parse(&b[..SIZE - 1]), None);
    }
}
