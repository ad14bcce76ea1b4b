//! Fixed OS worker threads pulling jobs from a bounded channel.
//!
//! No async runtime: a stage is N named scoped threads with a planned stack size reading a
//! bounded crossbeam queue. The queue's bound keeps a producer from racing ahead of the
//! workers and holding memory for work not yet started; scoped threads let workers borrow
//! the command's storage and arena without reference counting.

use crossbeam_channel::Receiver;
use std::thread::{Scope, ScopedJoinHandle};

/// Stack size of the worker threads: the crate-wide `THREAD_STACK`.
pub const WORKER_STACK: usize = crate::sys::THREAD_STACK;

/// Starts one named thread with the planned stack.
pub fn spawn_named<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    name: String,
    f: F,
) -> std::io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    std::thread::Builder::new()
        .name(name)
        .stack_size(WORKER_STACK)
        .spawn_scoped(scope, f)
}

/// Starts `n` workers named `stage-N`, each running `work` on jobs from `jobs` until the
/// queue is closed (every sender dropped) and empty.
pub fn spawn_workers<'scope, 'env, J, F>(
    scope: &'scope Scope<'scope, 'env>,
    stage: &str,
    n: usize,
    jobs: Receiver<J>,
    work: &'scope F,
) -> std::io::Result<Vec<ScopedJoinHandle<'scope, ()>>>
where
    J: Send + 'scope,
    F: Fn(J) + Sync + 'scope,
{
    (0..n)
        .map(|i| {
            let rx = jobs.clone();
            spawn_named(scope, format!("{stage}-{i}"), move || {
                for job in rx.iter() {
                    work(job);
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn every_job_runs_once() {
        let sum = AtomicU32::new(0);
        let work = |x: u32| {
            sum.fetch_add(x, Ordering::Relaxed);
        };
        std::thread::scope(|s| {
            let (tx, rx) = crossbeam_channel::bounded(2);
            let handles = spawn_workers(s, "t", 3, rx, &work).unwrap();
            for i in 1..=100 {
                tx.send(i).unwrap();
            }
            drop(tx);
            for h in handles {
                h.join().unwrap();
            }
        });
        assert_eq!(sum.load(Ordering::Relaxed), 5050);
    }
}
