//! JSON text the way Go's `encoding/json` writes it, for the documents WAL-G reads back.
//!
//! WAL-G does not care about byte-for-byte equality, but people diff sentinels and scripts
//! compare `backup-list --json` output, so wal-rus writes what Go would: members in the order
//! the Go struct declares them (serde_json's `Value` would sort or lose that order), `<`, `>`,
//! `&`, U+2028 and U+2029 escaped, map keys sorted, float64 numbers without a spurious `.0`,
//! and `MarshalIndent`'s layout for indented output. Time text (RFC 3339 with trimmed
//! nanoseconds, as Go's `time.Time` marshals it) lives here too because every document uses it.

use serde_json::Value;
use std::fmt::Write as _;
use std::time::SystemTime;

/// Appends `s` as a JSON string literal with Go's v1 escaping (HTML-safe).
pub fn push_str(out: &mut String, s: &str) {
    push_str_with(out, s, true);
}

/// Appends `s` as a JSON string literal; `html` also escapes `<`, `>`, `&`, U+2028 and U+2029
/// as `encoding/json` v1 does (`encoding/json/v2`, which writes `files_metadata.json`, does
/// not).
pub fn push_str_with(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON string literal with Go's v1 escaping.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    out
}

/// Appends a float64 as Go's `encoding/json` formats it: plain decimal for magnitudes in
/// [1e-6, 1e21), otherwise exponent form with an explicit sign (`1e+21`, `1e-7`).
fn push_f64(out: &mut String, x: f64) {
    if !x.is_finite() {
        // Go refuses to encode these; JSON has no spelling for them.
        out.push_str("null");
        return;
    }
    let abs = x.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        if x.fract() == 0.0 {
            let _ = write!(out, "{x:.0}");
        } else {
            let _ = write!(out, "{x}");
        }
    } else {
        let text = format!("{x:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp}");
            }
            _ => out.push_str(&text),
        }
    }
}

/// Appends any JSON value as Go writes an `interface{}` decoded from JSON: objects with sorted
/// keys, HTML-safe strings, compact.
pub fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_u64() || n.is_i64() {
                let _ = write!(out, "{n}");
            } else {
                push_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, k);
                out.push(':');
                push_value(out, &map[k]);
            }
            out.push('}');
        }
    }
}

/// Builds one compact JSON object member by member, in the caller's order.
pub struct ObjectWriter {
    out: String,
    empty: bool,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An object with no members yet.
    pub fn new() -> ObjectWriter {
        ObjectWriter {
            out: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_str(&mut self.out, key);
        self.out.push(':');
    }

    /// A member whose value is already JSON text.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(json);
        self
    }

    /// A string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_str(&mut self.out, value);
        self
    }

    /// An unsigned integer member.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// An unsigned integer member, `null` when absent.
    pub fn opt_u64(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.u64(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A member holding any JSON value (objects with sorted keys, as Go writes maps).
    pub fn value(&mut self, key: &str, value: &Value) -> &mut Self {
        self.key(key);
        push_value(&mut self.out, value);
        self
    }

    /// The finished object text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Re-indents compact JSON the way Go's `json.MarshalIndent(v, "", indent)` lays it out:
/// one member or element per line, `": "` after keys, empty `{}` and `[]` kept on one line.
pub fn indent(compact: &str, unit: &str) -> String {
    let bytes = compact.as_bytes();
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(unit);
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            // Copy whole UTF-8 sequences; only ASCII bytes are structural.
            let len = utf8_len(c);
            out.push_str(&compact[i..i + len]);
            i += len;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                out.push('"');
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                if bytes.get(i + 1) == Some(&close) {
                    out.push(c as char);
                    out.push(close as char);
                    i += 2;
                    continue;
                }
                out.push(c as char);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c as char);
            }
            b',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            b':' => out.push_str(": "),
            b' ' | b'\n' | b'\t' | b'\r' => {}
            _ => {
                let len = utf8_len(c);
                out.push_str(&compact[i..i + len]);
                i += len;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

pub use crate::time::GO_ZERO_TIME;

pub use crate::time::PreciseTime;

/// The text WAL-G stores for a backup's start or finish time: UTC, rounded up to a whole
/// microsecond, trailing fractional zeros removed.
pub fn backup_time_string(t: SystemTime) -> String {
    PreciseTime::from_system(t).ceil_micros().to_rfc3339_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn go_string_escapes() {
        assert_eq!(
            string_literal("a<b>&c\"\\\n\t\u{1}\u{2028}é"),
            r#""a\u003cb\u003e\u0026c\"\\\n\t\u0001\u2028é""#
        );
        let mut plain = String::new();
        push_str_with(&mut plain, "<x>", false);
        assert_eq!(plain, "\"<x>\"");
    }

    #[test]
    fn values_sorted_and_floats_like_go() {
        let v: Value = serde_json::from_str(
            r#"{"x":[3, 3.0, 1.5, 1e21, 1e-7, -0.25],"a":{"z":1,"b":null},"s":"<"}"#,
        )
        .unwrap();
        let mut out = String::new();
        push_value(&mut out, &v);
        assert_eq!(
            out,
            r#"{"a":{"b":null,"z":1},"s":"\u003c","x":[3,3,1.5,1e+21,1e-7,-0.25]}"#
        );
    }

    #[test]
    fn indent_like_marshal_indent() {
        let compact = r#"[{"a":"x,y:{","b":[],"c":{},"d":[1,2]}]"#;
        assert_eq!(
            indent(compact, "    "),
            "[\n    {\n        \"a\": \"x,y:{\",\n        \"b\": [],\n        \"c\": {},\n        \"d\": [\n            1,\n            2\n        ]\n    }\n]"
        );
        assert_eq!(indent("[]", "    "), "[]");
    }

    #[test]
    fn backup_times() {
        let t = UNIX_EPOCH + Duration::new(1_714_557_600, 123_456_001);
        assert_eq!(backup_time_string(t), "2024-05-01T10:00:00.123457Z");
        assert_eq!(
            backup_time_string(UNIX_EPOCH + Duration::new(1_714_557_600, 500_000_000)),
            "2024-05-01T10:00:00.5Z"
        );
        assert_eq!(
            backup_time_string(UNIX_EPOCH + Duration::new(1_714_557_600, 0)),
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(
            backup_time_string(UNIX_EPOCH + Duration::new(1_714_557_599, 999_999_999)),
            "2024-05-01T10:00:00Z"
        );
        let p = PreciseTime::parse("2024-05-01T12:59:58.123456789+03:00").unwrap();
        assert_eq!(
            p,
            PreciseTime {
                secs: 1_714_557_598,
                nanos: 123_456_789
            }
        );
        assert_eq!(p.to_rfc3339_utc(), "2024-05-01T09:59:58.123456789Z");
        assert!(
            PreciseTime::parse("2024-05-01T10:00:00.5Z").unwrap()
                < PreciseTime::parse("2024-05-01T10:00:00.50001Z").unwrap()
        );
        assert!(PreciseTime::parse(GO_ZERO_TIME).unwrap().is_go_zero());
        assert_eq!(PreciseTime::parse("2024-05-01 10:00:00Z"), None);
        assert_eq!(PreciseTime::parse("2024-05-01T10:00:00"), None);
        assert_eq!(PreciseTime::parse("2024-05-01T10:00:00+0é:0"), None);
        assert_eq!(PreciseTime::parse("2024-05-01T10:00:0é+00:00"), None);
        assert_eq!(
            PreciseTime::from_system(UNIX_EPOCH - Duration::new(1, 250_000_000)),
            PreciseTime {
                secs: -2,
                nanos: 750_000_000
            }
        );
    }
}
