//! The bounded machine: a fixed arena of buffers, fixed OS worker threads fed by bounded
//! channels, and the memory plan that sizes both from the settings.

pub mod arena;
pub mod compress;
pub mod extract;
pub mod plan;
pub mod tar_stream;
pub mod workers;

/// glibc gives every thread its own 64 MiB malloc arena unless told otherwise; one shared
/// arena keeps resident and virtual memory what the plan says. musl has no such arenas.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
