//! wal-rus: a WAL-G compatible archiver for PostgreSQL whose memory is fixed before it runs.
//!
//! The crate is split into rooms whose imports point one way (down):
//! `commands` use `config`, `pipeline`, `storage`, `codec` and `format`; the lower rooms take
//! plain values and never reach up. `main.rs` only parses arguments and dispatches.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod error;
pub mod format;
pub mod log;
pub mod pg;
pub mod pipeline;
pub mod readers;
pub mod repo;
#[cfg(test)]
mod shape;
pub mod storage;
pub mod sys;
pub mod time;
