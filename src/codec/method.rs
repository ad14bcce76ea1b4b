//! What can be chosen and what can be read: the compression methods and their setting
//! names, the formats and their object-name extensions, in WAL-G's spelling, apart from the
//! streams so that settings and storage keys can name a format without touching a codec.

/// A compression method that can be configured with `WALG_COMPRESSION_METHOD`
/// and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One LZ4 frame per object (WAL-G's default).
    Lz4,
    /// LZMA "alone" (`.lzma`) stream with the classic 13-byte header.
    Lzma,
    /// One Zstandard frame per object.
    Zstd,
    /// A raw Brotli stream.
    Brotli,
    /// Uncompressed bytes.
    None,
}

impl Method {
    /// Parses a `WALG_COMPRESSION_METHOD` value. Matching is exact and
    /// case-sensitive, as in WAL-G, so `"LZ4"` is rejected rather than
    /// silently accepted by us and refused by WAL-G.
    pub fn from_setting(s: &str) -> Option<Method> {
        match s {
            "lz4" => Some(Method::Lz4),
            "lzma" => Some(Method::Lzma),
            "zstd" => Some(Method::Zstd),
            "brotli" => Some(Method::Brotli),
            "none" => Some(Method::None),
            _ => None,
        }
    }

    /// The setting value that selects this method (inverse of
    /// [`Method::from_setting`]).
    pub fn setting_name(self) -> &'static str {
        match self {
            Method::Lz4 => "lz4",
            Method::Lzma => "lzma",
            Method::Zstd => "zstd",
            Method::Brotli => "brotli",
            Method::None => "none",
        }
    }

    /// The object-name extension WAL-G uses for this method, without the dot;
    /// empty for [`Method::None`]. Note `zstd` → `zst` and `brotli` → `br`.
    pub fn extension(self) -> &'static str {
        self.read_format().extension()
    }

    /// The format a reader needs for objects written with this method.
    pub fn read_format(self) -> ReadFormat {
        match self {
            Method::Lz4 => ReadFormat::Lz4,
            Method::Lzma => ReadFormat::Lzma,
            Method::Zstd => ReadFormat::Zstd,
            Method::Brotli => ReadFormat::Brotli,
            Method::None => ReadFormat::Plain,
        }
    }
}

/// A stream format that can be read: every [`Method`] plus gzip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFormat {
    /// LZ4 frame format (also legacy LZ4 and several concatenated frames).
    Lz4,
    /// LZMA "alone" stream.
    Lzma,
    /// Zstandard frames.
    Zstd,
    /// Raw Brotli stream.
    Brotli,
    /// Gzip (RFC 1952), possibly several members; never written.
    Gzip,
    /// Uncompressed bytes.
    Plain,
}

impl ReadFormat {
    /// The format for an object-name extension (the text after the last dot,
    /// without the dot). An empty extension means uncompressed, which is how
    /// WAL-G treats v3.0.8's trailing-dot names such as `part_001.tar.`.
    pub fn from_extension(ext: &str) -> Option<ReadFormat> {
        match ext {
            "lz4" => Some(ReadFormat::Lz4),
            "lzma" => Some(ReadFormat::Lzma),
            "zst" => Some(ReadFormat::Zstd),
            "br" => Some(ReadFormat::Brotli),
            "gz" => Some(ReadFormat::Gzip),
            "" => Some(ReadFormat::Plain),
            _ => None,
        }
    }

    /// The object-name extension for this format, without the dot; empty for
    /// [`ReadFormat::Plain`].
    pub fn extension(self) -> &'static str {
        match self {
            ReadFormat::Lz4 => "lz4",
            ReadFormat::Lzma => "lzma",
            ReadFormat::Zstd => "zst",
            ReadFormat::Brotli => "br",
            ReadFormat::Gzip => "gz",
            ReadFormat::Plain => "",
        }
    }
}

/// WAL-G's probe order for WAL-archive objects (walg-compat §4.4): `lz4`,
/// `lzma`, `gz`, the empty extension (the key `<name>.` with a trailing dot),
/// `br`, `zst`. If several variants of one WAL file exist, WAL-G takes the
/// first in this order, so we must too. The bare `<name>` without any dot is
/// probed last by the caller, not listed here.
pub const WAL_PROBE_ORDER: [ReadFormat; 6] = [
    ReadFormat::Lz4,
    ReadFormat::Lzma,
    ReadFormat::Gzip,
    ReadFormat::Plain,
    ReadFormat::Brotli,
    ReadFormat::Zstd,
];

/// Zstandard level, named as WAL-G master's `WALG_ZSTD_LEVEL` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZstdLevel {
    /// `fastest`: libzstd level 1.
    Fastest,
    /// `default` (or unset): libzstd level 3.
    #[default]
    Default,
    /// `better`: libzstd level 7.
    Better,
    /// `best`: libzstd level 11.
    Best,
}

impl ZstdLevel {
    /// Parses a `WALG_ZSTD_LEVEL` value; case-insensitive like WAL-G master.
    pub fn from_setting(s: &str) -> Option<ZstdLevel> {
        match s.to_ascii_lowercase().as_str() {
            "fastest" => Some(ZstdLevel::Fastest),
            "default" => Some(ZstdLevel::Default),
            "better" => Some(ZstdLevel::Better),
            "best" => Some(ZstdLevel::Best),
            _ => None,
        }
    }

    /// The libzstd compression level this name stands for (klauspost's own
    /// approximation of its levels, walg-compat §4.1.3).
    pub fn libzstd_level(self) -> i32 {
        match self {
            ZstdLevel::Fastest => 1,
            ZstdLevel::Default => 3,
            ZstdLevel::Better => 7,
            ZstdLevel::Best => 11,
        }
    }
}

/// Encoder options taken from the settings.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    /// `WALG_COMPRESSION_METHOD`.
    pub method: Method,
    /// `WALG_ZSTD_LEVEL`; ignored unless `method` is [`Method::Zstd`].
    pub zstd_level: ZstdLevel,
}

impl Default for EncodeOptions {
    /// WAL-G's defaults: LZ4, and zstd level `default` should zstd be chosen.
    fn default() -> Self {
        EncodeOptions {
            method: Method::Lz4,
            zstd_level: ZstdLevel::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::ALL_METHODS;
    use super::*;

    #[test]
    fn settings_and_extensions() {
        for m in ALL_METHODS {
            assert_eq!(Method::from_setting(m.setting_name()), Some(m));
            assert_eq!(
                ReadFormat::from_extension(m.extension()),
                Some(m.read_format())
            );
        }
        assert_eq!(Method::from_setting("LZ4"), None);
        assert_eq!(Method::from_setting("zst"), None);
        assert_eq!(Method::Zstd.extension(), "zst");
        assert_eq!(Method::Brotli.extension(), "br");
        assert_eq!(Method::None.extension(), "");
        assert_eq!(ReadFormat::from_extension("gz"), Some(ReadFormat::Gzip));
        assert_eq!(ReadFormat::from_extension("lzo"), None);
        assert_eq!(ZstdLevel::from_setting("BeSt"), Some(ZstdLevel::Best));
        assert_eq!(ZstdLevel::from_setting("11"), None);
        let exts: Vec<_> = WAL_PROBE_ORDER.iter().map(|f| f.extension()).collect();
        assert_eq!(exts, ["lz4", "lzma", "gz", "", "br", "zst"]);
    }
}
