//! WAL-G's increment stream (walg-compat §3.6): what a delta backup stores for a relation
//! file instead of its contents. Little-endian throughout:
//!
//! `"wi1" 0x55 | file size u64 | N u32 | N block numbers u32 | N pages of BLCKSZ bytes`.

/// Signature: `w`, `i`, format version `1`, WAL-G's magic byte.
pub const SIGNATURE: [u8; 4] = [b'w', b'i', b'1', 0x55];

/// Bytes before the block numbers.
pub const HEADER_LEN: usize = 16;

/// The fixed head of an increment for a file of `file_size` bytes with `blocks` pages.
pub fn header(file_size: u64, blocks: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&SIGNATURE);
    h[4..12].copy_from_slice(&file_size.to_le_bytes());
    h[12..16].copy_from_slice(&blocks.to_le_bytes());
    h
}

/// Size of the whole stream: header, block numbers, pages.
pub fn stream_len(blocks: u32, page_size: usize) -> u64 {
    HEADER_LEN as u64 + u64::from(blocks) * (4 + page_size as u64)
}

/// Why a stream is not an increment; WAL-G's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHeader {
    /// Bytes 0, 1 or 3 differ.
    Invalid,
    /// The version byte is not `1`.
    UnknownVersion,
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadHeader::Invalid => "invalid increment file header",
            BadHeader::UnknownVersion => "unknown increment file header",
        })
    }
}

/// The file size and page count of an increment's head.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(u64, u32), BadHeader> {
    if h[0] != SIGNATURE[0] || h[1] != SIGNATURE[1] || h[3] != SIGNATURE[3] {
        return Err(BadHeader::Invalid);
    }
    if h[2] != SIGNATURE[2] {
        return Err(BadHeader::UnknownVersion);
    }
    let size = u64::from_le_bytes(h[4..12].try_into().unwrap_or_default());
    let n = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
    Ok((size, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_matches_the_documented_example() {
        // walg-compat §3.6: a 24576-byte file of which 2 pages changed.
        let h = header(24576, 2);
        assert_eq!(
            h,
            [
                0x77, 0x69, 0x31, 0x55, 0, 0x60, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0
            ]
        );
        assert_eq!(parse_header(&h), Ok((24576, 2)));
        assert_eq!(stream_len(2, 8192), 16 + 8 + 2 * 8192);
        let mut bad = h;
        bad[1] = b'x';
        assert_eq!(parse_header(&bad), Err(BadHeader::Invalid));
        let mut v2 = h;
        v2[2] = b'2';
        assert_eq!(parse_header(&v2), Err(BadHeader::UnknownVersion));
        assert_eq!(
            BadHeader::UnknownVersion.to_string(),
            "unknown increment file header"
        );
    }
}
