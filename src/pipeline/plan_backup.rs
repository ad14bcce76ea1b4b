//! The backup commands' plans, beside the others' in [`super`]: backup-push local or remote
//! (the server's stream re-packed) and backup-fetch.

use super::{
    CommandPlan, DELTA_CHAIN_INDEXES, DELTA_PUSH, MAX_PART_UPLOADERS, MAX_STREAM_PART, MIB,
    PAGE_BITMAP, PG_SESSION, PlanInput, WALK_AND_SPOOL, encoder_burst, parallel_downloads,
};
use crate::codec;

/// The part size and number of part uploaders of streamed uploads (tar partitions).
pub fn stream_parts(input: &PlanInput) -> (usize, usize) {
    let uploaders = input.part_uploaders.clamp(1, MAX_PART_UPLOADERS);
    let size = input.part_size.clamp(5 * MIB, MAX_STREAM_PART) as usize;
    (uploaders, size)
}

/// `backup-push`: one walker/compressor thread, part uploaders, the alive check's thread.
pub fn backup_push(input: &PlanInput) -> CommandPlan {
    backup_push_as("backup-push", input, false)
}

/// `backup-push`, or without a data directory (`streamed`: the server's stream re-packed).
pub fn backup_push_as(command: &'static str, input: &PlanInput, streamed: bool) -> CommandPlan {
    let (uploaders, part) = stream_parts(input);
    let (threads, parts) = if input.remote() {
        (1 + uploaders as u64, uploaders + 1)
    } else {
        (1, 0)
    };
    let checker = u64::from(input.alive_check);
    let mut p = CommandPlan::new(command, threads + checker, uploaders as u64, 2);
    p.add_common(input, uploaders as u64 + 1);
    p.add_mapped("part_buffers", parts as u64, part as u64);
    p.add(
        "codec_state",
        1,
        codec::encoder_state_bytes(input.encode) + encoder_burst(input.encode),
    );
    p.add("crypto_state", 1, input.crypto_state);
    p.add("walk_and_files_spool", 1, WALK_AND_SPOOL);
    if streamed {
        p.add(
            "replication_messages",
            1,
            crate::pg::base_backup::REPLICATION_MESSAGES,
        );
    } else if input.delta {
        p.add("delta_base_index_and_page_scan", 1, DELTA_PUSH);
    }
    p.add("postgres_session", 1 + checker, PG_SESSION);
    p.finish()
}

/// `backup-fetch`: `WALG_DOWNLOAD_CONCURRENCY` partitions unpacked at once.
pub fn backup_fetch(input: &PlanInput) -> CommandPlan {
    // Beside the workers, the fsync stage's threads (`pipeline::sync`); its queue holds open
    // files, not buffers.
    // Any backup may be a delta: the chain's indexes and a page bitmap per worker.
    let workers = input.download_concurrency.max(1) as u64;
    parallel_downloads(
        "backup-fetch",
        input,
        crate::pipeline::sync::SYNC_THREADS as u64,
        &[
            ("delta_chain_indexes", 1, DELTA_CHAIN_INDEXES),
            ("increment_page_bitmaps", workers, PAGE_BITMAP),
        ],
    )
}
