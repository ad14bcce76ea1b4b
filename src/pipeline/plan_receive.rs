//! wal-receive's plan, beside the others' in [`super`]: a long-lived process whose threads
//! and buffers, whole WAL segments included, are all fixed at start.

use super::{CommandPlan, KIB, PG_SESSION, PlanInput, encoder_burst};
use crate::codec;

/// Most upload threads wal-receive runs: two keep up with a busy server on this class of
/// host (2 cores), and each costs a whole segment buffer.
pub const MAX_RECEIVE_UPLOADERS: usize = 2;

/// A replication session's receive side beyond [`PG_SESSION`]: one XLogData message (at
/// most 128 KiB) being parsed while the next is read in, with the socket's read chunk.
pub const REPLICATION_STREAM: u64 = 512 * KIB;

/// Upload threads of wal-receive: `WALG_UPLOAD_CONCURRENCY`, at most
/// [`MAX_RECEIVE_UPLOADERS`].
pub fn wal_receive_uploaders(input: &PlanInput) -> usize {
    input.upload_concurrency.clamp(1, MAX_RECEIVE_UPLOADERS)
}

/// Segment buffers of wal-receive: one per upload thread, and the one being filled.
pub fn wal_receive_segments(input: &PlanInput) -> usize {
    wal_receive_uploaders(input) + 1
}

/// `wal-receive`: the main thread reads the stream into a segment buffer and hands each
/// complete segment to the upload threads (compressing as wal-push does); a signal watcher
/// beside them. Every buffer is made at start; nothing grows with uptime.
pub fn wal_receive(input: &PlanInput) -> CommandPlan {
    let uploaders = wal_receive_uploaders(input) as u64;
    let threads = 2 + uploaders;
    let mut p = CommandPlan::new("wal-receive", threads, uploaders, 2 * uploaders as usize);
    p.add_common(input, uploaders);
    p.add_mapped(
        "wal_segments",
        wal_receive_segments(input) as u64,
        input.wal_segment_size,
    );
    // As in wal-push: an overwrite check (always for .history) or the encoder, never both.
    let encode = codec::encoder_state_bytes(input.encode) + encoder_burst(input.encode);
    let check = codec::decoder_state_bytes_own(input.encode);
    p.add("codec_state", uploaders, encode.max(check));
    p.add("crypto_state", uploaders, input.crypto_state);
    p.add("postgres_session", 1, PG_SESSION);
    p.add("replication_stream", 1, REPLICATION_STREAM);
    p.finish()
}
