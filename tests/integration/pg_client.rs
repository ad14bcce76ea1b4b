//! The synchronous PostgreSQL client (`wal_rus::pg`) against real PostgreSQL 15 clusters.
//!
//! Backups depend on this client logging in the way operators configured (trust over the
//! socket, SCRAM/md5/password over TCP, TLS with libpq's sslmode meanings), on errors that
//! say what happened without leaking passwords, on a session surviving SQL errors, and on
//! `pg_backup_start`/`pg_backup_stop` round-tripping. Each test starts its own cluster with
//! a pg_hba.conf made for it; the TLS test makes a throwaway CA and server certificate with
//! the openssl CLI and skips loudly if that is missing.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PgCluster, Tool, chown_postgres, free_port, require_or_fail, run_ok};
use wal_rus::pg::{ConnParams, Connection, PgError, SslMode};

/// Roles and how each may log in. Harness psql connects as `postgres` over TCP with trust.
const HBA: &str = "\
local   all  all         trust
hostssl all  tls_user    127.0.0.1/32  scram-sha-256
host    all  tls_user    127.0.0.1/32  reject
host    all  scram_user  127.0.0.1/32  scram-sha-256
host    all  md5_user    127.0.0.1/32  md5
host    all  pw_user     127.0.0.1/32  password
host    all  postgres    127.0.0.1/32  trust
";

const SCRAM_PW: &str = "s3cr:t ü";
const MD5_PW: &str = "md5-pass\\word";
const CLEAR_PW: &str = "plain-pw";
const TLS_PW: &str = "tls-pw";

/// A cluster with `HBA`, the test roles and `extra_conf`, started. `prepare` runs on the
/// data directory before the server starts (e.g. to install certificates).
fn cluster(extra_conf: &str, prepare: impl FnOnce(&Path)) -> PgCluster {
    let mut pg = PgCluster::init(free_port(), extra_conf);
    let hba = pg.data_dir().join("pg_hba.conf");
    fs::write(&hba, HBA).expect("write pg_hba.conf");
    chown_postgres(&hba);
    prepare(pg.data_dir());
    pg.start();
    let sql_literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    pg.psql(&format!(
        "SET password_encryption = 'scram-sha-256';\
         CREATE ROLE scram_user LOGIN PASSWORD {};\
         CREATE ROLE pw_user LOGIN PASSWORD {};\
         CREATE ROLE tls_user LOGIN PASSWORD {};",
        sql_literal(SCRAM_PW),
        sql_literal(CLEAR_PW),
        sql_literal(TLS_PW)
    ));
    // An md5 pg_hba line with a SCRAM verifier silently does SCRAM; store an md5 hash.
    pg.psql(&format!(
        "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD {};",
        sql_literal(MD5_PW)
    ));
    pg
}

fn params(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    sslmode: SslMode,
) -> ConnParams {
    ConnParams {
        host: host.to_string(),
        port,
        user: user.to_string(),
        password: password.map(str::to_string),
        database: "postgres".to_string(),
        sslmode,
        sslrootcert: None,
        application_name: "wal-rus-test".to_string(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::ZERO,
        write_timeout: Duration::from_secs(60),
    }
}

fn tcp(pg: &PgCluster, user: &str, password: Option<&str>, sslmode: SslMode) -> ConnParams {
    params("127.0.0.1", pg.port(), user, password, sslmode)
}

fn socket(pg: &PgCluster) -> ConnParams {
    params(
        pg.base_dir().to_str().unwrap(),
        pg.port(),
        "postgres",
        None,
        SslMode::Prefer,
    )
}

fn connect(p: &ConnParams, pg: &PgCluster) -> Connection {
    Connection::connect(p).unwrap_or_else(|e| {
        panic!(
            "connect {}: {e}\n--- server log ---\n{}",
            p.describe(),
            pg.server_log_tail(30)
        )
    })
}

fn one(conn: &mut Connection, sql: &str) -> Option<String> {
    let row = conn.query_one(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(row.len(), 1, "{sql}: {row:?}");
    row.into_iter().next().unwrap()
}

#[test]
fn trust_socket_queries_errors_and_backup_round_trip() {
    let test = "trust_socket_queries_errors_and_backup_round_trip";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let pg = cluster("", |_| {});
    let mut conn = connect(&socket(&pg), &pg);
    assert!(!conn.uses_tls(), "no TLS over Unix sockets");
    assert_eq!(
        one(&mut conn, "select current_user").as_deref(),
        Some("postgres")
    );
    assert_eq!(
        one(&mut conn, "select current_setting('application_name')").as_deref(),
        Some("wal-rus-test")
    );

    // Version and parameters from the startup ParameterStatus messages.
    let num: u32 = one(&mut conn, "show server_version_num")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(conn.server_version_num(), num);
    assert!((150000..160000).contains(&num), "{num}");
    assert_eq!(conn.parameter("client_encoding"), Some("UTF8"));
    assert_eq!(conn.parameter("integer_datetimes"), Some("on"));
    assert!(conn.parameter("server_version").unwrap().starts_with("15."));
    assert!(conn.backend_pid() > 0);

    // Multi-row results, NULLs, empty strings, non-ASCII text.
    let r = conn
        .query("select g as n, case when g % 2 = 0 then null else 'v' || g end as v from generate_series(1, 5) g")
        .unwrap();
    assert_eq!(r.columns, ["n", "v"]);
    assert_eq!(r.rows.len(), 5);
    assert_eq!(r.rows[0], [Some("1".to_string()), Some("v1".to_string())]);
    assert_eq!(r.rows[1], [Some("2".to_string()), None]);
    let r = conn.query("select '', null::text, 'ünïcødé'").unwrap();
    assert_eq!(
        r.rows,
        [[Some(String::new()), None, Some("ünïcødé".to_string())]]
    );
    // Several statements: rows of all results, columns of the last.
    let r = conn.query("select 1 as a; select 2 as b, 3 as c").unwrap();
    assert_eq!(r.columns, ["b", "c"]);
    assert_eq!(
        r.rows,
        [
            vec![Some("1".to_string())],
            vec![Some("2".to_string()), Some("3".to_string())]
        ]
    );
    // Statements without rows, empty queries and notices.
    conn.execute("create temporary table t (x int)").unwrap();
    conn.execute("insert into t values (1), (2)").unwrap();
    conn.execute("").unwrap();
    conn.execute("do $$ begin raise notice 'just a notice'; end $$")
        .unwrap();
    assert_eq!(
        conn.query("select x from t where x > 5")
            .unwrap()
            .rows
            .len(),
        0
    );
    assert!(matches!(
        conn.query_one("select x from t"),
        Err(PgError::Protocol(_))
    ));

    // A syntax error comes back as a server error and the session stays usable.
    let err = conn.query("selec 1").unwrap_err();
    match &err {
        PgError::Server {
            severity,
            code,
            message,
            ..
        } => {
            assert_eq!(
                (severity.as_str(), code.as_str()),
                ("ERROR", "42601"),
                "{err}"
            );
            assert!(message.contains("syntax error"), "{err}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("ERROR 42601: syntax error at or near \"selec\""),
        "{err}"
    );
    assert_eq!(err.sqlstate(), Some("42601"));
    assert!(conn.is_alive());
    // An error in the middle of a multi-statement query: drained, still usable.
    let err = conn.query("select 1; select 1/0; select 2").unwrap_err();
    assert_eq!(err.sqlstate(), Some("22012"), "{err}");
    assert_eq!(one(&mut conn, "select 42").as_deref(), Some("42"));
    // Transaction state follows ReadyForQuery.
    conn.execute("begin").unwrap();
    assert!(conn.in_transaction());
    assert!(conn.query("select nosuchcolumn").is_err());
    assert!(conn.in_transaction(), "failed transaction block");
    conn.execute("rollback").unwrap();
    assert!(!conn.in_transaction());
    // SET updates ParameterStatus for reported parameters.
    conn.execute("set application_name = 'renamed'").unwrap();
    assert_eq!(conn.parameter("application_name"), Some("renamed"));

    // Non-exclusive backup: start and stop in the same session (PG15 names).
    let start_lsn = one(&mut conn, "select pg_backup_start('x', true)").expect("start lsn");
    assert!(start_lsn.contains('/'), "{start_lsn}");
    let stop = conn.query("select * from pg_backup_stop(false)").unwrap();
    assert_eq!(stop.columns, ["lsn", "labelfile", "spcmapfile"]);
    assert_eq!(stop.rows.len(), 1);
    let row = &stop.rows[0];
    assert!(row[0].as_deref().unwrap().contains('/'));
    let label = row[1].as_deref().expect("labelfile");
    assert!(
        label.contains(&format!("START WAL LOCATION: {start_lsn}")),
        "{label}"
    );
    assert!(label.contains("LABEL: x\n"), "{label}");
    assert_eq!(row[2].as_deref(), Some(""), "no tablespaces, empty map");

    // A read timeout ends a query that takes too long, and the session with it.
    let mut p = socket(&pg);
    p.read_timeout = Duration::from_millis(500);
    let mut slow = connect(&p, &pg);
    let started = Instant::now();
    let err = slow.query("select pg_sleep(5)").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, PgError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within 500ms"), "{err}");
    assert!(matches!(
        slow.query("select 1"),
        Err(PgError::Broken { .. })
    ));
    assert!(!slow.is_alive());

    // A session the server ends reports it, then stays failed.
    let mut victim = connect(&socket(&pg), &pg);
    let pid = victim.backend_pid();
    assert_eq!(
        one(
            &mut conn,
            &format!("select pg_terminate_backend({pid}, 10000)")
        )
        .as_deref(),
        Some("t")
    );
    let err = victim.query("select 1").unwrap_err();
    assert!(
        matches!(&err, PgError::Server { code, .. } if code == "57P01")
            || matches!(err, PgError::Io { .. }),
        "{err:?}"
    );
    assert!(!victim.is_alive());
    assert!(matches!(
        victim.query("select 1"),
        Err(PgError::Broken { .. })
    ));

    // A database that does not exist is a server error, not an authentication failure.
    let mut p = socket(&pg);
    p.database = "nosuchdb".into();
    match Connection::connect(&p) {
        Err(e @ PgError::Server { .. }) => {
            assert_eq!(e.sqlstate(), Some("3D000"));
            assert_eq!(
                e.to_string(),
                "FATAL 3D000: database \"nosuchdb\" does not exist"
            );
        }
        other => panic!("expected 3D000, got {:?}", other.err()),
    }

    conn.close();
}

#[test]
fn password_logins_over_tcp() {
    let test = "password_logins_over_tcp";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let pg = cluster("log_connections = on\n", |_| {});
    let user_of = |c: &mut Connection| one(c, "select current_user").unwrap();

    // SCRAM-SHA-256; sslmode=prefer falls back to plain when the server says 'N'.
    let mut c = connect(
        &tcp(&pg, "scram_user", Some(SCRAM_PW), SslMode::Prefer),
        &pg,
    );
    assert!(!c.uses_tls());
    assert_eq!(user_of(&mut c), "scram_user");
    c.close();
    // md5 and cleartext password.
    let mut c = connect(&tcp(&pg, "md5_user", Some(MD5_PW), SslMode::Disable), &pg);
    assert_eq!(user_of(&mut c), "md5_user");
    drop(c);
    let mut c = connect(&tcp(&pg, "pw_user", Some(CLEAR_PW), SslMode::Allow), &pg);
    assert_eq!(user_of(&mut c), "pw_user");
    drop(c);
    let log = pg.server_log();
    for method in ["method=scram-sha-256", "method=md5", "method=password"] {
        assert!(
            log.contains(method),
            "server log shows no {method} login:\n{}",
            pg.server_log_tail(40)
        );
    }

    // Wrong passwords: 28P01, the server's message, and never the password we sent.
    for (user, wrong) in [
        ("scram_user", "wrong-scram-secret"),
        ("md5_user", "wrong-md5-secret"),
        ("pw_user", "wrong-clear-secret"),
    ] {
        let err = Connection::connect(&tcp(&pg, user, Some(wrong), SslMode::Disable))
            .expect_err("wrong password accepted");
        match &err {
            PgError::Auth { user: u, code, .. } => {
                assert_eq!(u, user);
                assert_eq!(code.as_deref(), Some("28P01"));
            }
            other => panic!("expected an auth error, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("FATAL 28P01: password authentication failed for user \"{user}\"")
        );
        assert!(!format!("{err} {err:?}").contains(wrong));
    }

    // No password at all: the client says so itself.
    let err = Connection::connect(&tcp(&pg, "scram_user", None, SslMode::Disable))
        .expect_err("login without password");
    assert!(matches!(&err, PgError::Auth { code: None, .. }), "{err:?}");
    assert!(err.to_string().contains("no password is set"), "{err}");

    // No pg_hba line: 28000.
    let err = Connection::connect(&tcp(&pg, "tls_user", Some(TLS_PW), SslMode::Disable))
        .expect_err("rejected");
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");
    assert!(!err.to_string().contains(TLS_PW));

    // sslmode=require must not quietly go plain.
    let err = Connection::connect(&tcp(&pg, "scram_user", Some(SCRAM_PW), SslMode::Require))
        .expect_err("no TLS here");
    assert!(matches!(err, PgError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("does not support SSL"), "{err}");

    // The environment path: PGPASSFILE with a wildcard line.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    fs::write(
        &passfile,
        format!(
            "127.0.0.1:{}:*:md5_user:{}\n",
            pg.port(),
            MD5_PW.replace('\\', "\\\\")
        ),
    )
    .unwrap();
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    let port = pg.port().to_string();
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "md5_user"),
        ("PGDATABASE", "postgres"),
        ("PGPASSFILE", passfile.to_str().unwrap()),
        ("PGSSLMODE", "disable"),
    ];
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let p = ConnParams::from_lookup(&get).unwrap();
    let mut c = connect(&p, &pg);
    assert_eq!(user_of(&mut c), "md5_user");
    assert_eq!(
        one(&mut c, "select current_setting('application_name')").as_deref(),
        Some("wal-rus")
    );
}

#[test]
fn closed_port_fails_fast_with_a_clear_message() {
    let port = free_port();
    let mut p = params(
        "127.0.0.1",
        port,
        "postgres",
        Some("not-in-messages"),
        SslMode::Prefer,
    );
    p.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = Connection::connect(&p).expect_err("nothing listens on a free port");
    assert!(
        started.elapsed() < p.connect_timeout,
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, PgError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("connecting to 127.0.0.1:{port}: Connection refused")
    );
    assert!(!format!("{err:?}").contains("not-in-messages"));

    let dir = tempfile::tempdir().unwrap();
    let p = params(
        dir.path().to_str().unwrap(),
        port,
        "postgres",
        None,
        SslMode::Prefer,
    );
    let err = Connection::connect(&p).expect_err("no socket there");
    assert_eq!(
        err.to_string(),
        format!(
            "connecting to socket {}/.s.PGSQL.{port}: No such file or directory",
            dir.path().display()
        )
    );
}

/// A CA and a server certificate for `localhost` it signed, made with the openssl CLI.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Option<Certs> {
        let openssl = ["/usr/bin/openssl", "/usr/local/bin/openssl"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            run_ok(
                Command::new(openssl).args(args).current_dir(dir.path()),
                Duration::from_secs(60),
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=wal-rus test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        Some(Certs { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn tls_sslmodes() {
    let test = "tls_sslmodes";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let Some(certs) = Certs::make() else {
        common::skip(test, "the openssl CLI is not installed");
        return;
    };
    let pg = cluster(
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        |data| {
            for name in ["server.crt", "server.key"] {
                let dest = data.join(name);
                fs::copy(certs.path(name), &dest).unwrap();
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
                chown_postgres(&dest);
            }
        },
    );
    let ssl_in_use = |c: &mut Connection| {
        one(
            c,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        )
        .unwrap()
    };

    // require: encrypted, certificate not checked; SCRAM over TLS (channel binding).
    let mut c = connect(&tcp(&pg, "tls_user", Some(TLS_PW), SslMode::Require), &pg);
    assert!(c.uses_tls());
    assert_eq!(ssl_in_use(&mut c), "t");
    assert_eq!(
        one(&mut c, "select current_user").as_deref(),
        Some("tls_user")
    );
    // Larger replies cross several TLS records.
    let r = c
        .query("select repeat('x', 100000) from generate_series(1, 3)")
        .unwrap();
    assert!(
        r.rows
            .iter()
            .all(|row| row[0].as_ref().map(String::len) == Some(100000))
    );
    c.close();
    // Wrong password over TLS is the same clear error.
    let err = Connection::connect(&tcp(
        &pg,
        "tls_user",
        Some("bad-tls-secret"),
        SslMode::Require,
    ))
    .expect_err("connect should fail");
    assert_eq!(
        err.to_string(),
        "FATAL 28P01: password authentication failed for user \"tls_user\""
    );

    // prefer (libpq's default) uses TLS when offered; trust and md5 work over it too.
    let mut c = connect(&tcp(&pg, "md5_user", Some(MD5_PW), SslMode::Prefer), &pg);
    assert!(c.uses_tls());
    assert_eq!(ssl_in_use(&mut c), "t");
    drop(c);
    let c = connect(&tcp(&pg, "postgres", None, SslMode::Prefer), &pg);
    assert!(c.uses_tls());
    drop(c);

    // disable is refused by the hostssl-only user; allow retries with TLS.
    let err = Connection::connect(&tcp(&pg, "tls_user", Some(TLS_PW), SslMode::Disable))
        .expect_err("connect should fail");
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");
    let mut c = connect(&tcp(&pg, "tls_user", Some(TLS_PW), SslMode::Allow), &pg);
    assert!(c.uses_tls());
    assert_eq!(ssl_in_use(&mut c), "t");
    drop(c);
    let c = connect(&tcp(&pg, "scram_user", Some(SCRAM_PW), SslMode::Allow), &pg);
    assert!(!c.uses_tls(), "allow tries plain first");
    drop(c);

    // verify-full: chain and name; verify-ca: chain only.
    let verified = |host: &str, mode: SslMode| {
        let mut p = params(host, pg.port(), "tls_user", Some(TLS_PW), mode);
        p.sslrootcert = Some(certs.path("ca.crt"));
        p
    };
    let mut c = connect(&verified("localhost", SslMode::VerifyFull), &pg);
    assert_eq!(ssl_in_use(&mut c), "t");
    drop(c);
    let err = Connection::connect(&verified("127.0.0.1", SslMode::VerifyFull))
        .expect_err("name mismatch accepted");
    assert!(matches!(err, PgError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut c = connect(&verified("127.0.0.1", SslMode::VerifyCa), &pg);
    assert_eq!(ssl_in_use(&mut c), "t");
    drop(c);
    // A CA that did not sign the server certificate: rejected under verify-ca.
    let mut p = verified("127.0.0.1", SslMode::VerifyCa);
    p.sslrootcert = Some(certs.path("server.crt"));
    let err = Connection::connect(&p).expect_err("untrusted chain accepted");
    assert!(matches!(err, PgError::Tls(_)), "{err:?}");
    // A missing root file is a clear TLS error.
    p.sslrootcert = Some(certs.path("missing.crt"));
    let err = Connection::connect(&p).expect_err("connect should fail");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

/// Replication sessions (remote backups, wal-receive): IDENTIFY_SYSTEM's row, a whole
/// `BASE_BACKUP` COPY stream in PostgreSQL 15's framing, then a COPY BOTH WAL stream that
/// goes quiet without breaking the session, and ends on the client's CopyDone.
#[test]
fn replication_sessions_stream_backups_and_wal() {
    use wal_rus::pg::{Event, Replication};
    if require_or_fail(
        Tool::Postgres,
        "replication_sessions_stream_backups_and_wal",
    )
    .is_none()
    {
        return;
    }
    let pg = cluster("", |data| {
        let hba = data.join("pg_hba.conf");
        let text = fs::read_to_string(&hba).unwrap();
        fs::write(&hba, format!("local replication all trust\n{text}")).unwrap();
    });
    let mut conn = Connection::connect_replication(&socket(&pg), Replication::Physical)
        .unwrap_or_else(|e| panic!("replication login: {e}\n{}", pg.server_log_tail(20)));
    let events = |conn: &mut Connection, until: &dyn Fn(&Event) -> bool| {
        let mut seen = Vec::new();
        loop {
            let e = conn.next_event().expect("event");
            let stop = until(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    };

    conn.start_query("IDENTIFY_SYSTEM").unwrap();
    let answer = events(&mut conn, &|e| *e == Event::Ready);
    let Some(Event::Row(row)) = answer.iter().find(|e| matches!(e, Event::Row(_))) else {
        panic!("no row in {answer:?}");
    };
    assert_eq!(row[1].as_deref(), Some("1"), "timeline of {row:?}");

    // SQL is refused on a physical replication session, and the session survives it.
    conn.start_query("select 1").unwrap();
    assert!(conn.next_event().is_err());
    conn.start_query("IDENTIFY_SYSTEM").unwrap();
    assert!(events(&mut conn, &|e| *e == Event::Ready).len() > 2);

    conn.start_query("BASE_BACKUP (LABEL 'conn test', CHECKPOINT 'fast', MANIFEST 'no')")
        .unwrap();
    let answer = events(&mut conn, &|e| *e == Event::Ready);
    let copy_at = answer.iter().position(|e| *e == Event::CopyOut).unwrap();
    let payloads: Vec<&[u8]> = answer
        .iter()
        .filter_map(|e| match e {
            Event::CopyData(b) => Some(&b[..]),
            _ => None,
        })
        .collect();
    assert!(copy_at > 0 && payloads.len() > 2, "{}", payloads.len());
    assert_eq!(payloads[0][0], b'n', "a new archive first");
    let data: Vec<u8> = payloads
        .iter()
        .filter(|p| p[0] == b'd')
        .flat_map(|p| p[1..].iter().copied())
        .collect();
    assert!(
        data.windows(10).any(|w| w == b"PG_VERSION"),
        "tar holds PG_VERSION"
    );
    assert!(answer.contains(&Event::CopyDone));

    // Stream from where the server is now (older WAL may be recycled by the checkpoint).
    conn.start_query("IDENTIFY_SYSTEM").unwrap();
    let answer = events(&mut conn, &|e| *e == Event::Ready);
    let Some(Event::Row(row)) = answer.iter().find(|e| matches!(e, Event::Row(_))) else {
        panic!("no row in {answer:?}");
    };
    let xlogpos = row[2].clone().unwrap();
    conn.start_query(&format!("START_REPLICATION PHYSICAL {xlogpos}"))
        .unwrap();
    assert_eq!(conn.next_event().unwrap(), Event::CopyBoth);
    let started = Instant::now();
    let mut quiet = false;
    while started.elapsed() < Duration::from_secs(30) && !quiet {
        match conn.next_event_within(Duration::from_millis(200)).unwrap() {
            None => quiet = true,
            Some(Event::CopyData(b)) => assert!(matches!(b[0], b'w' | b'k'), "{b:?}"),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(quiet, "an idle stream times out without an error");
    conn.send_copy_done().unwrap();
    let rest = events(&mut conn, &|e| *e == Event::Ready);
    assert!(rest.contains(&Event::CopyDone), "{rest:?}");
    conn.start_query("IDENTIFY_SYSTEM").unwrap();
    assert!(events(&mut conn, &|e| *e == Event::Ready).len() > 2);
}
