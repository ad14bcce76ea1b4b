//! The tablespace specification (walg-compat §2.5): where each tablespace lived at backup
//! time, stored in the sentinel as `Spec`, and the same shape read from a `--restore-spec`
//! file to put tablespaces somewhere else on restore.
//!
//! The document is a flat object mixing fixed members (`base_prefix`, `tablespaces`) with
//! one member per tablespace name, so it is read from a `serde_json::Value` (it is small) and
//! written by hand with Go's sorted-key order.

use crate::format::go_json;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Where one tablespace is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceLocation {
    /// The real directory (no trailing `/`).
    pub loc: String,
    /// The symlink below the data directory, `pg_tblspc/<name>`.
    pub link: String,
}

/// A tablespace specification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablespaceSpec {
    /// The data directory (no trailing `/`).
    pub base_prefix: String,
    /// Names of the links in `pg_tblspc/` (tablespace OIDs as text), in discovery order.
    pub tablespaces: Vec<String>,
    /// Location of every name in `tablespaces`.
    pub locations: BTreeMap<String, TablespaceLocation>,
}

/// A spec document that does not have the required shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tablespace specification: {}", self.0)
    }
}

impl std::error::Error for SpecError {}

fn trim_slash(s: &str) -> String {
    let t = s.trim_end_matches('/');
    if t.is_empty() && s.starts_with('/') {
        "/".to_string()
    } else {
        t.to_string()
    }
}

impl TablespaceSpec {
    /// An empty spec for the data directory `base_prefix`.
    pub fn new(base_prefix: &str) -> TablespaceSpec {
        TablespaceSpec {
            base_prefix: trim_slash(base_prefix),
            ..Default::default()
        }
    }

    /// Records tablespace `name` (its link in `pg_tblspc/`) as living in `loc`.
    pub fn add(&mut self, name: &str, loc: &str) {
        if !self.locations.contains_key(name) {
            self.tablespaces.push(name.to_string());
        }
        self.locations.insert(
            name.to_string(),
            TablespaceLocation {
                loc: trim_slash(loc),
                link: format!("pg_tblspc/{name}"),
            },
        );
    }

    /// Where tablespace `name` is, if the spec knows it.
    pub fn location(&self, name: &str) -> Option<&TablespaceLocation> {
        self.locations.get(name)
    }

    /// Whether the spec lists no tablespace.
    pub fn is_empty(&self) -> bool {
        self.tablespaces.is_empty()
    }

    /// Compact JSON with Go's sorted member names (tablespace names sort before
    /// `base_prefix`); each location is written `loc` then `link`, a Go struct's order.
    pub fn to_json(&self) -> String {
        let mut members: BTreeMap<&str, String> = BTreeMap::new();
        members.insert("base_prefix", go_json::string_literal(&self.base_prefix));
        let mut list = String::from("[");
        for (i, t) in self.tablespaces.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            go_json::push_str(&mut list, t);
        }
        list.push(']');
        members.insert("tablespaces", list);
        for name in &self.tablespaces {
            if let Some(l) = self.locations.get(name) {
                let mut o = go_json::ObjectWriter::new();
                o.str("loc", &l.loc).str("link", &l.link);
                members.insert(name, o.finish());
            }
        }
        let mut o = go_json::ObjectWriter::new();
        for (k, v) in &members {
            o.raw(k, v);
        }
        o.finish()
    }

    /// Reads a spec from a decoded JSON value. As WAL-G: `base_prefix` must be a string and
    /// every name in `tablespaces` needs its location member; other members are ignored.
    pub fn from_value(v: &Value) -> Result<TablespaceSpec, SpecError> {
        let obj = v
            .as_object()
            .ok_or_else(|| SpecError("not a JSON object".into()))?;
        let base_prefix = obj
            .get("base_prefix")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecError("base_prefix must be a string".into()))?;
        let mut spec = TablespaceSpec {
            base_prefix: base_prefix.to_string(),
            ..Default::default()
        };
        let names = match obj.get("tablespaces") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| SpecError("tablespaces must hold strings".into()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(SpecError("tablespaces must be an array".into())),
        };
        for name in names {
            let entry = obj
                .get(&name)
                .and_then(Value::as_object)
                .ok_or_else(|| SpecError(format!("no location for tablespace {name}")))?;
            let field = |want: &str| {
                entry
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(want))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_string)
            };
            let loc =
                field("loc").ok_or_else(|| SpecError(format!("tablespace {name} has no loc")))?;
            let link = field("link").unwrap_or_else(|| format!("pg_tblspc/{name}"));
            spec.tablespaces.push(name.clone());
            spec.locations
                .insert(name, TablespaceLocation { loc, link });
        }
        Ok(spec)
    }

    /// Parses spec JSON text.
    pub fn from_slice(bytes: &[u8]) -> Result<TablespaceSpec, SpecError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| SpecError(format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_walg_order() {
        let mut s = TablespaceSpec::new("/var/lib/postgresql/16/main/");
        s.add("16384", "/mnt/ts1/");
        assert_eq!(
            s.to_json(),
            r#"{"16384":{"loc":"/mnt/ts1","link":"pg_tblspc/16384"},"base_prefix":"/var/lib/postgresql/16/main","tablespaces":["16384"]}"#
        );
        assert_eq!(
            TablespaceSpec::from_slice(s.to_json().as_bytes()).unwrap(),
            s
        );
        assert_eq!(
            TablespaceSpec::new("/d").to_json(),
            r#"{"base_prefix":"/d","tablespaces":[]}"#
        );
    }

    #[test]
    fn reads_restore_spec_and_rejects_incomplete() {
        let text = r#"{"base_prefix":"/var/lib/postgresql/16/main","tablespaces":["16384"],
            "16384":{"loc":"/new/location/ts1","link":"pg_tblspc/16384"},"extra":1}"#;
        let s = TablespaceSpec::from_slice(text.as_bytes()).unwrap();
        assert_eq!(s.location("16384").unwrap().loc, "/new/location/ts1");
        assert!(TablespaceSpec::from_slice(br#"{"tablespaces":[]}"#).is_err());
        assert!(
            TablespaceSpec::from_slice(br#"{"base_prefix":"/d","tablespaces":["1"]}"#).is_err()
        );
        assert!(TablespaceSpec::from_slice(br#"{"base_prefix":1}"#).is_err());
    }
}
