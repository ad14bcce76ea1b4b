//! What a directory tree holds, as the tests compare it: file storage and s3s-fs keep every
//! object as a plain file, and a failed fetch or restore must leave nothing behind, so many
//! assertions are about the list of files below a directory.

use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

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

/// Waits until a backup not among `before` (names under `root`, file storage) has a file in
/// its `tar_partitions` whose name holds `partition` (a temporary name: the copy is under way
/// with the stop still to come), or fails when `push` ends first or after 120 s.
pub fn wait_until_copying(root: &Path, before: &[String], partition: &str, push: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let writing = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !before.iter().any(|b| *b == e.file_name().to_string_lossy()))
            .filter_map(|e| fs::read_dir(e.path().join("tar_partitions")).ok())
            .flatten()
            .flatten()
            .any(|f| f.file_name().to_string_lossy().contains(partition));
        if writing {
            return;
        }
        if let Some(status) = push.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = push.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("backup-push ended ({status}) before it wrote any data:\n{stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "backup-push wrote no {partition} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
