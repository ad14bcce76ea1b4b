//! Settings through the binary (issue 10, "no WAL-G setting ever silently ignored"): each
//! class of refused setting, from the environment and from a config file, makes the command
//! exit 1 naming it with nothing stored; a warned setting costs one warning line and the
//! command works; the same settings in JSON, YAML, TOML, properties and dotenv files are read
//! alike; `--config` after the command; the default `~/.walg.<ext>` lookup.
//!
//! Needs no tool: file storage in temp dirs, and S3 settings against a closed port (a
//! refusal must come before any connection).

use crate::common;

use common::{output_text, run_walrus, run_with_timeout};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const SEG: usize = 16 << 20;

fn seg_name(n: u64) -> String {
    common::wal_segment_name(1, n)
}

/// A segment with valid page headers.
fn segment(n: u64) -> Vec<u8> {
    let mut out = vec![0u8; SEG];
    for (i, b) in out.iter_mut().enumerate().step_by(97) {
        *b = (i % 251) as u8;
    }
    common::stamp_wal_pages(&mut out, 1, n);
    out
}

/// A cluster-like directory with one segment ready in `pg_wal`, and an empty storage dir.
struct Site {
    dir: tempfile::TempDir,
    store: PathBuf,
    wal: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        fs::create_dir(&store).unwrap();
        let wal = dir.path().join("pg_wal");
        fs::create_dir_all(wal.join("archive_status")).unwrap();
        fs::write(wal.join(seg_name(3)), segment(3)).unwrap();
        fs::write(
            wal.join(format!("archive_status/{}.ready", seg_name(3))),
            "",
        )
        .unwrap();
        Site { dir, store, wal }
    }

    fn segment_path(&self) -> String {
        self.wal.join(seg_name(3)).display().to_string()
    }

    fn store_str(&self) -> String {
        self.store.display().to_string()
    }

    /// Every file under the storage dir.
    fn stored(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(p).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store, &mut out);
        out
    }

    fn config(&self, name: &str, body: &str) -> String {
        let p = self.dir.path().join(name);
        fs::write(&p, body).unwrap();
        p.display().to_string()
    }
}

fn warnings(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("WARNING"))
        .map(str::to_string)
        .collect()
}

/// Exit 1, the setting named on stderr, and nothing stored.
fn assert_refused(out: &Output, site: &Site, setting: &str, what: &str) {
    let text = output_text(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {text}");
    assert!(
        text.contains(setting),
        "{what}: {setting} not named: {text}"
    );
    assert!(
        site.stored().is_empty(),
        "{what}: stored {:?}",
        site.stored()
    );
}

/// S3 settings pointing at a port nothing listens on: a refusal must come first.
fn dead_s3() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WALG_S3_PREFIX", "s3://bucket/pg"),
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("WALG_S3_MAX_RETRIES", "0"),
    ]
}

#[test]
fn refused_classes_from_the_environment() {
    let file_cases: &[(&str, &str, &str)] = &[
        ("WALG_ENVELOPE_PGP_KEY_PATH", "/etc/key.asc", "wal-push"),
        ("WALG_CSE_KMS_ID", "arn:aws:kms:key", "wal-push"),
        ("YC_CSE_KMS_KEY_ID", "key", "wal-push"),
        ("WALE_GPG_KEY_ID", "ABCD", "wal-push"),
        ("WALG_FAILOVER_STORAGES", "x", "wal-push"),
        ("WALG_TARGET_STORAGE", "spare", "wal-push"),
        ("WALG_CSE_KMS_REGION", "eu-west-1", "backup-push"),
        ("WALG_FETCH_TARGET_USER_DATA", "{\"k\": 1}", "backup-fetch"),
        ("PGSERVICE", "main", "backup-push"),
    ];
    for &(setting, value, command) in file_cases {
        let site = Site::new();
        let dest = site.dir.path().join("restore");
        let args: Vec<String> = match command {
            "wal-push" => vec!["wal-push".into(), site.segment_path()],
            "backup-push" => vec!["backup-push".into(), site.dir.path().display().to_string()],
            _ => vec![
                "backup-fetch".into(),
                dest.display().to_string(),
                "LATEST".into(),
            ],
        };
        let out = run_walrus(
            &args,
            &[
                ("WALG_FILE_PREFIX", site.store_str().as_str()),
                (setting, value),
            ],
        );
        assert_refused(&out, &site, setting, &format!("{command} with {setting}"));
        assert!(!dest.exists(), "backup-fetch made {}", dest.display());
        assert!(
            site.wal
                .join(format!("archive_status/{}.ready", seg_name(3)))
                .exists()
        );
    }
    // S3 refusals, before any connection (the endpoint is closed, retries 0).
    for (setting, value) in [
        ("WALG_S3_SSE_C", "0123456789abcdef0123456789abcdef"),
        ("S3_REQUEST_ADDITIONAL_HEADERS", "{x-amz-acl: public-read}"),
        ("S3_USE_YC_SESSION_TOKEN", "true"),
    ] {
        let site = Site::new();
        let mut env = dead_s3();
        env.push((setting, value));
        let out = run_walrus(["wal-push", &site.segment_path()], &env);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{setting}: {text}");
        assert!(text.contains(setting), "{setting}: {text}");
        assert!(
            !text.contains("127.0.0.1"),
            "{setting} reached storage: {text}"
        );
    }
    // Other storage back-ends.
    for prefix in [
        "WALG_OSS_PREFIX",
        "WALE_OSS_PREFIX",
        "WALG_SWIFT_PREFIX",
        "WALG_SSH_PREFIX",
    ] {
        let site = Site::new();
        let out = run_walrus(["wal-push", &site.segment_path()], &[(prefix, "x://b/p")]);
        assert_refused(&out, &site, prefix, prefix);
    }
}

#[test]
fn refused_classes_from_config_files() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "c.yaml",
            "WALG_FILE_PREFIX: {store}\nwalg_cse_kms_id: arn:aws:kms:key\n",
            "WALG_CSE_KMS_ID",
            "wal-push",
        ),
        (
            "c.toml",
            "WALG_FILE_PREFIX = \"{store}\"\n[WALG_FAILOVER_STORAGES.spare]\nWALG_FILE_PREFIX = \"/tmp/x\"\n",
            "WALG_FAILOVER_STORAGES",
            "wal-push",
        ),
        (
            "c.json",
            "{\"WALG_FILE_PREFIX\": \"{store}\", \"WALG_ENVELOPE_PGP_KEY\": \"-----BEGIN\"}",
            "WALG_ENVELOPE_PGP_KEY",
            "wal-push",
        ),
        (
            "c.env",
            "WALG_SWIFT_PREFIX=swift://b/p\n",
            "WALG_SWIFT_PREFIX",
            "wal-push",
        ),
        (
            "c.properties",
            "WALG_FILE_PREFIX={store}\nWALG_TARGET_STORAGE=spare\n",
            "WALG_TARGET_STORAGE",
            "backup-push",
        ),
        (
            "c.yml",
            "WALG_S3_PREFIX: s3://b/p\nAWS_ENDPOINT: http://127.0.0.1:9\nAWS_ACCESS_KEY_ID: k\nAWS_SECRET_ACCESS_KEY: s\nS3_USE_YC_SESSION_TOKEN: \"true\"\n",
            "S3_USE_YC_SESSION_TOKEN",
            "wal-push",
        ),
    ];
    for &(name, body, setting, command) in cases {
        let site = Site::new();
        let cfg = site.config(name, &body.replace("{store}", &site.store_str()));
        let target = match command {
            "wal-push" => site.segment_path(),
            _ => site.dir.path().display().to_string(),
        };
        let out = run_walrus(["--config", &cfg, command, &target], &[("X", "Y")]);
        assert_refused(&out, &site, setting, name);
    }
}

fn pgp_data(name: &str) -> String {
    format!("{}/tests/data/pgp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// WALG_PGP_KEY is honoured, from a JSON config file as from the environment: the stored
/// segment is an OpenPGP message that only the secret key turns back into the segment; a
/// public key alone, another key, a locked key without its passphrase or no key at all make
/// wal-fetch exit 1 naming the setting to fix, with nothing written.
#[test]
fn pgp_key_is_honoured() {
    let site = Site::new();
    let public = fs::read_to_string(pgp_data("rsa.pub.asc")).unwrap();
    let json_key = public.replace('\n', "\\n");
    let cfg = site.config(
        "pgp.json",
        &format!(
            "{{\"WALG_FILE_PREFIX\": \"{}\", \"WALG_PGP_KEY\": \"{json_key}\"}}",
            site.store_str()
        ),
    );
    let out = run_walrus(
        ["--config", &cfg, "wal-push", &site.segment_path()],
        &[("X", "Y")],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(warnings(&out).is_empty(), "{:?}", warnings(&out));
    let object = site.store.join(format!("wal_005/{}.lz4", seg_name(3)));
    assert_eq!(site.stored(), vec![object.clone()]);
    let stored = fs::read(&object).unwrap();
    // A public-key encrypted session key packet first (new or old packet format), not
    // lz4's magic: the segment was compressed, then encrypted (the name keeps `.lz4`).
    assert!(
        matches!(stored[0], 0xC1 | 0x84 | 0x85),
        "{:02x?}",
        &stored[..8]
    );
    // The segment is mostly zeros: encrypted without compressing it would be over 16 MiB.
    assert!(stored.len() < SEG / 4, "{} bytes stored", stored.len());
    let plain = segment(3);
    let fetch = |name: &str, env: &[(&str, &str)]| {
        let dest = site.dir.path().join(name);
        let mut all = vec![("WALG_FILE_PREFIX", site.store.to_str().unwrap())];
        all.extend_from_slice(env);
        let out = run_walrus(["wal-fetch", &seg_name(3), dest.to_str().unwrap()], &all);
        (out, dest)
    };
    let secret = pgp_data("rsa.asc");
    let (out, dest) = fetch("ok", &[("WALG_PGP_KEY_PATH", &secret)]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(fs::read(&dest).unwrap() == plain, "fetched bytes differ");
    let one_line = public.replace('\n', "\\n");
    let other = pgp_data("other.asc");
    for (what, env, named) in [
        (
            "public key only",
            vec![("WALG_PGP_KEY", one_line.as_str())],
            "WALG_PGP_KEY",
        ),
        (
            "another key",
            vec![("WALG_PGP_KEY_PATH", other.as_str())],
            "WALG_PGP_KEY_PATH",
        ),
        ("no key", vec![], "WALG_PGP_KEY"),
    ] {
        let (out, dest) = fetch(what, &env);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains(named), "{what}: {named} not named: {text}");
        assert!(!dest.exists(), "{what}: wrote {}", dest.display());
    }
    // A passphrase-protected key, its passphrase from a YAML config file.
    let site = Site::new();
    let out = run_walrus(
        ["wal-push", &site.segment_path()],
        &[
            ("WALG_FILE_PREFIX", site.store_str().as_str()),
            ("WALG_PGP_KEY_PATH", &pgp_data("x25519.pub.asc")),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let locked = pgp_data("x25519-passphrase.asc");
    let with_passphrase = site.config(
        "pp.yaml",
        &format!(
            "WALG_FILE_PREFIX: {}\nWALG_PGP_KEY_PATH: {locked}\nWALG_PGP_KEY_PASSPHRASE: wal-rus test passphrase\n",
            site.store_str()
        ),
    );
    let dest = site.dir.path().join("pp");
    let out = run_walrus(
        [
            "--config",
            &with_passphrase,
            "wal-fetch",
            &seg_name(3),
            dest.to_str().unwrap(),
        ],
        &[("X", "Y")],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(fs::read(&dest).unwrap() == plain, "fetched bytes differ");
    let dest = site.dir.path().join("no-pp");
    let out = run_walrus(
        ["wal-fetch", &seg_name(3), dest.to_str().unwrap()],
        &[
            ("WALG_FILE_PREFIX", site.store_str().as_str()),
            ("WALG_PGP_KEY_PATH", locked.as_str()),
        ],
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("WALG_PGP_KEY_PASSPHRASE"), "{text}");
    assert!(!dest.exists());
}

#[test]
fn warned_settings_warn_once_and_work() {
    let site = Site::new();
    let out = run_walrus(
        ["wal-push", &site.segment_path()],
        &[
            ("WALG_FILE_PREFIX", site.store_str().as_str()),
            ("WALG_STATSD_ADDRESS", "127.0.0.1:8125"),
            // Not read by WAL-G's wal-push either: no warning here.
            ("WALG_NETWORK_RATE_LIMIT", "1000000"),
            // Inert: WAL-G's default behaviour.
            ("WALG_UPLOAD_WAL_METADATA", "NOMETADATA"),
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let w = warnings(&out);
    assert!(
        w.len() == 1 && w[0].contains("WALG_STATSD_ADDRESS") && w[0].contains("no effect"),
        "{w:?}"
    );
    assert_eq!(site.stored().len(), 1, "{:?}", site.stored());
    // From a config file, with an unknown key.
    let site = Site::new();
    let cfg = site.config(
        "w.yaml",
        &format!(
            "WALG_FILE_PREFIX: {}\nWALG_LOG_DESTINATION: /var/log/walg.log\nSOMETHING_ELSE: 1\n",
            site.store_str()
        ),
    );
    let out = run_walrus(
        ["wal-push", &site.segment_path(), "--config", &cfg],
        &[("X", "Y")],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let w = warnings(&out);
    assert!(
        w.len() == 2
            && w[0].contains("WALG_LOG_DESTINATION")
            && w[1].contains("SOMETHING_ELSE is unknown"),
        "{w:?}"
    );
    assert_eq!(site.stored().len(), 1);
    // WALG_LOG_LEVEL=ERROR hides warnings, as in WAL-G.
    let site = Site::new();
    let out = run_walrus(
        ["wal-push", &site.segment_path()],
        &[
            ("WALG_FILE_PREFIX", site.store_str().as_str()),
            ("WALG_STATSD_ADDRESS", "127.0.0.1:8125"),
            ("WALG_LOG_LEVEL", "ERROR"),
        ],
    );
    assert!(
        out.status.success() && warnings(&out).is_empty(),
        "{}",
        output_text(&out)
    );
}

/// The same settings in every format: the same memory plan, and wal-push stores the same.
#[test]
fn config_formats_read_alike() {
    let site = Site::new();
    let store = site.store_str();
    let files = [
        (
            "a.json",
            format!(
                "{{\"WALG_FILE_PREFIX\": \"{store}\", \"walg_compression_method\": \"zstd\", \"WALG_UPLOAD_CONCURRENCY\": 3, \"WALG_PREVENT_WAL_OVERWRITE\": true}}"
            ),
        ),
        (
            "a.yaml",
            format!(
                "WALG_FILE_PREFIX: {store}\nwalg_compression_method: zstd\nWALG_UPLOAD_CONCURRENCY: 3\nWALG_PREVENT_WAL_OVERWRITE: yes\n"
            ),
        ),
        (
            "a.toml",
            format!(
                "WALG_FILE_PREFIX = \"{store}\"\nwalg_compression_method = \"zstd\"\nWALG_UPLOAD_CONCURRENCY = 3\nWALG_PREVENT_WAL_OVERWRITE = true\n"
            ),
        ),
        (
            "a.properties",
            format!(
                "WALG_FILE_PREFIX={store}\nwalg_compression_method=zstd\nWALG_UPLOAD_CONCURRENCY=3\nWALG_PREVENT_WAL_OVERWRITE=true\n"
            ),
        ),
        (
            "a.env",
            format!(
                "export WALG_FILE_PREFIX=\"{store}\"\nwalg_compression_method=zstd\nWALG_UPLOAD_CONCURRENCY=3\nWALG_PREVENT_WAL_OVERWRITE=true\n"
            ),
        ),
    ];
    let mut plans = Vec::new();
    for (name, body) in &files {
        let cfg = site.config(name, body);
        let plan = run_walrus(["memory-plan", "--json", "--config", &cfg], &[("X", "Y")]);
        assert!(plan.status.success(), "{name}: {}", output_text(&plan));
        assert!(warnings(&plan).is_empty(), "{name}: {:?}", warnings(&plan));
        plans.push(String::from_utf8_lossy(&plan.stdout).to_string());
        let out = run_walrus(
            ["wal-push", &site.segment_path(), "--config", &cfg],
            &[("X", "Y")],
        );
        assert!(out.status.success(), "{name}: {}", output_text(&out));
        assert_eq!(
            site.stored(),
            vec![site.store.join(format!("wal_005/{}.zst", seg_name(3)))],
            "{name}"
        );
    }
    assert!(plans.windows(2).all(|w| w[0] == w[1]), "{plans:#?}");
    assert!(plans[0].contains("zstd"), "{}", plans[0]);
    // A file that exists but cannot be parsed, or whose format WAL-G reads and wal-rus not.
    for (name, body) in [
        ("bad.yaml", "WALG_FILE_PREFIX: [\n"),
        ("c.hcl", "a = 1\n"),
        ("c.conf", "{}"),
    ] {
        let cfg = site.config(name, body);
        let out = run_walrus(
            ["wal-push", &site.segment_path(), "--config", &cfg],
            &[("X", "Y")],
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(name),
            "{name}: {}",
            output_text(&out)
        );
    }
}

/// Without `--config`: `.walg.<ext>` in the home directory, the first in viper's order
/// (json, toml, yaml, ...). The home comes from the password database, so this runs as a
/// uid without an entry, whose home is `$HOME` (as for Go's `user.Current`); root only.
#[test]
fn default_config_file_lookup() {
    if !common::is_root() {
        common::skip(
            "default_config_file_lookup",
            "needs root to run as a uid without a home",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let site = Site::new();
    let home = site.dir.path().join("home");
    let other = site.dir.path().join("other");
    fs::create_dir(&home).unwrap();
    fs::create_dir(&other).unwrap();
    for p in [site.dir.path(), &home, &other, &site.store, &site.wal] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(
        site.wal.join("archive_status"),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    fs::set_permissions(
        site.wal.join(seg_name(3)),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(common::walrus_bin());
        common::hermetic(&mut cmd)
            .args(args)
            .env("HOME", &home)
            .uid(4_242_424)
            .gid(4_242_424);
        run_with_timeout(&mut cmd, Duration::from_secs(120))
    };
    // yaml is found when it is the only one ...
    fs::write(
        home.join(".walg.yaml"),
        format!("WALG_FILE_PREFIX: {}\n", other.display()),
    )
    .unwrap();
    fs::write(home.join(".walg"), "{}").unwrap();
    let plan = run(&["memory-plan", "--json"]);
    assert!(plan.status.success(), "{}", output_text(&plan));
    // ... and toml comes before yaml.
    fs::write(
        home.join(".walg.toml"),
        format!(
            "WALG_FILE_PREFIX = \"{}\"\nWALG_COMPRESSION_METHOD = \"brotli\"\n",
            site.store_str()
        ),
    )
    .unwrap();
    let out = run(&["wal-push", &site.segment_path()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        site.stored(),
        vec![site.store.join(format!("wal_005/{}.br", seg_name(3)))]
    );
    assert!(fs::read_dir(&other).unwrap().next().is_none());
    // A default file that cannot be parsed is an error naming it.
    fs::write(home.join(".walg.json"), "{not json").unwrap();
    let out = run(&["memory-plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(".walg.json"),
        "{}",
        output_text(&out)
    );
}
