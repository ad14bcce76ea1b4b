//! A small synchronous PostgreSQL client for the backup commands.
//!
//! Backups must tell the server when they start and stop (`pg_backup_start` /
//! `pg_backup_stop`) and read a few settings, all over one session that stays open for the
//! whole copy. wal-rus has no async runtime, and a full driver would bring one, so this is a
//! blocking client over `std` sockets that speaks just enough of the frontend protocol
//! (via the `postgres-protocol` crate): startup, TLS (rustls), trust/password/md5/SCRAM
//! login, simple queries with text results, and terminate. [`BackupSession`] runs the
//! start and stop of a base backup on such a connection.
//!
//! Connection settings come from the same `PG*` variables and `~/.pgpass` as libpq.
//!
//! Not supported: multiple hosts in PGHOST, PGHOSTADDR, PGSERVICE/PGOPTIONS, client
//! certificates (PGSSLCERT/PGSSLKEY), GSSAPI/SSPI/Kerberos, PGCHANNELBINDING (SCRAM binds
//! to the TLS certificate whenever it can, but cannot be forced), the extended query
//! protocol, COPY FROM STDIN, and cancel requests. Replication sessions
//! (`Connection::connect_replication`) stream COPY OUT and COPY BOTH answers as events;
//! [`replication`] speaks physical streaming replication on them (wal-receive).
//! Host-name lookup uses the system resolver, which
//! `connect_timeout` does not bound.

mod backup;
pub mod base_backup;
mod conn;
mod error;
mod params;
pub mod pgpass;
pub mod replication;
mod tls;

pub use backup::{BackupError, BackupSession, BackupStart, BackupStop, STOP_TIMEOUT_GRACE};
pub use conn::{Connection, Event, Interrupter, QueryResult, Replication, parse_server_version};
pub use error::PgError;
pub use params::{ConnParams, DEFAULT_CONNECT_TIMEOUT, DEFAULT_WRITE_TIMEOUT, SslMode};
