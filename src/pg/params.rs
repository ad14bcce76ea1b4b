//! Connection settings from the `PG*` environment variables, with libpq's defaults.
//!
//! WAL-G (through pgx) and every PostgreSQL tool read `PGHOST`, `PGUSER`, ... the same way,
//! so operators configure wal-rus's database connection exactly as they configure psql.
//! Settings are looked up through a function rather than `std::env` so tests can feed
//! them without touching the process environment.

use super::error::PgError;
use super::pgpass;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How hard to insist on TLS (`PGSSLMODE`), with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plain first; TLS only if the server refuses the plain login.
    Allow,
    /// TLS if the server offers it, plain otherwise (libpq's default). No certificate checks.
    Prefer,
    /// TLS or fail; the certificate is not checked (encryption without authentication).
    Require,
    /// TLS or fail; the certificate must chain to a trusted root (the host name is not checked).
    VerifyCa,
    /// TLS or fail; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is unacceptable.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = PgError;

    fn from_str(s: &str) -> Result<SslMode, PgError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(PgError::config(
                    "PGSSLMODE",
                    format!(
                        "unknown value {other:?} (expected disable, allow, prefer, require, verify-ca or verify-full)"
                    ),
                ));
            }
        })
    }
}

/// Default connect timeout: libpq would wait forever, but a backup must never hang on a
/// dead host.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on a single write after login; writes are small, so a long block means
/// the server is gone.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Connection settings as libpq/pgx read them.
///
/// `Debug` shows whether a password is set, never the password.
#[derive(Clone)]
pub struct ConnParams {
    /// Host name, IP address, or (starting with `/`) the directory of the Unix socket.
    pub host: String,
    /// TCP port; for Unix sockets it names the socket file `.s.PGSQL.<port>`.
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, if any (from `PGPASSWORD` or the password file).
    pub password: Option<String>,
    /// Database to connect to.
    pub database: String,
    /// TLS policy; ignored for Unix sockets, as in libpq.
    pub sslmode: SslMode,
    /// CA certificates (PEM file) for `verify-ca`/`verify-full`, or `system` for the system
    /// store; `None` means `~/.postgresql/root.crt` if it exists, else the system store.
    pub sslrootcert: Option<PathBuf>,
    /// Reported to the server (visible in `pg_stat_activity`).
    pub application_name: String,
    /// Bound on opening the socket plus TLS and login. Never zero.
    pub connect_timeout: Duration,
    /// Bound on waiting for a server reply after login; zero means wait forever, because
    /// `pg_backup_stop` may legitimately wait a long time for WAL archiving.
    pub read_timeout: Duration,
    /// Bound on a single write after login; zero means none.
    pub write_timeout: Duration,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

impl ConnParams {
    /// From PGHOST, PGPORT, PGUSER, PGPASSWORD, PGPASSFILE, PGDATABASE, PGSSLMODE,
    /// PGSSLROOTCERT, PGAPPNAME and PGCONNECT_TIMEOUT as returned by `get` (empty counts as
    /// unset), with libpq's defaults: host `/var/run/postgresql` if that directory exists,
    /// else `localhost`; port 5432; user from `$USER`, else the OS account; database = user;
    /// sslmode `prefer`; application name `wal-rus`; connect timeout 10 s.
    ///
    /// When PGPASSWORD is unset the password comes from PGPASSFILE (default `~/.pgpass`).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<ConnParams, PgError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());

        let host = match get("PGHOST") {
            Some(h) if h.contains(',') => {
                return Err(PgError::config(
                    "PGHOST",
                    "lists of hosts are not supported; give one host",
                ));
            }
            Some(h) => h,
            None if Path::new(pgpass::DEFAULT_SOCKET_DIR).is_dir() => {
                pgpass::DEFAULT_SOCKET_DIR.to_string()
            }
            None => "localhost".to_string(),
        };
        let port = match get("PGPORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PgError::config("PGPORT", format!("{p:?} is not a port number")))?,
            None => 5432,
        };
        let os_user = || os_account().map(|(name, _)| name);
        let user = get("PGUSER")
            .or_else(|| get("USER"))
            .or_else(os_user)
            .ok_or_else(|| {
                PgError::config(
                    "PGUSER",
                    "not set, and the current OS user name cannot be determined",
                )
            })?;
        let database = get("PGDATABASE").unwrap_or_else(|| user.clone());
        let sslmode = match get("PGSSLMODE") {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        };
        let connect_timeout = match get("PGCONNECT_TIMEOUT") {
            Some(t) => parse_connect_timeout(&t)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let home = || {
            get("HOME")
                .or_else(|| os_account().map(|(_, home)| home))
                .map(PathBuf::from)
        };
        let sslrootcert = get("PGSSLROOTCERT").map(PathBuf::from);
        let password = match get("PGPASSWORD") {
            Some(p) => Some(p),
            None => {
                let file = match get("PGPASSFILE") {
                    Some(f) => Some(PathBuf::from(f)),
                    None => home().map(|h| h.join(".pgpass")),
                };
                match file {
                    Some(f) => pgpass::password_from_file(&f, &host, port, &database, &user)?,
                    None => None,
                }
            }
        };
        Ok(ConnParams {
            host,
            port,
            user,
            password,
            database,
            sslmode,
            sslrootcert: sslrootcert.or_else(|| {
                home()
                    .map(|h| h.join(".postgresql/root.crt"))
                    .filter(|p| p.is_file())
            }),
            application_name: get("PGAPPNAME").unwrap_or_else(|| "wal-rus".to_string()),
            connect_timeout,
            read_timeout: Duration::ZERO,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        })
    }

    /// `from_lookup` over the process environment.
    pub fn from_env() -> Result<ConnParams, PgError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Whether `host` names a Unix-socket directory rather than a network host.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// `host=... port=... user=... dbname=... sslmode=...` for log lines; no password.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} user={} dbname={} sslmode={}",
            self.host, self.port, self.user, self.database, self.sslmode
        )
    }
}

/// PGCONNECT_TIMEOUT in whole seconds. libpq treats 0 as "forever"; here it means the
/// default, since a backup must not hang. Like libpq, 1 s is raised to 2 s.
fn parse_connect_timeout(text: &str) -> Result<Duration, PgError> {
    let secs: i64 = text.trim().parse().map_err(|_| {
        PgError::config(
            "PGCONNECT_TIMEOUT",
            format!("{text:?} is not a whole number of seconds"),
        )
    })?;
    Ok(match secs {
        i64::MIN..=0 => DEFAULT_CONNECT_TIMEOUT,
        1 => Duration::from_secs(2),
        s => Duration::from_secs(s as u64),
    })
}

/// Name and home directory of the effective OS user (`getpwuid_r`).
pub fn os_account() -> Option<(String, String)> {
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes we pass; the strings
    // it points `pwd` at live in `buf`, which outlives their use below.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned();
        let home = if pwd.pw_dir.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(pwd.pw_dir)
                .to_string_lossy()
                .into_owned()
        };
        Some((name, home))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_settings_win() {
        let get = lookup(&[
            ("PGHOST", "db.example"),
            ("PGPORT", "6432"),
            ("PGUSER", "backup"),
            ("PGPASSWORD", "s3cret"),
            ("PGDATABASE", "app"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/ca.pem"),
            ("PGAPPNAME", "nightly"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("USER", "ignored"),
        ]);
        let p = ConnParams::from_lookup(&get).unwrap();
        assert_eq!(p.host, "db.example");
        assert_eq!(p.port, 6432);
        assert_eq!(p.user, "backup");
        assert_eq!(p.password.as_deref(), Some("s3cret"));
        assert_eq!(p.database, "app");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        assert_eq!(p.sslrootcert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(p.application_name, "nightly");
        assert_eq!(p.connect_timeout, Duration::from_secs(7));
        assert_eq!(p.read_timeout, Duration::ZERO);
        assert!(!p.is_unix_socket());
    }

    #[test]
    fn libpq_defaults() {
        let home = tempfile::tempdir().unwrap();
        let get = lookup(&[("USER", "alice"), ("HOME", home.path().to_str().unwrap())]);
        let p = ConnParams::from_lookup(&get).unwrap();
        let expect_host = if Path::new("/var/run/postgresql").is_dir() {
            "/var/run/postgresql"
        } else {
            "localhost"
        };
        assert_eq!(p.host, expect_host);
        assert_eq!(p.port, 5432);
        assert_eq!(p.user, "alice");
        assert_eq!(p.database, "alice");
        assert_eq!(p.password, None);
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert_eq!(p.application_name, "wal-rus");
        assert_eq!(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(p.sslrootcert, None);
    }

    #[test]
    fn user_falls_back_to_the_os_account() {
        let get = lookup(&[("HOME", "/nonexistent")]);
        let p = ConnParams::from_lookup(&get).unwrap();
        assert!(!p.user.is_empty());
        assert_eq!(p.database, p.user);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let get = lookup(&[
            ("PGHOST", ""),
            ("PGPORT", ""),
            ("PGUSER", "u"),
            ("PGPASSWORD", ""),
            ("HOME", "/nonexistent"),
        ]);
        let p = ConnParams::from_lookup(&get).unwrap();
        assert_eq!(p.port, 5432);
        assert_eq!(p.password, None);
    }

    #[test]
    fn password_file_is_used_when_pgpassword_is_unset() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(
            &file,
            "db.example:5432:app:backup:from-file\n*:*:*:*:other\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let base = [
            ("PGHOST", "db.example"),
            ("PGUSER", "backup"),
            ("PGDATABASE", "app"),
            ("PGPASSFILE", file.to_str().unwrap()),
        ];
        let p = ConnParams::from_lookup(&lookup(&base)).unwrap();
        assert_eq!(p.password.as_deref(), Some("from-file"));

        let mut with_pw = base.to_vec();
        with_pw.push(("PGPASSWORD", "from-env"));
        let p = ConnParams::from_lookup(&lookup(&with_pw)).unwrap();
        assert_eq!(p.password.as_deref(), Some("from-env"));

        // ~/.pgpass is the default file.
        std::fs::copy(&file, dir.path().join(".pgpass")).unwrap();
        std::fs::set_permissions(
            dir.path().join(".pgpass"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let p = ConnParams::from_lookup(&lookup(&[
            ("PGHOST", "elsewhere"),
            ("PGUSER", "x"),
            ("HOME", dir.path().to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(p.password.as_deref(), Some("other"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            ("PGPORT", "54x32"),
            ("PGPORT", "70000"),
            ("PGPORT", "0"),
            ("PGSSLMODE", "sometimes"),
            ("PGCONNECT_TIMEOUT", "soon"),
            ("PGHOST", "a,b"),
        ];
        for (name, value) in cases {
            let get = lookup(&[("PGUSER", "u"), ("HOME", "/nonexistent"), (name, value)]);
            match ConnParams::from_lookup(&get) {
                Err(PgError::Config { setting, .. }) => assert_eq!(setting, name),
                other => panic!("{name}={value}: expected a Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn connect_timeout_rules() {
        assert_eq!(parse_connect_timeout("0").unwrap(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(parse_connect_timeout("1").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_connect_timeout(" 30 ").unwrap(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn sslmode_round_trips() {
        for m in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(m.parse::<SslMode>().unwrap().as_str(), m);
        }
        assert!(SslMode::Require.requires_tls());
        assert!(!SslMode::Prefer.requires_tls());
    }

    #[test]
    fn debug_and_describe_hide_the_password() {
        let get = lookup(&[
            ("PGUSER", "u"),
            ("PGPASSWORD", "hunter2-very-secret"),
            ("HOME", "/nonexistent"),
        ]);
        let p = ConnParams::from_lookup(&get).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!p.describe().contains("hunter2"));
    }
}
