//! The daemon's plan, beside the others' in [`super`]: a long-lived process whose threads
//! and buffers are all fixed at start.

use super::{CommandPlan, KIB, PlanInput, encoder_burst, wal_push_background_workers};
use crate::codec;

/// Connection workers of the daemon: the threads that read requests, run each wal-push or
/// wal-fetch in the foreground and answer. PostgreSQL runs one archive_command and one
/// restore_command at a time, so two serve a cluster that both archives and restores;
/// further connections wait in the queue (then in the socket's backlog) their turn.
pub const DAEMON_CONNECTIONS: usize = 2;

/// One request of the daemon's protocol is at most this long (its length is a u16): each
/// connection worker reads requests into one buffer of this size, kept for its life.
pub const DAEMON_REQUEST_BUFFER: u64 = 64 * KIB;

/// The daemon's own bookkeeping: the queue of accepted connections, the names of the files
/// in flight and uploaded ahead (bounded by the workers and `TOTAL_BG_UPLOADED_LIMIT`), and
/// the scanner's bounded selection of `.ready` names.
pub const DAEMON_BOOKKEEPING: u64 = 128 * KIB;

/// Background workers of the daemon: wal-push's read-ahead uploaders, or the
/// `WALG_DOWNLOAD_CONCURRENCY` prefetchers of wal-fetch when they are more; one pool for both.
pub fn daemon_background_workers(input: &PlanInput) -> usize {
    let prefetch = if input.download_concurrency > 1 {
        input.download_concurrency
    } else {
        0
    };
    wal_push_background_workers(input).max(prefetch)
}

/// `daemon`: a fixed set of threads for its whole life (the accept loop, the signal
/// watcher, the connection workers, the background workers and the `.ready` scanner), each
/// transfer with wal-push's buffers and codec state, every buffer from one arena made at
/// start. Nothing in it grows with uptime or with the number of requests served.
pub fn daemon(input: &PlanInput) -> CommandPlan {
    let conns = DAEMON_CONNECTIONS as u64;
    let bg = daemon_background_workers(input) as u64;
    let scanner = u64::from(wal_push_background_workers(input) > 0);
    let transfers = conns + bg;
    let threads = 2 + conns + bg + scanner;
    let mut p = CommandPlan::new("daemon", threads, transfers, 2 * transfers as usize);
    p.add_common(input, transfers);
    // A transfer is a wal-push (a comparison, then the encoder) or a wal-fetch or prefetch
    // (the decoder): never two codecs at once, as in wal-push.
    let encode = codec::encoder_state_bytes(input.encode) + encoder_burst(input.encode);
    let decode = codec::decoder_state_bytes_own(input.encode);
    p.add("codec_state", transfers, encode.max(decode));
    p.add("crypto_state", transfers, input.crypto_state);
    p.add("request_buffers", conns, DAEMON_REQUEST_BUFFER);
    p.add("daemon_bookkeeping", 1, DAEMON_BOOKKEEPING);
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tests::defaults;
    use super::*;
    use crate::pipeline::plan::wal_push;

    /// The threads `daemon` starts, counted as the plan counts them: accept loop, signal
    /// watcher, connection workers, background workers, scanner.
    #[test]
    fn threads_and_transfers_follow_the_settings() {
        let i = defaults();
        assert_eq!(daemon_background_workers(&i), 15);
        let p = daemon(&i);
        assert_eq!((p.threads, p.transfers, p.arena_buffers), (20, 17, 34));
        // Prefetchers outnumber the uploaders: the pool follows them, no scanner without uploads.
        let fetch = PlanInput {
            upload_concurrency: 1,
            ..i
        };
        assert_eq!(daemon_background_workers(&fetch), 10);
        assert_eq!(daemon(&fetch).threads, 2 + 2 + 10);
        let none = PlanInput {
            upload_concurrency: 1,
            download_concurrency: 1,
            ..i
        };
        assert_eq!((daemon(&none).threads, daemon(&none).transfers), (4, 2));
    }

    /// Every transfer of the daemon costs what one of wal-push's costs; the daemon adds its
    /// request buffers and bookkeeping, and it fits a small host at the defaults.
    #[test]
    fn a_transfer_costs_what_wal_push_costs() {
        let i = defaults();
        let (d, w) = (daemon(&i), wal_push(&i));
        let term = |p: &CommandPlan, n: &str| {
            p.components
                .iter()
                .find(|t| t.name == n)
                .map(|t| t.each_bytes)
        };
        assert_eq!(term(&d, "codec_state"), term(&w, "codec_state"));
        assert_eq!(term(&d, "request_buffers"), Some(DAEMON_REQUEST_BUFFER));
        assert!(d.peak_rss_bytes < 16 << 20, "{}", d.peak_rss_bytes);
    }
}
