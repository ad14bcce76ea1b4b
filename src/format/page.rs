//! PostgreSQL data pages as `backup-push --verify` checks them: the page header fields and
//! the page checksum (PostgreSQL's `pg_checksum_page`, an FNV-1a variant over 32 lanes).
//!
//! Which files are "paged" follows WAL-G: main-fork relation segments (`16384`, `16384.2`)
//! below `base/` or `pg_tblspc/`, whose size is a multiple of the block size.

/// PostgreSQL's default block size (`WALG_PG_BLOCK_SIZE`).
pub const BLCKSZ: usize = 8192;

/// Blocks per 1 GiB relation segment file.
pub const RELSEG_SIZE: u32 = 131_072;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

fn comp(sum: &mut u32, value: u32) {
    let tmp = *sum ^ value;
    *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
}

/// The checksum PostgreSQL stores in `pd_checksum` for `page` at block number `blkno`.
pub fn checksum(page: &[u8], blkno: u32) -> u16 {
    debug_assert_eq!(page.len(), BLCKSZ);
    let mut sums = BASE_OFFSETS;
    let word = |i: usize| -> u32 {
        // pd_checksum (bytes 8..10) counts as zero.
        let mut w = [page[i], page[i + 1], page[i + 2], page[i + 3]];
        if i == 8 {
            w[0] = 0;
            w[1] = 0;
        }
        u32::from_le_bytes(w)
    };
    for row in 0..BLCKSZ / (4 * N_SUMS) {
        for (j, sum) in sums.iter_mut().enumerate() {
            comp(sum, word((row * N_SUMS + j) * 4));
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            comp(sum, 0);
        }
    }
    let result = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((result % 65_535) + 1) as u16
}

/// The header fields verification needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    /// `pd_lsn`.
    pub lsn: u64,
    /// `pd_checksum`.
    pub checksum: u16,
    /// `pd_upper`; zero for a new (never initialised) page.
    pub upper: u16,
}

/// Reads a page's header.
pub fn header(page: &[u8]) -> PageHeader {
    let u32_at = |i: usize| u32::from_le_bytes([page[i], page[i + 1], page[i + 2], page[i + 3]]);
    let u16_at = |i: usize| u16::from_le_bytes([page[i], page[i + 1]]);
    PageHeader {
        lsn: (u64::from(u32_at(0)) << 32) | u64::from(u32_at(4)),
        checksum: u16_at(8),
        upper: u16_at(14),
    }
}

/// For a tar entry name, the relation segment number when the file is "paged".
pub fn paged_segment(name: &str, size: u64) -> Option<u32> {
    if size == 0
        || !size.is_multiple_of(BLCKSZ as u64)
        || !(name.starts_with("/base/") || name.starts_with("/pg_tblspc/"))
    {
        return None;
    }
    let base = name.rsplit('/').next()?;
    let (rel, seg) = match base.split_once('.') {
        Some((r, s)) => (r, s),
        None => (base, "0"),
    };
    if rel.is_empty()
        || !rel.bytes().all(|b| b.is_ascii_digit())
        || seg.is_empty()
        || !seg.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    seg.parse().ok()
}

/// Whether a page fails verification: not new, not written after the backup started (such
/// pages may be torn while read and are restored from WAL), and its checksum is wrong.
pub fn is_corrupt(page: &[u8], blkno: u32, backup_start_lsn: u64) -> bool {
    let h = header(page);
    if h.upper == 0 || h.lsn >= backup_start_lsn {
        return false;
    }
    checksum(page, blkno) != h.checksum
}

/// Whether a delta takes a page (walg-compat §3.6): `Some(true)` for a valid page written at
/// or after `base_lsn` and for a new (zeroed) page, `Some(false)` for a valid older page,
/// `None` for a page that is neither valid nor new, after which WAL-G stores the whole file.
pub fn delta_takes(page: &[u8], base_lsn: u64) -> Option<bool> {
    let u16_at = |i: usize| u16::from_le_bytes([page[i], page[i + 1]]);
    let h = header(page);
    let (flags, lower, special, version) = (u16_at(10), u16_at(12), u16_at(16), u16_at(18));
    let valid = flags & !0x7 == 0
        && lower >= 24
        && lower <= h.upper
        && h.upper <= special
        && usize::from(special) <= BLCKSZ
        && h.lsn != 0
        && usize::from(version & 0xFF00) == BLCKSZ
        && version & 0xFF <= 5;
    if valid {
        Some(h.lsn >= base_lsn)
    } else if h.upper == 0 {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid heap page with LSN `lsn`.
    pub(crate) fn heap_page(lsn: u64) -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&28u16.to_le_bytes());
        p[14..16].copy_from_slice(&8000u16.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        p[8000] = (lsn % 251) as u8;
        p
    }

    #[test]
    fn delta_takes_new_and_newer_pages_and_refuses_garbage() {
        assert_eq!(delta_takes(&heap_page(0x100), 0x100), Some(true));
        assert_eq!(delta_takes(&heap_page(0xFF), 0x100), Some(false));
        assert_eq!(delta_takes(&heap_page(1 << 33), 0x100), Some(true));
        assert_eq!(delta_takes(&vec![0u8; BLCKSZ], u64::MAX), Some(true));
        let mut bad = heap_page(0x100);
        bad[10] = 0x10; // unknown flag
        assert_eq!(delta_takes(&bad, 0), None);
        let mut bad = heap_page(0x100);
        bad[18] = 0x07; // layout version 7
        assert_eq!(delta_takes(&bad, 0), None);
        let mut bad = heap_page(0x100);
        bad[0..8].fill(0); // no LSN, not new
        assert_eq!(delta_takes(&bad, 0), None);
    }

    #[test]
    fn paged_files_follow_walg() {
        assert_eq!(paged_segment("/base/5/16384", 8192), Some(0));
        assert_eq!(paged_segment("/base/5/16384.3", 16384), Some(3));
        assert_eq!(
            paged_segment("/pg_tblspc/16400/PG_15_202209061/5/16401", 8192),
            Some(0)
        );
        assert_eq!(paged_segment("/base/5/16384_fsm", 8192), None);
        assert_eq!(paged_segment("/global/1262", 8192), None);
        assert_eq!(paged_segment("/base/5/16384", 100), None);
        assert_eq!(paged_segment("/base/5/PG_VERSION", 8192), None);
    }

    #[test]
    fn checksum_ignores_its_own_field_and_depends_on_the_block() {
        let mut page = vec![0u8; BLCKSZ];
        for (i, b) in page.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        let c = checksum(&page, 7);
        page[8] = 0xAB;
        page[9] = 0xCD;
        assert_eq!(checksum(&page, 7), c, "pd_checksum itself is not summed");
        assert_ne!(checksum(&page, 8), c);
        page[100] ^= 1;
        assert_ne!(checksum(&page, 7), c);
    }
}
