//! The memory formula: what each command may hold at its peak, from the settings alone.
//!
//! `peak_rss = process base (+ the crypter's code pages) + threads × stack
//!            + arena buffers × buffer size
//!            + uploaders × (codec state + encoder burst + crypto state)
//!            + connections × HTTP state (+ TLS state, + CA roots once)`.
//!
//! `peak_virtual = executable + shared libraries (+ NSS modules loaded later) + vdso, vvar
//!               + main stack + (threads − 1) × (WORKER_STACK + guard + TLS)
//!               + heap base + every heap term of the RSS formula counted in full
//!               + malloc overhead`.
//!
//! Commands size their arena and thread counts from the same `CommandPlan`, so the plan is
//! the design, not an estimate after the fact. The per-unit constants below were measured on
//! the release build and carry headroom; `memory-plan --json` prints every term.
//!
//! The virtual formula counts what an address-space limit (`ulimit -v`, `prlimit --as`)
//! charges: every mapping in full, touched or not. Its image terms are not constants: they
//! are read once at run time from `/proc/self/maps` (every file-backed mapping with the
//! zero-fill `.bss` mapping that follows it, and the kernel's vdso/vvar pages), so they are
//! exact for the binary that runs — a static musl build has no shared libraries, a glibc
//! build maps ld.so, libc, libm and libgcc_s — and follow the binary as it grows. Without
//! `/proc`, [`IMAGE_FALLBACK`] stands in. glibc's malloc is set up by [`configure_malloc`]:
//! one arena (each extra thread arena would reserve 64 MiB of address space) and a fixed
//! mmap threshold (buffers of 64 KiB and more are mapped on their own and unmapped when
//! freed, instead of the threshold creeping up and big buffers staying in the heap). musl's
//! allocator maps buffers above 128 KiB on its own and keeps no per-thread arenas.

use crate::codec::{self, EncodeOptions, ReadFormat};
use serde::Serialize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const PAGE: u64 = 4 * KIB;

/// Size of every arena buffer: one read of local data or one slice of compressed output.
pub const IO_BUFFER: usize = 64 * 1024;

/// Resident memory of the process before any transfer: binary and libc pages touched,
/// relocations, std's runtime, settings. Almost all of it is clean file-backed pages of the
/// executable and libc, mapped 64 KiB at a time by the kernel's fault-around, so it follows
/// how much code a command touches rather than what it allocates (the heap of a wal-fetch of
/// a missing file peaks at 72 KiB under massif). Measured on the glibc release build since
/// the settings table and config-file readers landed: 3.1 MiB for `--version`, 4.5–4.7 MiB
/// for a wal-fetch of a missing file (1.7 MiB of them the executable's text, 1.1 MiB libc's),
/// up to 4.9 MiB in a wal-fetch on a loaded machine. Since OpenPGP landed the executable is
/// 9.3 MB instead of 6.5 MB, and the same wal-fetch keeps 5.2–5.4 MiB resident without any
/// key (its code is spread wider, so fault-around maps more of it); the rest is headroom.
/// The static musl build needs about 1 MiB less: no shared libraries, no relocations. Since
/// deltas, wal-verify and wal-show landed (a 9.5 MB executable) a wal-fetch of a missing file
/// still keeps 5.1–5.3 MiB, but an HTTPS wal-fetch measured 3 KiB over its plan once, while
/// a build ran beside it: 256 KiB more headroom.
pub const PROCESS_BASE: u64 = 5888 * KIB;

/// The S3 client once per process: ureq, URL parsing, signing code pages, the agent and a
/// response's buffers. Measured ~1.0–1.2 MiB (a wal-fetch from S3 minus the same from files).
pub const S3_CLIENT: u64 = 1536 * KIB;

/// The Azure Blob client once per process: as S3's (ureq, the agent, a response's buffers),
/// with Shared Key's code pages instead of SigV4's. Measured the same as S3's: a wal-fetch of
/// a 16 MiB segment from Azurite peaked at 6.2–6.7 MiB, from s3s-fs at 6.4–6.5 MiB, and a
/// wal-push at 6.7–6.8 MiB against 7.0 MiB, at the same settings.
pub const AZURE_CLIENT: u64 = 1536 * KIB;

/// The GCS client once per process: ureq, the JSON answers' parsing, the agent and a
/// response's buffers. Measured 0.9–1.4 MiB (a wal-fetch or wal-push of a 16 MiB segment on
/// fake-gcs-server without credentials, minus the same on files).
pub const GCS_CLIENT: u64 = 1536 * KIB;

/// With a service-account key file, the token grant on top: the key's parsing, ring's RSA
/// signing code, the JWT and the token endpoint's answer. Measured 0.4–1.0 MiB more than
/// the same command without credentials.
pub const GCS_KEY_SIGNING: u64 = 1024 * KIB;

/// The storage client a command carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Files: no client.
    Local,
    /// S3.
    S3,
    /// Azure Blob Storage.
    Azure,
    /// Google Cloud Storage; `key_file` when a service-account key signs token requests.
    Gcs {
        /// `GOOGLE_APPLICATION_CREDENTIALS` is set.
        key_file: bool,
    },
}

impl Client {
    /// The client's terms of the formula.
    fn terms(self) -> Vec<(&'static str, u64)> {
        match self {
            Client::Local => vec![],
            Client::S3 => vec![("s3_client", S3_CLIENT)],
            Client::Azure => vec![("azure_client", AZURE_CLIENT)],
            Client::Gcs { key_file } => {
                let mut t = vec![("gcs_client", GCS_CLIENT)];
                if key_file {
                    t.push(("gcs_key_signing", GCS_KEY_SIGNING));
                }
                t
            }
        }
    }
}

/// Resident part of a worker's stack. The full `WORKER_STACK` is reserved (virtual); our
/// workers keep buffers on the heap, so few stack pages are ever touched.
pub const STACK_RESIDENT: u64 = 64 * KIB;

/// One HTTP connection's state in ureq (buffered reader and writer, pool entry, headers).
pub const HTTP_CONNECTION: u64 = 48 * KIB;

/// One TLS session's state in rustls (record buffers both ways, handshake, keys).
pub const TLS_CONNECTION: u64 = 96 * KIB;

/// The parsed system CA roots, held once per process when the endpoint is HTTPS.
pub const TLS_ROOTS: u64 = 768 * KIB;

/// Address space of each thread we start beyond its `WORKER_STACK`: the guard page(s) below
/// it (4 KiB in glibc, 8 KiB in musl), and the thread's TLS block and descriptor (inside the
/// stack mapping in glibc, added to it in musl). Measured 4 KiB (glibc) and 12–16 KiB (musl).
pub const THREAD_OVERHEAD: u64 = 32 * KIB;

/// Growth allowed to the main thread's stack beyond the mapping the kernel set up (132 KiB
/// with a small environment). Measured: the main stack never grew past 132 KiB.
pub const MAIN_STACK_GROWTH: u64 = 256 * KIB;

/// Heap before any transfer: std's runtime, argv and environment copies, the settings, the
/// storage client, the allocator's own bookkeeping, and the main thread's static TLS that
/// ld.so maps. Measured 0.1–0.5 MiB.
pub const HEAP_BASE: u64 = MIB;

/// Fixed part of the slack the allocators add to the heap: the free tail glibc keeps at the
/// top of its heap (`M_TRIM_THRESHOLD`, `M_TOP_PAD`: 128 KiB each) and partly used groups of
/// musl's mallocng.
pub const MALLOC_OVERHEAD_FIXED: u64 = 512 * KIB;

/// Proportional part of the slack, as a shift: a quarter of the heap terms. Covers musl's
/// size classes (a 64 KiB buffer takes 73 KiB, up to a quarter more for other sizes), glibc's
/// page rounding of mapped buffers (68 KiB for 64 KiB) and fragmentation of its heap by
/// threads that allocate and free concurrently (measured up to 1/8).
pub const MALLOC_OVERHEAD_SHIFT: u32 = 2;

/// glibc's `M_MMAP_THRESHOLD`, fixed by [`configure_malloc`]: allocations of this size and
/// more (every arena buffer and codec window) get their own mapping and give it back when
/// freed, so they never fragment the heap; only small allocations share it. Setting it also
/// stops glibc from raising it each time such a buffer is freed, which would move big
/// buffers into the heap, where freed memory stays mapped.
pub const MALLOC_MMAP_THRESHOLD: usize = 64 * 1024;

/// Libraries a dynamically linked build may load after start, so after `/proc/self/maps`
/// was read: NSS modules that glibc's `getaddrinfo` and `getpwuid` open as
/// `/etc/nsswitch.conf` asks (`libnss_resolve`, `libnss_myhostname`, `libnss_systemd`, ...:
/// 0.1–0.4 MiB each). Debian's `files dns` needs none (both are inside libc since glibc 2.34);
/// a static build has no such loader.
pub const RUNTIME_LIBRARIES: u64 = MIB;

/// Sets up glibc's malloc the way the virtual formula assumes: one arena for all threads
/// (`M_ARENA_MAX`; every extra arena would reserve 64 MiB of address space and keep its own
/// free memory) and a fixed mmap threshold (`M_MMAP_THRESHOLD`). Call first thing in `main`,
/// before any thread starts. musl's allocator needs neither.
pub fn configure_malloc() {
    crate::sys::configure_malloc(MALLOC_MMAP_THRESHOLD);
}

pub use super::image::{IMAGE_FALLBACK, Image, image, parse_maps};

#[path = "plan_daemon.rs"]
mod daemon_plan;
pub use daemon_plan::{
    DAEMON_BOOKKEEPING, DAEMON_CONNECTIONS, DAEMON_REQUEST_BUFFER, daemon,
    daemon_background_workers,
};

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
    /// The storage client (none for local files).
    pub client: Client,
    /// `WALG_S3_MAX_PART_SIZE`, `AZURE_BUFFER_SIZE` or `GCS_MAX_CHUNK_SIZE` (0 for file
    /// storage).
    pub part_size: u64,
    /// Parts a streamed upload asks to send at once: `WALG_UPLOAD_CONCURRENCY` on S3,
    /// `AZURE_MAX_BUFFERS` on Azure.
    pub part_uploaders: usize,
    /// Heap of one stream's encryption or decryption (0 without encryption).
    pub crypto_state: u64,
    /// Resident memory the crypter costs once per process (0 without encryption).
    pub crypto_process: u64,
    /// `WALG_DELTA_MAX_STEPS` > 0: backup-push may take a delta.
    pub delta: bool,
    /// `WALG_PG_WAL_SIZE` in bytes: wal-receive holds whole segments.
    pub wal_segment_size: u64,
    /// `WALG_ALIVE_CHECK_INTERVAL` > 0: backup-push's alive check (a session and a thread).
    pub alive_check: bool,
}

impl PlanInput {
    /// Whether storage is remote (a cloud) rather than local files.
    pub fn remote(&self) -> bool {
        self.client != Client::Local
    }
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

/// Sparse index of one backup's `Files` kept while a delta is taken or a chain restored:
/// 16 bytes per 256 files, so this covers four million files.
pub const FILES_INDEX_KEPT: u64 = 256 * KIB;

/// One page bitmap of a delta: a bit per page of a 1 GiB relation segment.
pub const PAGE_BITMAP: u64 = 16 * KIB;

/// A delta backup's bookkeeping: building the base's `Files` index (one sorted run, the
/// merge buffers), keeping it, the page scan's buffer and one page bitmap.
pub const DELTA_PUSH: u64 = super::file_index::BUILD_BYTES
    + FILES_INDEX_KEPT
    + super::delta::SCAN_BUFFER as u64
    + PAGE_BITMAP;

/// A delta chain's restore: building one backup's `Files` index while the newest one's is
/// kept, and both kept.
pub const DELTA_CHAIN_INDEXES: u64 = super::file_index::BUILD_BYTES + 2 * FILES_INDEX_KEPT;

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
    /// The address-space formula's terms: image, stacks in full, heap.
    pub virtual_components: Vec<Term>,
    /// Sum of `virtual_components`: the most address space (`VmPeak`, what `ulimit -v`
    /// limits) the command may map.
    pub peak_virtual_bytes: u64,
    /// Heap terms of buffers mapped on their own (see `add_mapped`).
    #[serde(skip)]
    mapped_bytes: u64,
    #[serde(skip)]
    mapped_count: u64,
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
            virtual_components: Vec::new(),
            peak_virtual_bytes: 0,
            mapped_bytes: 0,
            mapped_count: 0,
        }
    }

    /// A heap term: resident and virtual alike.
    fn add(&mut self, name: &'static str, count: u64, each_bytes: u64) {
        self.add_rss_only(name, count, each_bytes);
        self.add_virtual(name, count, each_bytes);
    }

    /// A heap term made of buffers big enough to be mapped on their own (part buffers): the
    /// allocator adds a page each, not a share of their size.
    fn add_mapped(&mut self, name: &'static str, count: u64, each_bytes: u64) {
        self.add(name, count, each_bytes);
        if each_bytes > 0 {
            self.mapped_bytes += count * each_bytes;
            self.mapped_count += count;
        }
    }

    /// A term of the resident formula only (its virtual counterpart is counted another way).
    fn add_rss_only(&mut self, name: &'static str, count: u64, each_bytes: u64) {
        Self::push(
            &mut self.components,
            &mut self.peak_rss_bytes,
            name,
            count,
            each_bytes,
        );
    }

    fn add_virtual(&mut self, name: &'static str, count: u64, each_bytes: u64) {
        Self::push(
            &mut self.virtual_components,
            &mut self.peak_virtual_bytes,
            name,
            count,
            each_bytes,
        );
    }

    fn push(
        terms: &mut Vec<Term>,
        total: &mut u64,
        name: &'static str,
        count: u64,
        each_bytes: u64,
    ) {
        if count == 0 || each_bytes == 0 {
            return;
        }
        terms.push(Term {
            name,
            count,
            each_bytes,
            bytes: count * each_bytes,
        });
        *total += count * each_bytes;
    }

    /// Completes the virtual formula once every heap term is in: the image, the stacks in
    /// full, the heap base and the allocator's slack.
    fn finish(mut self) -> CommandPlan {
        let heap: u64 = self.peak_virtual_bytes;
        let image = image();
        let mut terms = Vec::new();
        let mut total = 0;
        Self::push(&mut terms, &mut total, "executable", 1, image.executable);
        Self::push(
            &mut terms,
            &mut total,
            "shared_libraries",
            1,
            image.shared_libraries,
        );
        if image.shared_libraries > 0 {
            Self::push(
                &mut terms,
                &mut total,
                "runtime_libraries",
                1,
                RUNTIME_LIBRARIES,
            );
        }
        Self::push(&mut terms, &mut total, "kernel_vdso_vvar", 1, image.kernel);
        Self::push(
            &mut terms,
            &mut total,
            "main_stack",
            1,
            image.main_stack + MAIN_STACK_GROWTH,
        );
        Self::push(
            &mut terms,
            &mut total,
            "thread_stacks",
            self.threads.saturating_sub(1),
            crate::pipeline::workers::WORKER_STACK as u64 + THREAD_OVERHEAD,
        );
        Self::push(&mut terms, &mut total, "heap_base", 1, HEAP_BASE);
        terms.append(&mut self.virtual_components);
        self.virtual_components = terms;
        self.peak_virtual_bytes += total;
        let shared = heap - self.mapped_bytes + HEAP_BASE;
        let overhead =
            MALLOC_OVERHEAD_FIXED + (shared >> MALLOC_OVERHEAD_SHIFT) + self.mapped_count * PAGE;
        self.add_virtual("malloc_overhead", 1, overhead);
        self
    }

    fn add_common(&mut self, input: &PlanInput, connections: u64) {
        self.add_rss_only("process_base", 1, PROCESS_BASE);
        self.add_rss_only("thread_stacks", self.threads, STACK_RESIDENT);
        // Code pages: the executable's mapping is already counted in full as virtual.
        self.add_rss_only("crypto_code", 1, input.crypto_process);
        self.add("arena", self.arena_buffers as u64, IO_BUFFER as u64);
        if input.remote() {
            for (name, bytes) in input.client.terms() {
                self.add(name, 1, bytes);
            }
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
    p.add("crypto_state", uploaders, input.crypto_state);
    // The digest pass hashes the encoder's output where it is made (`CompressedFile`); it
    // has no buffer of its own.
    p.finish()
}

#[path = "plan_receive.rs"]
mod receive_plan;
pub use receive_plan::{wal_receive, wal_receive_segments, wal_receive_uploaders};

/// `wal-fetch` of one file written with the configured method.
pub fn wal_fetch(input: &PlanInput) -> CommandPlan {
    let mut p = CommandPlan::new("wal-fetch", 1, 1, 1);
    p.add_common(input, 1);
    p.add(
        "decoder_state",
        1,
        codec::decoder_state_bytes_own(input.encode),
    );
    p.add("crypto_state", 1, input.crypto_state);
    p.finish()
}

/// `WALG_DOWNLOAD_CONCURRENCY` worker threads, each downloading and decoding one object
/// through one arena buffer: the shape of both wal-prefetch and backup-fetch.
fn parallel_downloads(
    command: &'static str,
    input: &PlanInput,
    helpers: u64,
    extra: &[(&'static str, u64, u64)],
) -> CommandPlan {
    let workers = input.download_concurrency.max(1) as u64;
    let mut p = CommandPlan::new(command, 1 + workers + helpers, workers, workers as usize);
    p.add_common(input, workers);
    p.add(
        "decoder_state",
        workers,
        codec::decoder_state_bytes_own(input.encode),
    );
    p.add("crypto_state", workers, input.crypto_state);
    for &(name, count, each) in extra {
        p.add(name, count, each);
    }
    p.finish()
}

/// `wal-prefetch`: `WALG_DOWNLOAD_CONCURRENCY` segments downloaded at once.
pub fn wal_prefetch(input: &PlanInput) -> CommandPlan {
    parallel_downloads("wal-prefetch", input, 0, &[])
}

#[path = "plan_backup.rs"]
mod backup_plan;
pub use backup_plan::{backup_fetch, backup_push, backup_push_as, stream_parts};

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
        backup_push_as("backup-push-remote", input, true),
        backup_fetch(input),
        daemon(input),
        wal_receive(input),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Method, ZstdLevel};

    fn backup_push_remote(input: &PlanInput) -> CommandPlan {
        backup_push_as("backup-push-remote", input, true)
    }

    pub(super) fn defaults() -> PlanInput {
        PlanInput {
            encode: EncodeOptions {
                method: Method::Lz4,
                zstd_level: ZstdLevel::Default,
            },
            upload_concurrency: 16,
            download_concurrency: 10,
            bg_uploaded_limit: 32,
            https: false,
            client: Client::S3,
            part_size: 20 * MIB,
            part_uploaders: 16,
            crypto_state: 0,
            crypto_process: 0,
            delta: false,
            wal_segment_size: 16 * MIB,
            alive_check: true,
        }
    }

    #[test]
    fn terms_add_up() {
        for p in all(&defaults()) {
            let sum: u64 = p.components.iter().map(|t| t.bytes).sum();
            assert_eq!(sum, p.peak_rss_bytes, "{}", p.command);
            let sum: u64 = p.virtual_components.iter().map(|t| t.bytes).sum();
            assert_eq!(sum, p.peak_virtual_bytes, "{}", p.command);
            assert!(p.peak_virtual_bytes > p.peak_rss_bytes, "{}", p.command);
        }
    }

    #[test]
    fn virtual_counts_stacks_in_full_and_every_heap_term() {
        for p in all(&defaults()) {
            let term = |name: &str| {
                p.virtual_components
                    .iter()
                    .find(|t| t.name == name)
                    .map(|t| t.bytes)
            };
            let stacks =
                (p.threads - 1) * (crate::pipeline::workers::WORKER_STACK as u64 + THREAD_OVERHEAD);
            assert_eq!(term("thread_stacks").unwrap_or(0), stacks, "{}", p.command);
            for t in &p.components {
                if !["process_base", "thread_stacks", "crypto_code"].contains(&t.name) {
                    assert_eq!(term(t.name), Some(t.bytes), "{}: {}", p.command, t.name);
                }
            }
            assert!(term("executable").unwrap_or(0) > 0, "{}", p.command);
        }
    }

    #[test]
    fn maps_are_split_into_executable_libraries_and_kernel_pages() {
        let maps = "\
55f164aef000-55f164cc3000 r--p 00000000 fe:00 10071533                   /opt/wal rus/wal-rus
55f164cc3000-55f16507a000 r-xp 001d3000 fe:00 10071533                   /opt/wal rus/wal-rus
55f16509a000-55f16509b000 rw-p 005a8000 fe:00 10071533                   /opt/wal rus/wal-rus
55f16509b000-55f16509d000 rw-p 00000000 00:00 0 
55f17f5a4000-55f17f5c5000 rw-p 00000000 00:00 0                          [heap]
7fb2b72c7000-7fb2b72c9000 rw-p 00000000 00:00 0 
7fb2b72c9000-7fb2b72ef000 r--p 00000000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fb2b749c000-7fb2b749e000 rw-p 001d3000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6
7fb2b749e000-7fb2b74ab000 rw-p 00000000 00:00 0 
7fb2b74ab000-7fb2b74ac000 ---p 00000000 00:00 0 
7fb2b75b6000-7fb2b75ba000 r--p 00000000 00:00 0                          [vvar]
7fb2b75ba000-7fb2b75bc000 r--p 00000000 00:00 0                          [vvar_vclock]
7fb2b75bc000-7fb2b75be000 r-xp 00000000 00:00 0                          [vdso]
7ffdea61a000-7ffdea63b000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let image = parse_maps(maps, "/opt/wal rus/wal-rus");
        assert_eq!(image.executable, 0x1d4000 + 0x3b7000 + 0x1000 + 0x2000);
        assert_eq!(image.shared_libraries, 0x26000 + 0x2000 + 0xd000);
        assert_eq!(image.kernel, 0x4000 + 0x2000 + 0x2000);
        assert_eq!(image.main_stack, 0x21000);
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

    /// The crypter's code pages are resident once per process, whatever the thread count,
    /// and already inside the executable's mapping of the virtual formula.
    #[test]
    fn crypto_code_counts_once_and_as_resident_only() {
        let plain = defaults();
        let pgp = PlanInput {
            crypto_process: 3 * MIB,
            ..plain
        };
        for (a, b) in all(&plain).into_iter().zip(all(&pgp)) {
            assert_eq!(
                b.peak_rss_bytes - a.peak_rss_bytes,
                3 * MIB,
                "{}",
                a.command
            );
            assert_eq!(b.peak_virtual_bytes, a.peak_virtual_bytes, "{}", a.command);
        }
    }

    #[test]
    fn deltas_add_their_bookkeeping_and_nothing_that_grows() {
        let full = defaults();
        let delta = PlanInput {
            delta: true,
            ..full
        };
        let grew = backup_push(&delta).peak_rss_bytes - backup_push(&full).peak_rss_bytes;
        // The term and its share of the allocator's slack; no more than 2 MiB in all.
        assert!((DELTA_PUSH..2 * MIB).contains(&grew), "{grew}");
        assert!(
            backup_fetch(&full)
                .components
                .iter()
                .any(|t| t.name == "delta_chain_indexes")
        );
    }

    #[test]
    fn wal_receive_holds_whole_segments_and_no_more() {
        let mut i = defaults();
        let p = wal_receive(&i);
        assert_eq!((p.threads, p.transfers, p.arena_buffers), (4, 2, 4));
        let segments = p
            .components
            .iter()
            .find(|t| t.name == "wal_segments")
            .unwrap();
        assert_eq!((segments.count, segments.each_bytes), (3, 16 * MIB));
        assert!(p.peak_rss_bytes < 64 * MIB, "{}", p.peak_rss_bytes);
        i.upload_concurrency = 1;
        i.wal_segment_size = 64 * MIB;
        let p = wal_receive(&i);
        assert_eq!((p.threads, wal_receive_segments(&i)), (3, 2));
        assert!(p.peak_rss_bytes > 128 * MIB);
    }

    #[test]
    fn remote_backups_add_the_replication_buffer_and_the_alive_check_its_session() {
        let i = defaults();
        let local = backup_push(&i);
        let remote = backup_push_remote(&i);
        let term = |p: &CommandPlan, name: &str| {
            p.components
                .iter()
                .find(|t| t.name == name)
                .map(|t| (t.count, t.bytes))
        };
        assert_eq!(term(&local, "replication_messages"), None);
        assert_eq!(
            term(&remote, "replication_messages"),
            Some((1, crate::pg::base_backup::REPLICATION_MESSAGES))
        );
        assert_eq!(term(&remote, "postgres_session").unwrap().0, 2);
        assert_eq!(remote.threads, local.threads);
        let off = PlanInput {
            alive_check: false,
            ..i
        };
        assert_eq!(backup_push(&off).threads + 1, local.threads);
        assert_eq!(term(&backup_push(&off), "postgres_session").unwrap().0, 1);
        // A remote backup never takes a delta.
        let delta = PlanInput { delta: true, ..i };
        assert_eq!(
            backup_push_remote(&delta).peak_rss_bytes,
            remote.peak_rss_bytes
        );
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
