//! Stage one of SigV4: the canonical request, the one text both sides must build
//! identically from method, path, query, headers and payload hash.

use super::{PathRules, Request, uri_encode};

/// The canonical form of `path` under `rules` (second line of the canonical request).
pub fn canonical_path(path: &str, rules: PathRules) -> String {
    let path = if rules.normalize {
        normalize_path(path)
    } else {
        path.to_string()
    };
    let path = if rules.double_encode {
        uri_encode(&path, false)
    } else {
        path
    };
    if path.is_empty() {
        "/".to_string()
    } else {
        path
    }
}

/// RFC 3986 dot-segment removal plus collapsing of empty segments, keeping a
/// trailing slash; what the generic (non-S3) services sign.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    // A path ending in `/`, `/.` or `/..` names a directory, so the slash survives.
    let last = path.rsplit('/').next().unwrap_or("");
    let dir = path.contains('/') && matches!(last, "" | "." | "..");
    if out.is_empty() || dir {
        out.push('/');
    }
    out
}

/// The canonical query string: each name and value encoded, pairs sorted by
/// encoded name then encoded value, joined with `&`; a parameter without a
/// value still gets its `=`.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Canonical headers: (lower-case name, canonical value) sorted by name, with
/// repeated names merged in order of appearance.
fn canonical_header_list(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), canonical_header_value(v)))
        .collect();
    // Stable, so repeated names keep the order they were given in.
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(lowered.len());
    for (name, value) in lowered {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    merged
}

/// Trims the value and collapses each run of spaces inside it to one space.
fn canonical_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut in_space = false;
    for c in v.trim_matches(|c| c == ' ' || c == '\t').chars() {
        if c == ' ' {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// The `SignedHeaders` list for `headers`: lower-case names, sorted, unique, `;`-joined.
pub fn signed_headers(headers: &[(String, String)]) -> String {
    let names: Vec<String> = canonical_header_list(headers)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.join(";")
}

/// The canonical request: method, canonical path, canonical query, canonical
/// headers, signed header list and payload hash, one per line.
pub fn canonical_request(req: &Request, rules: PathRules) -> String {
    debug_assert!(
        req.headers
            .iter()
            .any(|(k, _)| k.trim().eq_ignore_ascii_case("host")),
        "SigV4 requires the host header to be signed"
    );
    let headers = canonical_header_list(req.headers);
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_path(req.path, rules));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for (name, value) in &headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(req.payload_hash);
    out
}
