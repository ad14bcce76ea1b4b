//! Storage written by someone else, and disks that fill up. Whoever can write to the
//! bucket controls every byte wal-rus reads: a tar partition with a link out of the
//! destination must be refused at once (not retried) with nothing written outside it, and
//! a sentinel of 200 MB must be a clear error within the memory plan, not an OOM kill. A
//! full disk under pg_wal, under file storage or under a restore fails the command clearly
//! and leaves nothing half-written.

use crate::common;

use common::{PgCluster, Tool, output_text, require_or_fail, run_walrus};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wal_rus::format::tar::{END_OF_ARCHIVE, Header, Kind, encode, padding};

const LONG: Duration = Duration::from_secs(600);

fn with_pg(files: &Path, port: u16) -> Vec<(String, String)> {
    [
        ("WALG_FILE_PREFIX", files.display().to_string()),
        ("PGHOST", "127.0.0.1".into()),
        ("PGPORT", port.to_string()),
        ("PGUSER", "postgres".into()),
        ("PGDATABASE", "postgres".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A plain tar of `(name, kind, data-or-link-target)` entries.
fn tar(entries: &[(&str, Kind, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data) in entries {
        let (link, data) = if *kind == Kind::Symlink {
            (String::from_utf8(data.to_vec()).unwrap(), &b""[..])
        } else {
            (String::new(), *data)
        };
        let h = Header {
            name: name.to_string(),
            kind: *kind,
            mode: 0o600,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            size: data.len() as u64,
            link,
        };
        encode(&h, &mut out);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
    }
    out.extend_from_slice(&END_OF_ARCHIVE);
    out
}

/// A cluster with one backup in file storage; returns the cluster, the storage and the
/// backup's name.
fn backed_up(test: &str) -> Option<(PgCluster, tempfile::TempDir, String)> {
    require_or_fail(Tool::Postgres, test)?;
    let files = common::postgres_owned_tempdir("walrus-hostile-");
    let port = common::free_port();
    let mut pg =
        PgCluster::init_with_env(port, "wal_level = replica\n", &with_pg(files.path(), port));
    pg.start();
    pg.pgbench_init(1);
    let out = pg.run_walrus_as_postgres(&["backup-push", pg.data_dir().to_str().unwrap()], LONG);
    assert!(out.status.success(), "{}", output_text(&out));
    let name = fs::read_dir(files.path().join("basebackups_005"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find_map(|n| {
            n.strip_suffix("_backup_stop_sentinel.json")
                .map(str::to_string)
        })
        .unwrap();
    Some((pg, files, name))
}

#[test]
fn tar_links_cannot_lead_a_restore_outside() {
    let Some((pg, files, name)) = backed_up("tar_links_cannot_lead_a_restore_outside") else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    common::chown_postgres(outside.path());
    let parts = files
        .path()
        .join("basebackups_005")
        .join(&name)
        .join("tar_partitions");
    let o = outside.path().to_str().unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "an absolute link, then a file through it",
            tar(&[
                ("/escape_link", Kind::Symlink, o.as_bytes()),
                ("/escape_link/pwned", Kind::File, b"x"),
            ]),
        ),
        (
            "a relative link climbing out, then a file through it",
            tar(&[
                (
                    "/base/up",
                    Kind::Symlink,
                    b"../../../../../../../../../../tmp",
                ),
                ("/base/up/pwned", Kind::File, b"x"),
            ]),
        ),
        (
            "a link, then a file of the link's name",
            tar(&[
                ("/ln", Kind::Symlink, b"PG_VERSION"),
                ("/ln", Kind::File, b"overwrite"),
            ]),
        ),
        (
            "a tablespace link from the archive",
            tar(&[
                ("/pg_tblspc/99999", Kind::Symlink, o.as_bytes()),
                ("/pg_tblspc/99999/pwned", Kind::File, b"x"),
            ]),
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        // Named to sort first, so it is unpacked while the real partitions are too.
        let part = parts.join("part_000.tar");
        fs::write(&part, bytes).unwrap();
        let dest = files.path().join(format!("restore-{i}"));
        let start = Instant::now();
        let out = pg.run_walrus_as_postgres(&["backup-fetch", dest.to_str().unwrap(), &name], LONG);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", output_text(&out));
        let text = output_text(&out);
        assert!(
            text.contains("symbolic link")
                || text.contains("outside the destination")
                || text.contains("spec"),
            "{what}: the refusal must name the reason:\n{text}"
        );
        assert!(
            !text.contains("trying"),
            "{what}: a refusal must not be retried:\n{text}"
        );
        assert!(secs < 10.0, "{what}: took {secs:.1} s");
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
        assert!(
            !Path::new("/tmp/pwned").exists(),
            "{what}: wrote /tmp/pwned"
        );
        assert!(
            !dest.join("global/pg_control").exists(),
            "{what}: left a startable directory"
        );
        fs::remove_file(&part).unwrap();
    }
}

/// A 200 MB sentinel (valid JSON: a huge `UserData`) fails clearly, and memory stays
/// within backup-fetch's plan.
#[test]
fn huge_documents_are_refused_within_the_plan() {
    let Some((pg, files, name)) = backed_up("huge_documents_are_refused_within_the_plan") else {
        return;
    };
    let sentinel = files
        .path()
        .join("basebackups_005")
        .join(format!("{name}_backup_stop_sentinel.json"));
    let original = fs::read_to_string(&sentinel).unwrap();
    {
        let mut f = fs::File::create(&sentinel).unwrap();
        let body = original.trim_end().strip_suffix('}').unwrap();
        write!(f, "{body},\"UserData\":\"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..200 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"}").unwrap();
    }
    common::chown_postgres(&sentinel);
    let plan =
        common::Plan::from_output(&pg.run_walrus_as_postgres(&["memory-plan", "--json"], LONG));
    let fetch_plan = plan.rss("backup-fetch");
    let dest = files.path().join("restore-huge");
    let mut cmd = pg.walrus_command(&["backup-fetch", dest.to_str().unwrap(), &name]);
    let (out, kib) = common::peak_rss_kib(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\nsentinel is {} bytes",
        output_text(&out),
        fs::metadata(&sentinel).unwrap().len()
    );
    assert!(
        output_text(&out).contains("larger than"),
        "{}",
        output_text(&out)
    );
    assert!(
        common::within_plan(kib, fetch_plan),
        "backup-fetch of a 200 MB sentinel peaked at {kib} KiB, plan {} KiB",
        fetch_plan / 1024
    );
    fs::write(&sentinel, original).unwrap();
    // `backup-list --detail` reads metadata.json: a 200 MB one.
    let metadata = files
        .path()
        .join("basebackups_005")
        .join(&name)
        .join("metadata.json");
    let original_meta = fs::read_to_string(&metadata).unwrap();
    {
        let mut f = fs::File::create(&metadata).unwrap();
        let body = original_meta.trim_end().strip_suffix('}').unwrap();
        write!(f, "{body},\"user_data\":\"").unwrap();
        let chunk = vec![b'b'; 1 << 20];
        for _ in 0..200 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"}").unwrap();
    }
    common::chown_postgres(&metadata);
    let mut cmd = pg.walrus_command(&["backup-list", "--detail", "--json"]);
    let (out, list_kib) = common::peak_rss_kib(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("larger than"),
        "{}",
        output_text(&out)
    );
    assert!(list_kib < 16 * 1024, "backup-list peaked at {list_kib} KiB");
    common::loud(&format!(
        "200 MB sentinel: backup-fetch exit 1 at {kib} KiB peak RSS (plan {} KiB); 200 MB metadata.json: backup-list --detail exit 1 at {list_kib} KiB",
        fetch_plan / 1024
    ));
    fs::write(&metadata, original_meta).unwrap();
    let out = pg.run_walrus_as_postgres(&["backup-fetch", dest.to_str().unwrap(), &name], LONG);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Mounts a tmpfs of `size` at `dir`; `false` when that is not possible here.
fn small_disk(dir: &Path, size: &str) -> bool {
    fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0777"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            !common::tools_required(),
            "could not mount a tmpfs (CI runs as root)"
        );
        common::skip("full-disk cases", "could not mount a tmpfs (not root?)");
    }
    mounted
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn full_disks_fail_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk");
    if !small_disk(&disk, "6m") {
        return;
    }
    let _unmount = Unmount(&disk);
    let wal = scratch.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let name = common::wal_segment_name(1, 3);
    // Incompressible: it cannot fit the 6 MiB disk in any form.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut data: Vec<u8> = (0..16u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    common::stamp_wal_pages(&mut data, 1, 3);
    fs::write(wal.join(&name), &data).unwrap();
    // wal-push to file storage on a full disk.
    let full_store = vec![(
        "WALG_FILE_PREFIX".to_string(),
        disk.join("store").display().to_string(),
    )];
    let out = run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &full_store);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("No space left"),
        "{}",
        output_text(&out)
    );
    let left: Vec<_> = walk(&disk.join("store"));
    assert!(left.is_empty(), "a failed wal-push left {left:?}");
    // wal-fetch into a full pg_wal.
    let store = scratch.path().join("store");
    let good_store = vec![("WALG_FILE_PREFIX".to_string(), store.display().to_string())];
    let out = run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &good_store);
    assert!(out.status.success(), "{}", output_text(&out));
    let dest = disk.join(&name);
    let env: Vec<(String, String)> = good_store
        .iter()
        .cloned()
        .chain([("WALG_DOWNLOAD_CONCURRENCY".to_string(), "1".to_string())])
        .collect();
    let out = run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("No space left"),
        "{}",
        output_text(&out)
    );
    let left: Vec<_> = walk(&disk);
    assert!(
        left.is_empty(),
        "a failed wal-fetch left {left:?} in pg_wal"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
