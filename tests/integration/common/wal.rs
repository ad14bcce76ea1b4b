//! WAL segment names and page headers, for tests that make segments without PostgreSQL:
//! wal-fetch checks every page header before it restores a segment.

/// Name of WAL segment number `segno` (16 MiB segments) on timeline `tli`.
pub fn wal_segment_name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 0x100, segno % 0x100)
}

/// Writes a PostgreSQL 15 page header (8 KiB pages) at the start of every page of `data`, a
/// segment numbered `segno` on timeline `tli` whose length is the segment size: what
/// wal-fetch checks before it restores a segment.
pub fn stamp_wal_pages(data: &mut [u8], tli: u32, segno: u64) {
    const PAGE: usize = 8192;
    let size = data.len() as u64;
    for (i, page) in data.chunks_mut(PAGE).enumerate() {
        page[..24].fill(0);
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&(if i == 0 { 2u16 } else { 0 }).to_le_bytes());
        page[4..8].copy_from_slice(&tli.to_le_bytes());
        page[8..16].copy_from_slice(&(segno * size + (i * PAGE) as u64).to_le_bytes());
        if i == 0 {
            page[24..32].copy_from_slice(&0x7300_1234_5678_9abcu64.to_le_bytes());
            page[32..36].copy_from_slice(&(size as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
        }
    }
}

/// (timeline, segment number) of a 24-hex-digit WAL segment name.
pub fn parse_wal_segment_name(name: &str) -> (u32, u64) {
    assert!(
        name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a WAL segment name: {name:?}"
    );
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (tli, log * 0x100 + seg)
}

/// All segment names from `first` to `last` inclusive (same timeline).
pub fn wal_segment_range(first: &str, last: &str) -> Vec<String> {
    let (tli, a) = parse_wal_segment_name(first);
    let (tli2, b) = parse_wal_segment_name(last);
    assert_eq!(tli, tli2, "segment range spans timelines: {first}..{last}");
    (a..=b).map(|n| wal_segment_name(tli, n)).collect()
}
