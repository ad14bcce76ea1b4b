//! Where a setting's value comes from: the environment first (empty counts as unset), then
//! the config file; and the value parsers WAL-G's settings share, so that every setting
//! reports a malformed value the same way.

use super::{ConfigError, bad, file};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// `WALRUS_CONNECT_TIMEOUT` and `WALRUS_IO_TIMEOUT` (seconds), the same for every cloud.
pub(super) fn net_timeouts(
    src: &Sources,
) -> Result<(std::time::Duration, std::time::Duration), ConfigError> {
    let secs = |name, default| {
        uint_setting(src, name, default, 1, 3600).map(std::time::Duration::from_secs)
    };
    Ok((
        secs("WALRUS_CONNECT_TIMEOUT", 10)?,
        secs("WALRUS_IO_TIMEOUT", 60)?,
    ))
}
