//! The crate's shape, held by tests: which module may import which, where `unsafe` may
//! live, and how large a file or a function may grow. Written down here, once, so that the
//! README's layer map and the code cannot drift apart silently.
//!
//! Imports are read from the source text (`crate::x`, `use crate::{x, ..}`, and the log
//! macros), which is what a reviewer would read; the compiler proves the rest.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may import, lowest first. A module not listed
/// here fails the test: a new room needs a place on the map.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("time", &[]),
    ("readers", &[]),
    ("log", &["time"]),
    ("format", &["log", "readers", "time"]),
    ("codec", &["log", "readers", "sys", "time"]),
    ("storage", &["log", "readers", "sys", "time"]),
    ("pg", &["log", "readers", "sys", "time", "format"]),
    (
        "pipeline",
        &[
            "log", "readers", "sys", "time", "format", "codec", "storage", "pg",
        ],
    ),
    (
        "config",
        &[
            "log", "readers", "sys", "time", "format", "codec", "storage", "pg", "pipeline",
        ],
    ),
    (
        "error",
        &[
            "log", "readers", "sys", "time", "format", "codec", "storage", "pg", "pipeline",
            "config",
        ],
    ),
    (
        "repo",
        &[
            "log", "readers", "sys", "time", "format", "codec", "storage", "pg", "pipeline",
            "config", "error",
        ],
    ),
    (
        "commands",
        &[
            "log", "readers", "sys", "time", "format", "codec", "storage", "pg", "pipeline",
            "config", "error", "repo",
        ],
    ),
    ("cli", &["commands"]),
    ("shape", &[]),
];

/// Longest non-test source file, in lines.
pub const MAX_FILE_LINES: usize = 600;

/// Longest function outside tests, in lines.
pub const MAX_FN_LINES: usize = 80;

/// Files still over `MAX_FILE_LINES`, to be split; the test fails when one of them shrinks
/// below it (take it off the list) or when any other file grows past it.
pub const OVERSIZED_FILES: &[&str] = &[];

/// Functions still over `MAX_FN_LINES` (`file:function`), to be split, held the same way.
pub const OVERSIZED_FNS: &[&str] = &[];

/// Every `.rs` file below `dir`.
pub fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file of `src/` belongs to (`None` for the binary's `main.rs` and
/// the crate root).
pub fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "main" | "lib" => None,
        _ => Some(name.to_string()),
    }
}

/// The text before the file's first `#[cfg(test)]` item: what ships.
pub fn shipped(text: &str) -> &str {
    // Only a test module ends the shipped part: a `#[cfg(test)]` on one item (a test seam)
    // is followed by more shipped code.
    let mut at = 0;
    while let Some(i) = text[at..].find("#[cfg(test)]") {
        let start = at + i;
        let rest = text[start + "#[cfg(test)]".len()..].trim_start();
        if ["mod ", "pub mod ", "pub(crate) mod ", "#[path"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// Top-level modules named by `crate::` paths in `text`, comments left out. The log
/// macros (`crate::warn!` and friends) count as `log`.
pub fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            // `$crate::` inside a macro is the macro's own crate root: not an import.
            let dollar = i > 0 && rest.as_bytes()[i - 1] == b'$';
            if !dollar {
                if let Some(group) = after.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.push(name);
                        }
                    }
                } else {
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let is_macro = after[name.len()..].starts_with('!');
                    if is_macro {
                        out.push("log".into());
                    } else if !name.is_empty() {
                        out.push(name);
                    }
                }
            }
            rest = after;
        }
    }
    out
}

/// Functions longer than `max` lines in `text` (shipped code only), as (name, lines).
/// A function runs from its `fn` line to the first line after it that closes at the
/// `fn` line's indentation.
pub fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = shipped(text).lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = ["fn ", "pub fn ", "pub(crate) fn ", "pub(super) fn "]
            .iter()
            .any(|p| trimmed.starts_with(p));
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with(&close) && l.len() - l.trim_start().len() == indent)
        else {
            continue;
        };
        let len = end + 2;
        if len > max {
            let name: String = trimmed
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((name, len));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn rel(p: &Path) -> String {
        p.strip_prefix(src()).unwrap().display().to_string()
    }

    #[test]
    fn imports_point_down_only() {
        let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
        let mut wrong = Vec::new();
        for file in sources(&src()) {
            let Some(module) = module_of(&src(), &file) else {
                continue;
            };
            let Some(may) = allowed.get(module.as_str()) else {
                wrong.push(format!(
                    "{}: module {module} is not on the layer map",
                    rel(&file)
                ));
                continue;
            };
            for used in imports(shipped(&read(&file))) {
                if used != module && !may.contains(&used.as_str()) {
                    wrong.push(format!("{}: {module} imports {used}", rel(&file)));
                }
            }
        }
        wrong.dedup();
        assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
    }

    #[test]
    fn unsafe_lives_in_sys_only() {
        for file in sources(&src()) {
            if rel(&file) == "sys.rs" || rel(&file) == "shape.rs" {
                continue;
            }
            let text = read(&file);
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                !code.contains("unsafe {")
                    && !code.contains("unsafe fn")
                    && !code.contains("unsafe impl"),
                "{}: unsafe outside sys.rs",
                rel(&file)
            );
        }
    }

    #[test]
    fn files_and_functions_stay_readable() {
        let mut too_long = Vec::new();
        let mut long_fns = Vec::new();
        for file in sources(&src()) {
            let name = rel(&file);
            // Test modules kept in files of their own (`x_tests.rs`, `tests.rs`).
            if name.ends_with("tests.rs") {
                continue;
            }
            let text = read(&file);
            let lines = shipped(&text).lines().count();
            if lines > MAX_FILE_LINES {
                too_long.push(name.clone());
            }
            for (f, _) in long_functions(&text, MAX_FN_LINES) {
                long_fns.push(format!("{name}:{f}"));
            }
        }
        let listed: Vec<String> = OVERSIZED_FILES.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            too_long, listed,
            "non-test files over {MAX_FILE_LINES} lines (left) against OVERSIZED_FILES (right)"
        );
        let listed: Vec<String> = OVERSIZED_FNS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            long_fns, listed,
            "functions over {MAX_FN_LINES} lines (left) against OVERSIZED_FNS (right)"
        );
    }

    #[test]
    fn the_scanner_sees_what_it_must() {
        let text = "use crate::{format::lsn::Lsn, storage};\nlet x = crate::warn!(\"a\"); // crate::cli\n$crate::log::emit();\n";
        assert_eq!(imports(text), ["format", "storage", "log"]);
        let f = format!("fn a() {{\n{}}}\n", "    x();\n".repeat(90));
        assert_eq!(long_functions(&f, 80), [("a".to_string(), 92)]);
        assert_eq!(shipped("a\n#[cfg(test)]\nmod tests {}"), "a\n");
        let seam = "#[cfg(test)]\nx: u8,\nb\n#[cfg(test)]\n#[path = \"t.rs\"]\nmod t;";
        assert_eq!(shipped(seam), "#[cfg(test)]\nx: u8,\nb\n");
    }
}
