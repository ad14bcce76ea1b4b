//! What a directory tree holds, as the tests compare it: file storage and s3s-fs keep every
//! object as a plain file, and a failed fetch or restore must leave nothing behind, so many
//! assertions are about the list of files below a directory.

use std::fs;
use std::path::Path;

/// Every non-directory entry below `dir`, as sorted paths relative to it joined with `/`
/// (object keys, for storage); empty when `dir` does not exist.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), &key, out);
            } else {
                out.push(key);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}
