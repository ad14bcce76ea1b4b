//! wal-rus: a WAL-G compatible archiver for PostgreSQL whose memory is fixed before it runs.
//!
//! The crate is split into rooms whose imports point one way (down):
//! `commands` use `config`, `pipeline`, `storage`, `codec` and `format`; the lower rooms take
//! plain values and never reach up. `main.rs` only parses arguments and dispatches.

pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod error;
pub mod format;
pub mod log;
pub mod pg;
pub mod pipeline;
pub mod storage;

/// Stack size of every thread wal-rus starts (workers, part uploaders, scanners). Sized on
/// purpose: Rust's 2 MiB default counts in full against an address-space limit, and our
/// threads keep their buffers on the heap (the arena). `memory-plan` counts it per thread.
pub const THREAD_STACK: usize = 256 * 1024;
