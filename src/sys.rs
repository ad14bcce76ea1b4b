//! The operating system calls that Rust's standard library and rustix do not offer safely.
//!
//! This is the only module allowed `unsafe` (the crate root denies it everywhere else), so
//! that every promise made to the kernel or libc can be read and checked in one sitting.
//! Each function is a leaf: it takes plain values and imports nothing from the crate.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// Stack size of every thread wal-rus starts (workers, part uploaders, scanners). Sized on
/// purpose: Rust's 2 MiB default counts in full against an address-space limit, and our
/// threads keep their buffers on the heap (the arena). `memory-plan` counts it per thread.
pub const THREAD_STACK: usize = 256 * 1024;

/// Name and home directory of the effective OS user (`getpwuid_r`): libpq's default user
/// name, and where WAL-G looks for its config file.
pub fn os_account() -> Option<(String, String)> {
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes we pass; the strings
    // it points `pwd` at live in `buf`, which outlives their use below. A zeroed `passwd` is
    // a valid value of that plain C struct (null pointers, zero ids).
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned();
        let home = if pwd.pw_dir.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(pwd.pw_dir)
                .to_string_lossy()
                .into_owned()
        };
        Some((name, home))
    }
}

/// Sets up glibc's malloc the way the memory plan's virtual formula assumes: one arena for
/// all threads (every extra arena would reserve 64 MiB of address space and keep its own
/// free memory) and a fixed mmap threshold. Call first thing in `main`, before any thread
/// starts. musl's allocator needs neither.
pub fn configure_malloc(mmap_threshold: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists, so no allocation races with the change.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = mmap_threshold;
}

/// Gives the whole pages inside `buf` back to the kernel (`MADV_DONTNEED`): a returned
/// arena buffer then stops counting in RSS until it is written again.
pub fn release_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let end = (start + buf.len()) / PAGE * PAGE;
        if end > first {
            // SAFETY: [first, end) lies inside `buf`, which we borrow mutably, and is private
            // anonymous heap memory: after MADV_DONTNEED it reads back as zeros, valid bytes
            // for a u8 buffer. Advice only; a failure changes nothing.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk without
/// waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), as PostgreSQL's `*_flush_after`
/// settings do. Advice only: an error leaves the final fsync to do all the work.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: the descriptor is open for the borrow of `file`; the call takes plain integers
    // and touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Asks the kernel to drop a synced file's pages from the page cache, so that a large
/// restore or upload does not push the database's own pages out.
pub fn drop_cached(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// SO_KEEPALIVE, as libpq sets by default: without a read timeout, only keepalive notices a
/// server host that vanished.
pub fn set_keepalive(socket: &std::net::TcpStream) {
    let _ = rustix::net::sockopt::set_socket_keepalive(socket, true);
}

/// This host's name, as `gethostname` gives it (WAL-G's sentinel records it).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Starts `cmd` in a new session and forgets it, so that the signals PostgreSQL sends its
/// restore_command's process group do not reach a background helper.
pub fn spawn_detached(cmd: &mut std::process::Command) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only setsid, which
    // is async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().map(drop)
}

/// The termination signals (SIGTERM, SIGINT), blocked so that they no longer end the process
/// but wait to be taken by [`TermSignals::wait`]: a long-lived process (the daemon) then
/// finishes what it is doing before it exits.
#[derive(Clone, Copy)]
pub struct TermSignals(libc::sigset_t);

impl TermSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it starts
    /// afterwards (a new thread inherits its creator's mask). Call before starting threads.
    pub fn block() -> std::io::Result<TermSignals> {
        // SAFETY: a zeroed sigset_t is a valid value of that plain C type, and sigemptyset
        // initialises it before use; sigaddset and pthread_sigmask read and write only the
        // set we own and the calling thread's own signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(TermSignals(set))
        }
    }

    /// Waits at most `timeout` for one of the signals (`sigtimedwait`); its number, or
    /// `None` when none came.
    pub fn wait(&self, timeout: std::time::Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait reads the initialised set and the timespec we own, and is
        // given no siginfo pointer to write through.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}

/// Sends SIGTERM to this very process: a thread that must end a process whose termination
/// signals are blocked ([`TermSignals`]) wakes the thread that waits for them.
pub fn terminate_self() {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_and_host_are_known() {
        let (name, home) = os_account().expect("an account for this uid");
        assert!(!name.is_empty());
        assert!(home.starts_with('/'), "{home}");
        assert!(!hostname().is_empty());
    }

    #[test]
    fn released_pages_read_back_as_zeros() {
        let mut buf = vec![7u8; 64 * 1024];
        release_pages(&mut buf);
        // Only whole pages are released: the unaligned head and tail keep their bytes.
        let zeros = buf.iter().filter(|&&b| b == 0).count();
        assert!(zeros >= 60 * 1024, "{zeros}");
        assert!(buf.iter().all(|&b| b == 0 || b == 7));
    }
}
