//! Every integration test of wal-rus, in one test binary.
//!
//! One binary compiles and links the shared harness (`common`) once instead of once per
//! file, and a test's name says where it lives: `wal_commands::wal_push_to_s3`. Run one
//! module with a filter, e.g. `cargo test --release --test integration -- memory_cage::`.
//! Each module's own documentation says what it covers.
//!
//! The WAL-G interop tests (`walg_*`) live in `vendor-tests/`, beside the walg-codecs oracle
//! they drive; they skip loudly when WAL-G is unavailable (see `common::require_or_fail`)
//! and fail under CI/WALRUS_REQUIRE_TOOLS when the walg-codecs oracle is missing.

mod common;

mod aws_credentials;
mod azure_storage;
mod backup_catalog;
mod backup_restore;
mod cluster;
mod daemon;
mod emulators;
mod faults;
mod gcs_storage;
mod hostile_storage;
mod memory_cage;
mod parsers;
mod pg_client;
mod rate_limits;
mod remote_backup;
mod s3_protection;
mod s3_storage;
mod s3_tls;
mod settings;
mod wal_commands;
mod wal_inspect;
mod wal_receive;
mod wal_restore;

#[path = "../../vendor-tests/support/mod.rs"]
mod support;
#[path = "../../vendor-tests/walg_backup_interop.rs"]
mod walg_backup_interop;
#[path = "../../vendor-tests/walg_codecs.rs"]
mod walg_codecs;
#[path = "../../vendor-tests/walg_delta_interop.rs"]
mod walg_delta_interop;
#[path = "../../vendor-tests/walg_formats.rs"]
mod walg_formats;
#[path = "../../vendor-tests/walg_interop.rs"]
mod walg_interop;
