//! Applies the settings table ([`super::table`]) to what is set: refusals stop the command
//! before it touches storage, warnings are collected for the log, keys of a config file that
//! no row knows are reported as WAL-G reports them (`<KEY> is unknown`). Also renders the
//! table as the README's markdown.

use super::table::{self, Kind, Row, Status, cmd};
use super::{ConfigError, Sources, bad};

/// The command being run, as the table sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmd {
    /// `wal-push`.
    WalPush,
    /// `wal-fetch`.
    WalFetch,
    /// `wal-prefetch`.
    WalPrefetch,
    /// `backup-push`; `full` with `--full`.
    BackupPush {
        /// `-f/--full` given.
        full: bool,
    },
    /// `backup-fetch`.
    BackupFetch,
    /// `backup-list`.
    BackupList,
    /// `backup-mark`.
    BackupMark,
    /// `delete`.
    Delete,
    /// `memory-plan`.
    MemoryPlan,
    /// `wal-verify`.
    WalVerify,
    /// `wal-show`.
    WalShow,
    /// `daemon`.
    Daemon,
    /// `wal-restore`.
    WalRestore,
    /// `wal-receive`.
    WalReceive,
}

impl Cmd {
    /// Its bit in [`cmd`].
    pub fn bit(self) -> u16 {
        match self {
            Cmd::WalPush => cmd::WAL_PUSH,
            Cmd::WalFetch => cmd::WAL_FETCH,
            Cmd::WalPrefetch => cmd::WAL_PREFETCH,
            Cmd::BackupPush { full: false } => cmd::BACKUP_PUSH,
            Cmd::BackupPush { full: true } => cmd::BACKUP_PUSH_FULL,
            Cmd::BackupFetch => cmd::BACKUP_FETCH,
            Cmd::BackupList => cmd::BACKUP_LIST,
            Cmd::BackupMark => cmd::BACKUP_MARK,
            Cmd::Delete => cmd::DELETE,
            Cmd::MemoryPlan => cmd::MEMORY_PLAN,
            Cmd::WalVerify => cmd::WAL_VERIFY,
            Cmd::WalShow => cmd::WAL_SHOW,
            Cmd::Daemon => cmd::DAEMON,
            Cmd::WalRestore => cmd::WAL_RESTORE,
            Cmd::WalReceive => cmd::WAL_RECEIVE,
        }
    }
}

/// The storage back-end WAL-G would use: the first in its order whose prefix is set, with
/// the spelling found.
pub fn active_storage(src: &Sources) -> Option<(Kind, String)> {
    Kind::ORDER.iter().find_map(|k| {
        let p = k.prefix();
        src.first(&[&format!("WALG_{p}"), &format!("WALE_{p}")])
            .map(|(name, _)| (*k, name))
    })
}

/// Checks every row against what is set for `command`: the first refused setting is an
/// error; the warnings are returned, one line each.
pub fn check(src: &Sources, command: Cmd) -> Result<Vec<String>, ConfigError> {
    let active = active_storage(src);
    let mut warnings = Vec::new();
    for row in table::rows() {
        for name in row.spell.names() {
            let Some(value) = src.raw(&name) else {
                continue;
            };
            if let Some(msg) = judge(row, &name, value.as_deref(), active.as_ref(), command)? {
                warnings.push(msg);
            }
        }
    }
    for key in src.file_keys() {
        if table::find(key).is_none() {
            warnings.push(format!("{key} is unknown"));
        }
    }
    Ok(warnings)
}

/// One setting that is set (`value` is `None` for a structured value from a config file).
fn judge(
    row: &Row,
    name: &str,
    value: Option<&str>,
    active: Option<&(Kind, String)>,
    command: Cmd,
) -> Result<Option<String>, ConfigError> {
    if let Some((used, used_name)) = active
        && !row.applies_to(*used)
    {
        // WAL-G reads only the settings of the storage in use: another storage's settings
        // change nothing in either tool (OS_* on an OpenStack host, AWS_* beside file
        // storage). A second storage prefix is worth a line: it looks like a mistake.
        return Ok(row.is_prefix().then(|| {
            format!(
                "{name} is set, but {used_name} comes first in WAL-G's order of storages: \
                 it has no effect (as in WAL-G)"
            )
        }));
    }
    if row.commands & command.bit() == 0 || value.is_some_and(|v| row.inert.matches(v)) {
        return Ok(None);
    }
    match row.status {
        Status::Honoured if value.is_none() => Err(bad(
            name,
            "in the config file must be a string, number or boolean",
        )),
        Status::Honoured => Ok(None),
        Status::Refused => Err(bad(
            name,
            format!(
                "is set, but {}; stopping before anything is stored or read",
                row.note
            ),
        )),
        Status::Warned => Ok(Some(format!(
            "{name} is set, but it has no effect in wal-rus ({})",
            row.note
        ))),
    }
}

/// Counts of honoured, refused and warned rows.
pub fn counts() -> (usize, usize, usize) {
    let n = |s| table::rows().filter(|r| r.status == s).count();
    (n(Status::Honoured), n(Status::Refused), n(Status::Warned))
}

/// The table as markdown, as the README shows it.
pub fn markdown() -> String {
    let (h, r, w) = counts();
    let mut out = format!(
        "{} settings: {h} honoured, {r} refused (the command exits 1 naming the setting before \
         it touches storage), {w} warned (one warning line: no effect in wal-rus). \
         `WALG_`/`WALE_` means both spellings; `NAME`¹ is also read as `WALG_NAME` and \
         `WALE_NAME` (the bare name first), as WAL-G reads storage settings.\n\n\
         | setting | WAL-G default | wal-rus | notes |\n|---|---|---|---|\n",
        h + r + w
    );
    for section in table::TABLE {
        out.push_str(&format!("| **{}** | | | |\n", section.title));
        for row in section.rows {
            let name = match row.spell {
                table::Spell::Exact(n) => format!("`{n}`"),
                table::Spell::Prefixed(n) => format!("`WALG_`/`WALE_{n}`"),
                table::Spell::Storage(n) => format!("`{n}`¹"),
            };
            let status = match row.status {
                Status::Honoured => "honoured",
                Status::Refused => "**refused**",
                Status::Warned => "warned",
            };
            let mut note = row.note.to_string();
            if row.status != Status::Honoured && row.commands != cmd::ALL {
                note.push_str(&format!(" [{}]", commands_text(row.commands)));
            }
            let default = if row.default.is_empty() {
                "–".to_string()
            } else {
                format!("`{}`", row.default)
            };
            out.push_str(&format!(
                "| {name} | {default} | {status} | {} |\n",
                note.replace('|', "\\|")
            ));
        }
    }
    out
}

/// The commands of a row's bits, for the README.
fn commands_text(bits: u16) -> String {
    let names: &[(u16, &str)] = &[
        (cmd::WAL_PUSH, "wal-push"),
        (cmd::WAL_FETCH, "wal-fetch"),
        (cmd::WAL_PREFETCH, "wal-prefetch"),
        (cmd::PUSH, "backup-push"),
        (cmd::BACKUP_PUSH, "backup-push without --full"),
        (cmd::BACKUP_FETCH, "backup-fetch"),
        (cmd::BACKUP_LIST, "backup-list"),
        (cmd::BACKUP_MARK, "backup-mark"),
        (cmd::DELETE, "delete"),
        (cmd::MEMORY_PLAN, "memory-plan"),
        (cmd::WAL_VERIFY, "wal-verify"),
        (cmd::WAL_SHOW, "wal-show"),
        (cmd::DAEMON, "daemon"),
        (cmd::WAL_RESTORE, "wal-restore"),
        (cmd::WAL_RECEIVE, "wal-receive"),
    ];
    let mut left = bits;
    let mut out = Vec::new();
    for (b, n) in names {
        if left & b == *b {
            out.push(*n);
            left &= !b;
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(env: &[(&str, &str)]) -> Sources {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sources::from_parts(move |k| env.get(k).cloned(), HashMap::new())
    }

    #[test]
    fn every_spelling_is_in_one_row_only() {
        let mut seen = std::collections::HashSet::new();
        for row in table::rows() {
            for n in row.spell.names() {
                assert!(seen.insert(n.clone()), "{n} is in two rows");
            }
        }
    }

    #[test]
    fn refused_names_the_setting_and_warned_warns() {
        let file = ("WALG_FILE_PREFIX", "/x");
        let refused: &[((&str, &str), Cmd)] = &[
            (("WALG_ENVELOPE_PGP_KEY", "k"), Cmd::WalFetch),
            (("WALE_GPG_KEY_ID", "k"), Cmd::BackupList),
            (("WALG_CSE_KMS_REGION", "r"), Cmd::Delete),
            (("WALG_FAILOVER_STORAGES", "x"), Cmd::WalPush),
            (("WALG_FETCH_TARGET_USER_DATA", "{}"), Cmd::BackupFetch),
            (("PGSERVICE", "main"), Cmd::BackupPush { full: true }),
        ];
        for (extra, command) in refused {
            let err = check(&src(&[file, *extra]), *command).unwrap_err();
            assert_eq!(err.setting, extra.0, "{err}");
        }
        // GS comes after FILE in WAL-G's order: WAL-G uses the directory, so a warning.
        let w = check(&src(&[file, ("WALG_GS_PREFIX", "gs://b")]), Cmd::WalPush).unwrap();
        assert!(
            w.len() == 1 && w[0].contains("WALG_GS_PREFIX") && w[0].contains("WALG_FILE_PREFIX"),
            "{w:?}"
        );
        // ... and first in the order, it is used; a back-end wal-rus lacks is refused.
        assert!(check(&src(&[("WALG_GS_PREFIX", "gs://b")]), Cmd::WalPush).is_ok());
        let e = check(&src(&[("WALG_SWIFT_PREFIX", "swift://b")]), Cmd::WalPush).unwrap_err();
        assert_eq!(e.setting, "WALG_SWIFT_PREFIX");
        // The wal-rus timeouts belong to S3 and GCS alike; beside files they change nothing.
        let gcs = [("WALG_GS_PREFIX", "gs://b"), ("WALRUS_IO_TIMEOUT", "5")];
        assert_eq!(
            check(&src(&gcs), Cmd::WalPush).unwrap(),
            Vec::<String>::new()
        );
        // The S3 settings need S3 in use; beside file storage they change nothing (in
        // WAL-G neither), and so do the settings of back-ends wal-rus lacks.
        let s3 = [
            ("WALG_S3_PREFIX", "s3://b/p"),
            ("WALG_S3_REQUEST_ADDITIONAL_HEADERS", "{}"),
        ];
        assert_eq!(
            check(&src(&s3), Cmd::WalFetch).unwrap_err().setting,
            "WALG_S3_REQUEST_ADDITIONAL_HEADERS"
        );
        let quiet = [
            file,
            ("S3_SSE_C", "key"),
            ("AWS_DEFAULT_REGION", "r"),
            ("OS_AUTH_URL", "u"),
        ];
        assert!(check(&src(&quiet), Cmd::WalFetch).unwrap().is_empty());
        // Warned settings: one line naming them.
        let w = check(&src(&[file, ("WALG_STATSD_ADDRESS", "h:1")]), Cmd::WalPush).unwrap();
        assert!(
            w.len() == 1 && w[0].contains("WALG_STATSD_ADDRESS"),
            "{w:?}"
        );
    }

    #[test]
    fn commands_and_inert_values() {
        let base = ("WALG_FILE_PREFIX", "/x");
        // Deltas are taken: no refusal, no warning, whatever the command.
        let d = [
            base,
            ("WALG_DELTA_MAX_STEPS", "2"),
            ("WALG_DELTA_ORIGIN", "LATEST_FULL"),
        ];
        for command in [
            Cmd::BackupPush { full: false },
            Cmd::BackupPush { full: true },
            Cmd::WalPush,
        ] {
            assert!(check(&src(&d), command).unwrap().is_empty());
        }
        // Reverse unpack: warned by backup-fetch, where WAL-G reads it; silent when off.
        let r = [base, ("WALG_USE_REVERSE_UNPACK", "true")];
        assert_eq!(check(&src(&r), Cmd::BackupFetch).unwrap().len(), 1);
        let r0 = [base, ("WALG_USE_REVERSE_UNPACK", "false")];
        assert!(check(&src(&r0), Cmd::BackupFetch).unwrap().is_empty());
        // Warned: in the commands WAL-G uses it in.
        let n = [base, ("WALG_UPLOAD_DISK_CONCURRENCY", "4")];
        assert_eq!(
            check(&src(&n), Cmd::BackupPush { full: true })
                .unwrap()
                .len(),
            1
        );
        assert!(check(&src(&n), Cmd::WalPush).unwrap().is_empty());
        let off = [
            base,
            ("WALG_DIRECT_IO", "false"),
            ("WALG_LOG_DESTINATION", "stderr"),
        ];
        assert!(
            check(&src(&off), Cmd::BackupPush { full: false })
                .unwrap()
                .is_empty()
        );
        // A setting of a command wal-rus lacks warns everywhere.
        let stanza = [base, ("PGBACKREST_STANZA", "s")];
        assert_eq!(check(&src(&stanza), Cmd::WalFetch).unwrap().len(), 1);
    }

    #[test]
    fn markdown_lists_every_row() {
        let md = markdown();
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| `")).count(),
            table::rows().count()
        );
        let (h, r, w) = counts();
        assert!(h > 40 && r > 10 && w > 60, "{h} {r} {w}");
    }

    /// README.md shows exactly [`markdown`] between its marker comments. After changing the
    /// table, `WALRUS_UPDATE_README=1 cargo test --lib readme_settings_table` rewrites it.
    #[test]
    fn readme_settings_table() {
        const BEGIN: &str = "<!-- settings table: generated from src/config/table.rs -->\n";
        const END: &str = "<!-- end of settings table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme
            .find(BEGIN)
            .expect("README.md lacks the begin marker")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README.md lacks the end marker");
        let want = markdown();
        if readme[start..end] != want {
            if std::env::var_os("WALRUS_UPDATE_README").is_some() {
                let new = format!("{}{want}{}", &readme[..start], &readme[end..]);
                std::fs::write(path, new).unwrap();
            } else {
                panic!(
                    "README.md's settings table differs from src/config/table.rs; run \
                     WALRUS_UPDATE_README=1 cargo test --lib readme_settings_table"
                );
            }
        }
    }
}
