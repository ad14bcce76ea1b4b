//! Where a setting's value comes from: the environment first (empty counts as unset), then
//! the config file; and the value parsers WAL-G's settings share, so that every setting
//! reports a malformed value the same way.

use super::{ConfigError, bad, file};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Looks settings up in the environment, then in the config file.
pub struct Sources {
    env: Lookup,
    file: HashMap<String, file::Value>,
    /// The config file's keys, in file order.
    file_keys: Vec<String>,
    /// The config file read, if any.
    pub file_path: Option<PathBuf>,
}

/// A function from a setting's name to its value.
type Lookup = Box<dyn Fn(&str) -> Option<String>>;

impl Sources {
    /// The process environment and a config file: `config` (`--config`), else WAL-G's
    /// default `.walg.<ext>` in the home directory when there is one.
    pub fn from_process(config: Option<&Path>) -> Result<Sources, ConfigError> {
        let path = match config {
            Some(p) => Some(p.to_path_buf()),
            None => file::default_path(),
        };
        let entries = match &path {
            Some(p) => file::read(p)?,
            None => Vec::new(),
        };
        let mut src = Sources::from_entries(|k| std::env::var(k).ok(), entries);
        src.file_path = path;
        Ok(src)
    }

    /// Sources from a function and a map of a config file's text values, for tests.
    pub fn from_parts(
        env: impl Fn(&str) -> Option<String> + 'static,
        file: HashMap<String, String>,
    ) -> Sources {
        let entries = file
            .into_iter()
            .map(|(k, v)| (k, file::Value::Text(v)))
            .collect();
        Sources::from_entries(env, entries)
    }

    /// Sources from a function and a config file's entries.
    pub fn from_entries(
        env: impl Fn(&str) -> Option<String> + 'static,
        entries: file::Entries,
    ) -> Sources {
        let mut file_keys: Vec<String> = Vec::new();
        let mut file = HashMap::new();
        for (k, v) in entries {
            if !file_keys.contains(&k) {
                file_keys.push(k.clone());
            }
            file.insert(k, v);
        }
        Sources {
            env: Box::new(env),
            file,
            file_keys,
            file_path: None,
        }
    }

    /// A setting's value: environment (non-empty) first, then the file's text.
    pub fn get(&self, name: &str) -> Option<String> {
        match self.raw(name) {
            Some(Some(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether a setting is set, and its text: `Some(None)` for a structured value of the
    /// config file (a table or a list).
    pub fn raw(&self, name: &str) -> Option<Option<String>> {
        if let Some(v) = (self.env)(name).filter(|v| !v.is_empty()) {
            return Some(Some(v));
        }
        match self.file.get(name)? {
            file::Value::Text(t) if t.is_empty() => None,
            file::Value::Text(t) => Some(Some(t.clone())),
            file::Value::Structured => Some(None),
        }
    }

    /// The config file's keys (upper case), in file order.
    pub fn file_keys(&self) -> impl Iterator<Item = &str> {
        self.file_keys.iter().map(String::as_str)
    }

    /// The first of several spellings that is set, with the spelling found.
    pub(super) fn first(&self, names: &[&str]) -> Option<(String, String)> {
        names
            .iter()
            .find_map(|n| self.get(n).map(|v| (n.to_string(), v)))
    }

    /// WAL-G's lookup for storage-specific settings: bare name, then `WALG_`, then `WALE_`.
    pub(super) fn storage_setting(&self, bare: &str) -> Option<(String, String)> {
        self.first(&[bare, &format!("WALG_{bare}"), &format!("WALE_{bare}")])
    }
}

/// The name prefix of a storage prefix's path, as WAL-G joins names to it: trimmed of `/`,
/// then empty or ending in one `/` (inner `//` kept).
pub(super) fn folder_root(path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    }
}

/// `WALRUS_CONNECT_TIMEOUT` and `WALRUS_IO_TIMEOUT` (seconds), the cloud clients' bounds
/// on connecting and on any one read or write.
pub(super) fn net_timeouts(src: &Sources) -> Result<(Duration, Duration), ConfigError> {
    Ok((
        Duration::from_secs(uint_setting(src, "WALRUS_CONNECT_TIMEOUT", 10, 1, 3600)?),
        Duration::from_secs(uint_setting(src, "WALRUS_IO_TIMEOUT", 60, 1, 3600)?),
    ))
}

/// Go's `strconv.ParseBool`, which WAL-G uses.
pub(super) fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(bad(
            name,
            format!("'{v}' is not a boolean (use true or false)"),
        )),
    }
}

pub(super) fn bool_setting(src: &Sources, name: &str, default: bool) -> Result<bool, ConfigError> {
    src.get(name)
        .map_or(Ok(default), |v| parse_bool(name, v.trim()))
}

/// A rate in bytes per second; unset or 0 is no limit.
pub(super) fn rate_setting(src: &Sources, name: &str) -> Result<Option<u64>, ConfigError> {
    let rate = uint_setting(src, name, 0, 0, u64::MAX)?;
    Ok((rate > 0).then_some(rate))
}

/// Go's `time.ParseDuration`, which WAL-G reads its durations with: a sequence of decimal
/// numbers, each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), as `1m`, `1.5s`,
/// `1h30m`; a bare `0` is zero. `None` for anything else.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = after;
    }
    (nanos.is_finite() && nanos < 9.2e18).then(|| Duration::from_nanos(nanos.round() as u64))
}

/// A duration in Go's syntax (`30s`, `1m`); unset gives `default`, `0` gives `None` (off).
pub(super) fn duration_setting(
    src: &Sources,
    name: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(v) = src.get(name) else {
        return Ok(default);
    };
    let d = parse_go_duration(&v).ok_or_else(|| {
        bad(
            name,
            format!("'{v}' is not a duration (a number with a unit: 30s, 1m, 1h30m)"),
        )
    })?;
    Ok((!d.is_zero()).then_some(d))
}

pub(super) fn uint_setting(
    src: &Sources,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = src.get(name) else {
        return Ok(default);
    };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| bad(name, format!("'{v}' is not a whole number")))?;
    if n < min || n > max {
        return Err(bad(name, format!("{n} is out of range {min}..={max}")));
    }
    Ok(n)
}
