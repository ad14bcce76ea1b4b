//! The memory formula: what each command may hold at its peak, from the settings alone.
//!
//! `peak_rss = process base + threads × stack + arena buffers × buffer size
//!            + uploaders × (codec state + encoder burst + digest buffer)
//!            + connections × HTTP state (+ TLS state, + CA roots once)`.
//! Commands size their arena and thread counts from the same `CommandPlan`, so the plan is
//! the design, not an estimate after the fact. The per-unit constants below were measured on
//! the release build and carry headroom; `memory-plan --json` prints every term.

use crate::codec::{self, EncodeOptions, ReadFormat};
use serde::Serialize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Size of every arena buffer: one read of local data or one slice of compressed output.
pub const IO_BUFFER: usize = 64 * 1024;

/// Resident memory of the process before any transfer: binary and libc pages touched,
/// relocations, std's runtime, settings. Measured 3.0–3.6 MiB on the glibc release build
/// (`--version`, `memory-plan`, a wal-fetch of a missing file from file storage), with
/// headroom for a loaded machine.
pub const PROCESS_BASE: u64 = 4 * MIB;

/// The S3 client once per process: ureq, URL parsing, signing code pages, the agent and a
/// response's buffers. Measured ~1.0–1.2 MiB (a wal-fetch from S3 minus the same from files).
pub const S3_CLIENT: u64 = 1536 * KIB;

/// Resident part of a worker's stack. The full `WORKER_STACK` is reserved (virtual); our
/// workers keep buffers on the heap, so few stack pages are ever touched.
pub const STACK_RESIDENT: u64 = 64 * KIB;

/// One HTTP connection's state in ureq (buffered reader and writer, pool entry, headers).
pub const HTTP_CONNECTION: u64 = 48 * KIB;

/// One TLS session's state in rustls (record buffers both ways, handshake, keys).
pub const TLS_CONNECTION: u64 = 96 * KIB;

/// The parsed system CA roots, held once per process when the endpoint is HTTPS.
pub const TLS_ROOTS: u64 = 768 * KIB;

/// Most output an encoder can hand the staging buffer in one call beyond what the staging
/// arena buffer already holds: one `IO_BUFFER` write, or the final flush.
fn encoder_burst(opts: EncodeOptions) -> u64 {
    let burst =
        codec::encoder_burst_bytes(opts, IO_BUFFER).max(codec::encoder_burst_bytes(opts, 0));
    burst.saturating_sub(IO_BUFFER as u64)
}

/// The settings the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput {
    /// Compression used for writing.
    pub encode: EncodeOptions,
    /// `WALG_UPLOAD_CONCURRENCY`.
    pub upload_concurrency: usize,
    /// `WALG_DOWNLOAD_CONCURRENCY`.
    pub download_concurrency: usize,
    /// `TOTAL_BG_UPLOADED_LIMIT`.
    pub bg_uploaded_limit: usize,
    /// Whether storage is reached over HTTPS.
    pub https: bool,
    /// Whether storage is remote (S3) rather than local files.
    pub remote: bool,
    /// `WALG_S3_MAX_PART_SIZE` (0 for file storage).
    pub part_size: u64,
}

/// Most part uploads a streamed upload keeps in flight: two already saturate this class of
/// host (2 cores), and each costs a part buffer.
pub const MAX_PART_UPLOADERS: usize = 2;

/// Largest part a streamed upload buffers. `WALG_S3_MAX_PART_SIZE` may ask for more (20 MiB by
/// default); any part size of 5 MiB or more is valid S3, and smaller parts keep the plan small.
pub const MAX_STREAM_PART: u64 = 8 * MIB;

/// Allowance for the walker's sorted listing of the largest directory and the files-metadata
/// spool's buffers.
pub const WALK_AND_SPOOL: u64 = 2 * MIB;

/// One PostgreSQL session (socket buffers, protocol state, a result row).
pub const PG_SESSION: u64 = 256 * KIB;

/// One term of the formula.
#[derive(Clone, Debug, Serialize)]
pub struct Term {
    /// What it is.
    pub name: &'static str,
    /// How many.
    pub count: u64,
    /// Bytes each.
    pub each_bytes: u64,
    /// `count × each_bytes`.
    pub bytes: u64,
}

/// The plan of one command.
#[derive(Clone, Debug, Serialize)]
pub struct CommandPlan {
    /// Command name.
    pub command: &'static str,
    /// OS threads at the peak, the main thread included.
    pub threads: u64,
    /// Concurrent transfers (uploads or downloads).
    pub transfers: u64,
    /// Buffers in the arena.
    pub arena_buffers: usize,
    /// Size of each arena buffer.
    pub arena_buffer_bytes: usize,
    /// The formula's terms.
    pub components: Vec<Term>,
    /// Sum of the terms: the most resident memory the command may use.
    pub peak_rss_bytes: u64,
}

impl CommandPlan {
    fn new(
        command: &'static str,
        threads: u64,
        transfers: u64,
        arena_buffers: usize,
    ) -> CommandPlan {
        CommandPlan {
            command,
            threads,
            transfers,
            arena_buffers,
            arena_buffer_bytes: IO_BUFFER,
            components: Vec::new(),
            peak_rss_bytes: 0,
        }
    }

    fn add(&mut self, name: &'static str, count: u64, each_bytes: u64) {
        if count == 0 || each_bytes == 0 {
            return;
        }
        self.components.push(Term {
            name,
            count,
            each_bytes,
            bytes: count * each_bytes,
        });
        self.peak_rss_bytes += count * each_bytes;
    }

    fn add_common(&mut self, input: &PlanInput, connections: u64) {
        self.add("process_base", 1, PROCESS_BASE);
        self.add("thread_stacks", self.threads, STACK_RESIDENT);
        self.add("arena", self.arena_buffers as u64, IO_BUFFER as u64);
        if input.remote {
            self.add("s3_client", 1, S3_CLIENT);
            self.add("http_connections", connections, HTTP_CONNECTION);
            if input.https {
                self.add("tls_connections", connections, TLS_CONNECTION);
                self.add("tls_ca_roots", 1, TLS_ROOTS);
            }
        }
    }
}

/// Background uploaders `wal-push` runs beside the foreground one, bounded as WAL-G bounds
/// them: `WALG_UPLOAD_CONCURRENCY − 1`, and none when either that or
/// `TOTAL_BG_UPLOADED_LIMIT − 1` is below 1.
pub fn wal_push_background_workers(input: &PlanInput) -> usize {
    let workers = input.upload_concurrency.saturating_sub(1);
    let limit = input.bg_uploaded_limit.saturating_sub(1);
    if workers < 1 || limit < 1 {
        0
    } else {
        workers.min(limit)
    }
}

/// `wal-push`: the foreground upload plus the background read-ahead workers and their scanner.
pub fn wal_push(input: &PlanInput) -> CommandPlan {
    let bg = wal_push_background_workers(input) as u64;
    let uploaders = 1 + bg;
    let threads = 1 + if bg > 0 { bg + 1 } else { 0 };
    let mut p = CommandPlan::new("wal-push", threads, uploaders, 2 * uploaders as usize);
    p.add_common(input, uploaders);
    // An uploader first compares with the archived copy (always for .history files), then
    // compresses: the decoder and the encoder are never alive at the same time.
    let encode = codec::encoder_state_bytes(input.encode) + encoder_burst(input.encode);
    let check = codec::decoder_state_bytes_own(input.encode);
    p.add("codec_state", uploaders, encode.max(check));
    if input.remote {
        p.add(
            "digest_buffer",
            uploaders,
            crate::storage::s3::upload::READ_BUFFER as u64,
        );
    }
    p
}

/// `wal-fetch` of one file written with the configured method.
pub fn wal_fetch(input: &PlanInput) -> CommandPlan {
    let mut p = CommandPlan::new("wal-fetch", 1, 1, 1);
    p.add_common(input, 1);
    p.add(
        "decoder_state",
        1,
        codec::decoder_state_bytes_own(input.encode),
    );
    p
}

/// `wal-prefetch`: `WALG_DOWNLOAD_CONCURRENCY` downloads at once.
pub fn wal_prefetch(input: &PlanInput) -> CommandPlan {
    let workers = input.download_concurrency.max(1) as u64;
    let mut p = CommandPlan::new("wal-prefetch", 1 + workers, workers, workers as usize);
    p.add_common(input, workers);
    p.add(
        "decoder_state",
        workers,
        codec::decoder_state_bytes_own(input.encode),
    );
    p
}

/// The part size and number of part uploaders of streamed uploads (tar partitions).
pub fn stream_parts(input: &PlanInput) -> (usize, usize) {
    let uploaders = input.upload_concurrency.clamp(1, MAX_PART_UPLOADERS);
    let size = input.part_size.clamp(5 * MIB, MAX_STREAM_PART) as usize;
    (uploaders, size)
}

/// `backup-push`: one walker/compressor thread, part uploaders beside it.
pub fn backup_push(input: &PlanInput) -> CommandPlan {
    let (uploaders, part) = stream_parts(input);
    let (threads, parts) = if input.remote {
        (1 + uploaders as u64, uploaders + 1)
    } else {
        (1, 0)
    };
    let mut p = CommandPlan::new("backup-push", threads, uploaders as u64, 2);
    p.add_common(input, uploaders as u64 + 1);
    p.add("part_buffers", parts as u64, part as u64);
    p.add(
        "codec_state",
        1,
        codec::encoder_state_bytes(input.encode) + encoder_burst(input.encode),
    );
    p.add("walk_and_files_spool", 1, WALK_AND_SPOOL);
    p.add("postgres_session", 1, PG_SESSION);
    p
}

/// `backup-fetch`: `WALG_DOWNLOAD_CONCURRENCY` partitions unpacked at once.
pub fn backup_fetch(input: &PlanInput) -> CommandPlan {
    let workers = input.download_concurrency.max(1) as u64;
    let mut p = CommandPlan::new("backup-fetch", 1 + workers, workers, workers as usize);
    p.add_common(input, workers);
    p.add(
        "decoder_state",
        workers,
        codec::decoder_state_bytes_own(input.encode),
    );
    p
}

/// The worst decoder any stored object may need: archives can hold objects that WAL-G or
/// an earlier configuration wrote with another method.
pub fn worst_decoder_bytes() -> u64 {
    [
        ReadFormat::Lz4,
        ReadFormat::Lzma,
        ReadFormat::Zstd,
        ReadFormat::Brotli,
        ReadFormat::Gzip,
        ReadFormat::Plain,
    ]
    .into_iter()
    .map(codec::decoder_state_bytes)
    .max()
    .unwrap_or(0)
}

/// Every command's plan.
pub fn all(input: &PlanInput) -> Vec<CommandPlan> {
    vec![
        wal_push(input),
        wal_fetch(input),
        wal_prefetch(input),
        backup_push(input),
        backup_fetch(input),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Method, ZstdLevel};

    fn defaults() -> PlanInput {
        PlanInput {
            encode: EncodeOptions {
                method: Method::Lz4,
                zstd_level: ZstdLevel::Default,
            },
            upload_concurrency: 16,
            download_concurrency: 10,
            bg_uploaded_limit: 32,
            https: false,
            remote: true,
            part_size: 20 * MIB,
        }
    }

    #[test]
    fn terms_add_up() {
        for p in all(&defaults()) {
            let sum: u64 = p.components.iter().map(|t| t.bytes).sum();
            assert_eq!(sum, p.peak_rss_bytes, "{}", p.command);
        }
    }

    #[test]
    fn background_bound_follows_walg() {
        let mut i = defaults();
        assert_eq!(wal_push_background_workers(&i), 15);
        i.bg_uploaded_limit = 4;
        assert_eq!(wal_push_background_workers(&i), 3);
        i.upload_concurrency = 1;
        assert_eq!(wal_push_background_workers(&i), 0);
        let p = wal_push(&i);
        assert_eq!((p.threads, p.transfers, p.arena_buffers), (1, 1, 2));
    }

    #[test]
    fn default_wal_commands_fit_small_hosts() {
        let i = defaults();
        assert!(wal_fetch(&i).peak_rss_bytes < 8 * MIB);
        let one = PlanInput {
            upload_concurrency: 1,
            ..i
        };
        assert!(wal_push(&one).peak_rss_bytes < 8 * MIB);
        assert!(backup_push(&i).peak_rss_bytes < 64 * MIB);
    }
}
