//! Config files as WAL-G reads them (viper v1.7.0): the format comes from the extension
//! (`json`, `toml`, `yaml`/`yml`, `properties`/`props`/`prop`, `dotenv`/`env`; viper also
//! knows `hcl` and `ini`, which wal-rus refuses by name), keys are matched without regard to
//! case, and values may be strings, numbers or booleans. Without `--config`, WAL-G looks for
//! `.walg.<ext>` in the home directory of the OS user, trying the extensions in viper's order.
//!
//! Unlike WAL-G, which warns and goes on without a file it cannot parse, a file that exists
//! and cannot be read is an error naming it: going on would mean other storage or settings.

use super::{ConfigError, bad};
use std::path::{Path, PathBuf};

/// viper's extensions, in the order it tries them.
pub const EXTENSIONS: &[&str] = &[
    "json",
    "toml",
    "yaml",
    "yml",
    "properties",
    "props",
    "prop",
    "hcl",
    "dotenv",
    "env",
    "ini",
];

/// A value in a config file.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string, number or boolean, as text.
    Text(String),
    /// A table, list or other structure (WAL-G's `WALG_FAILOVER_STORAGES`, ...).
    Structured,
}

/// A config file's settings: upper-cased keys and their values, in file order.
pub type Entries = Vec<(String, Value)>;

/// The default config file: `.walg.<ext>` in the OS user's home directory (from the
/// password database, as Go's `user.Current` does; `$HOME` when the user has no entry).
pub fn default_path() -> Option<PathBuf> {
    let home = crate::pg::os_account()
        .map(|(_, home)| home)
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOME").ok().filter(|h| !h.is_empty()))?;
    find_in(Path::new(&home))
}

/// The first `.walg.<ext>` in `dir` that exists and is not a directory, in viper's order.
pub fn find_in(dir: &Path) -> Option<PathBuf> {
    EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!(".walg.{ext}")))
        .find(|p| p.metadata().is_ok_and(|m| !m.is_dir()))
}

/// Reads and parses a config file.
pub fn read(path: &Path) -> Result<Entries, ConfigError> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "json" | "toml" | "yaml" | "yml" | "properties" | "props" | "prop" | "dotenv" | "env" => {
            ext.as_str()
        }
        "hcl" | "ini" => {
            return Err(bad(
                &name,
                format!(
                    "wal-rus does not read {} config files (WAL-G does); use JSON, YAML, TOML, \
                     .properties or .env",
                    ext.to_ascii_uppercase()
                ),
            ));
        }
        _ => {
            return Err(bad(
                &name,
                format!(
                    "WAL-G tells a config file's format by its extension, one of {}",
                    EXTENSIONS.join(", ")
                ),
            ));
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(&name, format!("cannot read config file: {e}")))?;
    let entries = match format {
        "json" => json(&text),
        "toml" => toml(&text),
        "yaml" | "yml" => yaml(&text),
        "properties" | "props" | "prop" => properties(&text, &|k| std::env::var(k).ok()),
        _ => dotenv(&text, &|k| std::env::var(k).ok()),
    }
    .map_err(|e| bad(&name, format!("not a valid {format} config file: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|(k, v)| {
            // WAL-G's GetSetting trims trailing line breaks (a YAML block scalar's).
            let v = match v {
                Value::Text(t) => Value::Text(t.trim_end_matches(['\r', '\n']).to_string()),
                s => s,
            };
            (k.to_ascii_uppercase(), v)
        })
        .collect())
}

/// Go's text for a float (`strconv.FormatFloat(f, 'f', -1, 64)`, as viper's cast does).
fn float_text(f: f64) -> String {
    format!("{f}")
}

fn json(text: &str) -> Result<Entries, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = value.as_object().ok_or("the top level must be an object")?;
    let mut out = Vec::new();
    for (k, v) in obj {
        let v = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Bool(b) => Value::Text(b.to_string()),
            serde_json::Value::Number(n) => Value::Text(match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i.to_string(),
                (_, Some(u)) => u.to_string(),
                _ => float_text(n.as_f64().unwrap_or(0.0)),
            }),
            _ => Value::Structured,
        };
        out.push((k.clone(), v));
    }
    Ok(out)
}

fn toml(text: &str) -> Result<Entries, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    Ok(table
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => Value::Text(s),
                toml::Value::Integer(i) => Value::Text(i.to_string()),
                toml::Value::Float(f) => Value::Text(float_text(f)),
                toml::Value::Boolean(b) => Value::Text(b.to_string()),
                toml::Value::Datetime(d) => Value::Text(d.to_string()),
                toml::Value::Array(_) | toml::Value::Table(_) => Value::Structured,
            };
            (k, v)
        })
        .collect())
}

/// YAML through the event parser, so that plain scalars can be read as WAL-G's YAML 1.1
/// library reads them (`yes`, `on`, `y` are true; `~` is null); other plain scalars, numbers
/// included, keep the text written.
fn yaml(text: &str) -> Result<Entries, String> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::{Marker, TScalarStyle};

    #[derive(Default)]
    struct Flat {
        /// 0: before the top mapping; 1: inside it; more: inside a nested value.
        depth: usize,
        key: Option<String>,
        out: Entries,
        err: Option<String>,
    }
    impl MarkedEventReceiver for Flat {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if self.err.is_some() {
                return;
            }
            let at = || format!("line {}", mark.line());
            match (self.depth, ev) {
                (_, Event::Nothing | Event::StreamStart | Event::StreamEnd) => {}
                (0, Event::DocumentStart | Event::DocumentEnd) => {}
                (0, Event::MappingStart(..)) => self.depth = 1,
                (0, Event::Scalar(s, TScalarStyle::Plain, ..)) if is_null(&s) => {}
                (0, _) => self.err = Some("the top level must be a mapping".into()),
                (1, Event::MappingEnd) => self.depth = 0,
                (1, Event::Scalar(s, style, ..)) => match self.key.take() {
                    None => self.key = Some(s),
                    Some(k) if style == TScalarStyle::Plain && is_null(&s) => drop(k),
                    Some(k) => {
                        let v = match style {
                            TScalarStyle::Plain => yaml11_bool(&s).map_or(s, str::to_string),
                            _ => s,
                        };
                        self.out.push((k, Value::Text(v)));
                    }
                },
                (1, Event::MappingStart(..) | Event::SequenceStart(..)) => match self.key.take() {
                    Some(k) => {
                        self.out.push((k, Value::Structured));
                        self.depth = 2;
                    }
                    None => self.err = Some(format!("{}: a key must be a scalar", at())),
                },
                (1, Event::Alias(_)) => {
                    self.err = Some(format!("{}: YAML aliases are not supported", at()))
                }
                (d, Event::MappingStart(..) | Event::SequenceStart(..)) => self.depth = d + 1,
                (d, Event::MappingEnd | Event::SequenceEnd) => self.depth = d - 1,
                _ => {}
            }
        }
    }
    fn is_null(s: &str) -> bool {
        matches!(s, "" | "~" | "null" | "Null" | "NULL")
    }
    fn yaml11_bool(s: &str) -> Option<&'static str> {
        match s {
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                Some("true")
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => Some("false"),
            _ => None,
        }
    }
    let mut flat = Flat::default();
    Parser::new_from_str(text)
        .load(&mut flat, false)
        .map_err(|e| e.to_string())?;
    match flat.err {
        Some(e) => Err(e),
        None => Ok(flat.out),
    }
}

/// `${NAME}` references in a `.properties` value: another key of the file, else the
/// environment (as the properties library WAL-G uses expands them).
fn expand(
    s: &str,
    seen: &mut Vec<String>,
    file: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let len = rest[start + 2..]
            .find('}')
            .ok_or_else(|| format!("malformed reference in {s:?}"))?;
        let key = &rest[start + 2..start + 2 + len];
        if seen.iter().any(|k| k == key) || seen.len() > 16 {
            return Err(format!("circular reference to {key}"));
        }
        let raw = file
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env(key))
            .unwrap_or_default();
        seen.push(key.to_string());
        let value = expand(&raw, seen, file, env)?;
        seen.pop();
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Java `.properties`: `key=value`, `key: value` or `key value`; `#`/`!` comments; a line
/// ending in a backslash continues; `\t \n \r \f \uXXXX` escapes; `${key}` references.
fn properties(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Entries, String> {
    let mut lines = Vec::new();
    let mut logical = String::new();
    let mut continued = false;
    for line in text.lines() {
        let piece = if continued { line.trim_start() } else { line };
        let trailing = piece.len() - piece.trim_end_matches('\\').len();
        continued = trailing % 2 == 1;
        if continued {
            logical.push_str(&piece[..piece.len() - 1]);
            continue;
        }
        logical.push_str(piece);
        lines.push(std::mem::take(&mut logical));
    }
    lines.push(logical);
    let mut raw: Vec<(String, String)> = Vec::new();
    for l in &lines {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        raw.push(split_property(t)?);
    }
    let mut out = Vec::new();
    for (k, v) in &raw {
        let v = expand(v, &mut vec![k.clone()], &raw, env)?;
        out.push((k.clone(), Value::Text(v)));
    }
    Ok(out)
}

/// One logical `.properties` line into key and value, escapes resolved.
fn split_property(t: &str) -> Result<(String, String), String> {
    let mut chars = t.chars().peekable();
    let mut key = String::new();
    while let Some(&c) = chars.peek() {
        if matches!(c, '=' | ':' | ' ' | '\t' | '\x0c') {
            break;
        }
        chars.next();
        if c == '\\' {
            key.push(unescape(&mut chars)?);
        } else {
            key.push(c);
        }
    }
    while chars
        .next_if(|c| matches!(c, ' ' | '\t' | '\x0c'))
        .is_some()
    {}
    if chars.next_if(|c| matches!(c, '=' | ':')).is_some() {
        while chars
            .next_if(|c| matches!(c, ' ' | '\t' | '\x0c'))
            .is_some()
        {}
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            value.push(unescape(&mut chars)?);
        } else {
            value.push(c);
        }
    }
    Ok((key, value))
}

fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    Ok(match chars.next() {
        Some('t') => '\t',
        Some('n') => '\n',
        Some('r') => '\r',
        Some('f') => '\x0c',
        Some('u') => {
            let hex: String = chars.by_ref().take(4).collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == 4)
                .and_then(char::from_u32)
                .ok_or_else(|| format!("invalid unicode escape \\u{hex}"))?
        }
        Some(c) => c,
        None => '\\',
    })
}

/// A `.env` file as gotenv reads it: `[export] KEY=value` or `KEY: value`; `#` comments;
/// single quotes literal; double quotes with `\n`/`\r` escapes; `$NAME`/`${NAME}` from
/// earlier keys, else the environment, outside single quotes.
fn dotenv(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Entries, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.trim_start_matches('\u{feff}').lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad_line = || format!("line `{line}` is not KEY=value");
        let t = t
            .strip_prefix("export")
            .filter(|r| r.starts_with(char::is_whitespace))
            .map_or(t, str::trim_start);
        let key_len = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(t.len());
        let (key, rest) = t.split_at(key_len);
        let rest = rest.trim_start();
        let rest = if let Some(r) = rest.strip_prefix('=') {
            r.trim_start()
        } else if let Some(r) = rest.strip_prefix(':') {
            r.trim_start()
        } else {
            return Err(bad_line());
        };
        if key.is_empty() {
            return Err(bad_line());
        }
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The last closing quote followed only by blanks or a comment.
                let close = rest
                    .char_indices()
                    .skip(1)
                    .filter(|&(i, c)| {
                        let after = rest[i + 1..].trim_start();
                        c == q && (after.is_empty() || after.starts_with('#'))
                    })
                    .last()
                    .map(|(i, _)| i)
                    .ok_or_else(bad_line)?;
                let inner = &rest[1..close];
                if q == '\'' {
                    inner.to_string()
                } else {
                    let mut s = String::new();
                    let mut chars = inner.chars();
                    while let Some(c) = chars.next() {
                        match (c, chars.clone().next()) {
                            ('\\', Some('n')) => s.push('\n'),
                            ('\\', Some('r')) => s.push('\r'),
                            ('\\', Some('$')) => {
                                s.push_str("\\$");
                                chars.next();
                                continue;
                            }
                            ('\\', Some(n)) => s.push(n),
                            _ => {
                                s.push(c);
                                continue;
                            }
                        }
                        chars.next();
                    }
                    substitute(&s, &out, env)
                }
            }
            _ => substitute(rest.split('#').next().unwrap_or("").trim(), &out, env),
        };
        out.push((key.to_string(), value));
    }
    Ok(out.into_iter().map(|(k, v)| (k, Value::Text(v))).collect())
}

/// gotenv's `$NAME` / `${NAME}` (names of `A-Z`, `0-9`, `_`); `\$` is a literal `$`.
fn substitute(
    s: &str,
    earlier: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        if rest[..i].ends_with('\\') {
            out.push_str(&rest[..i - 1]);
            out.push('$');
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let braced = after.starts_with('{');
        let body = if braced { &after[1..] } else { after };
        let n = body
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(body.len());
        if n == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        let name = &body[..n];
        let value = earlier
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| env(name))
            .unwrap_or_default();
        out.push_str(&value);
        let used = usize::from(braced) + n + usize::from(braced && body[n..].starts_with('}'));
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: &Entries, k: &str) -> Option<String> {
        e.iter()
            .rev()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| match v {
                Value::Text(t) => Some(t.clone()),
                Value::Structured => None,
            })
    }

    /// The same settings in every format read the same.
    #[test]
    fn formats_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "c.json",
                r#"{"walg_file_prefix": "/data", "WALG_UPLOAD_CONCURRENCY": 4, "WALG_PREVENT_WAL_OVERWRITE": true, "WALG_DELTA_MAX_STEPS": 0.0, "X": null}"#,
            ),
            (
                "c.yaml",
                "# comment\nwalg_file_prefix: /data\nWALG_UPLOAD_CONCURRENCY: 4\nWALG_PREVENT_WAL_OVERWRITE: yes\nWALG_DELTA_MAX_STEPS: 0\nX: ~\n",
            ),
            (
                "c.toml",
                "walg_file_prefix = \"/data\"\nWALG_UPLOAD_CONCURRENCY = 4\nWALG_PREVENT_WAL_OVERWRITE = true\nWALG_DELTA_MAX_STEPS = 0\n",
            ),
            (
                "c.properties",
                "! comment\nwalg_file_prefix=/da\\\n   ta\nWALG_UPLOAD_CONCURRENCY : 4\nWALG_PREVENT_WAL_OVERWRITE true\nWALG_DELTA_MAX_STEPS=${ZERO}\nZERO=0\n",
            ),
            (
                "c.env",
                "export walg_file_prefix=\"/data\" # where\nWALG_UPLOAD_CONCURRENCY=4\nWALG_PREVENT_WAL_OVERWRITE: 'true'\nZERO=0\nWALG_DELTA_MAX_STEPS=${ZERO}\n",
            ),
        ];
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            let e = read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                text(&e, "WALG_FILE_PREFIX").as_deref(),
                Some("/data"),
                "{name}"
            );
            assert_eq!(
                text(&e, "WALG_UPLOAD_CONCURRENCY").as_deref(),
                Some("4"),
                "{name}"
            );
            assert_eq!(
                text(&e, "WALG_PREVENT_WAL_OVERWRITE").as_deref(),
                Some("true"),
                "{name}"
            );
            assert_eq!(
                text(&e, "WALG_DELTA_MAX_STEPS").as_deref(),
                Some("0"),
                "{name}"
            );
            assert!(text(&e, "X").is_none(), "{name}");
        }
    }

    #[test]
    fn structures_bad_files_and_formats() {
        let e = yaml("WALG_FAILOVER_STORAGES:\n  one:\n    WALG_FILE_PREFIX: /x\nPGHOST: 'on'\nPGPORT: \"5432\"\nK: |\n  a\n  b\n").unwrap();
        assert_eq!(e[0], ("WALG_FAILOVER_STORAGES".into(), Value::Structured));
        assert_eq!(e[1], ("PGHOST".into(), Value::Text("on".into())));
        assert_eq!(e[2], ("PGPORT".into(), Value::Text("5432".into())));
        assert_eq!(e[3], ("K".into(), Value::Text("a\nb\n".into())));
        assert!(toml("[WALG_FAILOVER_STORAGES.one]\nx = 1\n").unwrap()[0].1 == Value::Structured);
        assert!(json(r#"{"A": [1]}"#).unwrap()[0].1 == Value::Structured);
        assert!(yaml("- a\n- b\n").is_err());
        assert!(yaml("a: [b\n").is_err());
        assert!(toml("a = \n").is_err());
        assert!(json("WALG_FILE_PREFIX: /x").is_err());
        assert!(dotenv("just words\n", &|_| None).is_err());
        assert!(properties("A=${B}\nB=${A}\n", &|_| None).is_err());
        let dir = tempfile::tempdir().unwrap();
        for (name, want) in [
            ("a.hcl", "HCL"),
            ("a.ini", "INI"),
            ("a.conf", "extension"),
            ("walg", "extension"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, "{}").unwrap();
            let err = read(&p).unwrap_err();
            assert!(
                err.setting.ends_with(name) && err.message.contains(want),
                "{err}"
            );
        }
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, "a: [").unwrap();
        assert!(read(&p).unwrap_err().setting.ends_with("bad.yaml"));
    }

    #[test]
    fn dotenv_and_properties_details() {
        let env = |k: &str| (k == "HOMEDIR").then(|| "/home/pg".to_string());
        let e = dotenv(
            "A='x # y' # c\nB=\"l1\\nl2\"\nC=$HOMEDIR/x\nD=${A}!\nE=\\$HOMEDIR\nF=\n",
            &env,
        )
        .unwrap();
        let t = |k| text(&e, k).unwrap();
        assert_eq!(
            (t("A"), t("B"), t("C")),
            ("x # y".into(), "l1\nl2".into(), "/home/pg/x".into())
        );
        assert_eq!(
            (t("D"), t("E"), t("F")),
            ("x # y!".into(), "$HOMEDIR".into(), "".into())
        );
        let p = properties("a\\ b = c\\u0041\\td\nHOME=${HOMEDIR}\nLAST=x\\", &env).unwrap();
        assert_eq!(text(&p, "LAST").unwrap(), "x");
        assert_eq!(text(&p, "a b").unwrap(), "cA\td");
        assert_eq!(text(&p, "HOME").unwrap(), "/home/pg");
    }

    #[test]
    fn default_file_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(dir.path()), None);
        std::fs::create_dir(dir.path().join(".walg.json")).unwrap();
        for ext in ["ini", "yml", "toml"] {
            std::fs::write(dir.path().join(format!(".walg.{ext}")), "").unwrap();
            assert_eq!(
                find_in(dir.path()),
                Some(dir.path().join(format!(".walg.{ext}")))
            );
        }
        std::fs::write(dir.path().join(".walg"), "{}").unwrap();
        assert_eq!(find_in(dir.path()), Some(dir.path().join(".walg.toml")));
    }
}
