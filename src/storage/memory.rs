//! Objects in memory, for unit tests of the code above storage.
//!
//! Commands decide what to do from what storage answers: a missing object, a failure worth
//! retrying, a refusal, a body that breaks half-way. A real store produces those only by
//! accident, so [`MemStorage`] can be told to answer them on purpose, for the next calls of
//! one operation. It keeps the promises of the [`Storage`] trait that callers rely on, the
//! same as file storage: keys in order, non-recursive listings stop at `/`, a failed write
//! leaves nothing under its key, deleting what is absent is no error, and the leftovers of
//! writes that were killed (placed with [`MemStorage::leave_interrupted`]) are listed until
//! discarded.
//!
//! Not for production: the whole store is one lock and every object a copy in memory.

use super::{
    BodySource, Interrupted, ObjectMeta, ObjectReader, Op, PartBuffers, Storage, StorageError,
};
use crate::time::{PreciseTime, UtcTime};
use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::sync::{Arc, Mutex, MutexGuard};

/// What an injected failure looks like to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A failure worth retrying: the connection was reset (`StorageError::Transport`).
    Retryable,
    /// A permanent refusal: HTTP 403 `AccessDenied` (`StorageError::Remote`).
    Denied,
    /// The object is reported absent (`StorageError::NotFound`; `None` from `head`).
    Missing,
    /// `get` only: the object opens, and its body breaks with a reset after half its bytes.
    BrokenBody,
}

/// One stored object.
struct Object {
    data: Arc<[u8]>,
    modified: PreciseTime,
}

/// Failures still to be injected: the next `remaining` calls of `op` (on `key` only, when
/// given) fail with `fault`.
struct Rule {
    op: Op,
    key: Option<String>,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    interrupted: Vec<Interrupted>,
    rules: Vec<Rule>,
    calls: Vec<(Op, String)>,
}

/// A [`Storage`] in memory with injectable faults. Operations are named as file storage
/// names them: `Op::Put` (`put` and `put_stream`), `Op::Get`, `Op::Head`, `Op::List`,
/// `Op::Delete` (each key of `delete_many`).
///
/// Clones share one store, so a test keeps a handle on what a command it runs sees.
#[derive(Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemStorage")
    }
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the store is
        // still consistent, since every change under the lock is one insert or remove.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `count` calls of `op`, on any key, fail with `fault`.
    pub fn fail_next(&self, op: Op, count: usize, fault: Fault) {
        self.add_rule(op, None, count, fault);
    }

    /// Makes the next `count` calls of `op` on `key` (the prefix, for `list`) fail with
    /// `fault`.
    pub fn fail_next_on(&self, op: Op, key: &str, count: usize, fault: Fault) {
        self.add_rule(op, Some(key.to_string()), count, fault);
    }

    fn add_rule(&self, op: Op, key: Option<String>, remaining: usize, fault: Fault) {
        self.state().rules.push(Rule {
            op,
            key,
            remaining,
            fault,
        });
    }

    /// Every call so far, in order, as (operation, key or prefix).
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.state().calls.clone()
    }

    /// Every stored key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// The bytes stored under `key`.
    pub fn contents(&self, key: &str) -> Option<Vec<u8>> {
        let state = self.state();
        state.objects.get(key).map(|o| o.data.to_vec())
    }

    /// Sets the modification time of `key` (a new object is stamped with the clock), so
    /// tests of what orders by time need not sleep. Returns whether `key` exists.
    pub fn set_modified(&self, key: &str, modified: PreciseTime) -> bool {
        let mut state = self.state();
        let found = state.objects.get_mut(key);
        found.map(|o| o.modified = modified).is_some()
    }

    /// Leaves what a writer of `key` killed at `started` would have left behind.
    pub fn leave_interrupted(&self, key: &str, started: UtcTime) {
        let mut state = self.state();
        let id = format!("{key}.interrupted.{}", state.interrupted.len());
        state.interrupted.push(Interrupted {
            key: key.to_string(),
            id,
            started,
        });
    }

    /// Records the call and returns the fault to inject into it, if any.
    fn enter(&self, op: Op, key: &str) -> Option<Fault> {
        let mut state = self.state();
        state.calls.push((op, key.to_string()));
        let rule = state
            .rules
            .iter_mut()
            .find(|r| r.op == op && r.remaining > 0 && r.key.as_deref().is_none_or(|k| k == key))?;
        rule.remaining -= 1;
        Some(rule.fault)
    }

    fn store(&self, key: &str, data: Vec<u8>) -> u64 {
        let len = data.len() as u64;
        let object = Object {
            data: data.into(),
            modified: PreciseTime::from_system(std::time::SystemTime::now()),
        };
        self.state().objects.insert(normalize(key), object);
        len
    }
}

/// Keys as callers may spell them: file storage ignores a leading `/`, so does this.
fn normalize(key: &str) -> String {
    key.trim_start_matches('/').to_string()
}

/// The error a fault stands for.
fn injected(op: Op, key: &str, fault: Fault) -> StorageError {
    match fault {
        Fault::Retryable | Fault::BrokenBody => StorageError::Transport {
            op,
            key: key.to_string(),
            detail: "connection reset (injected)".into(),
        },
        Fault::Denied => StorageError::Remote {
            op,
            key: key.to_string(),
            status: 403,
            code: "AccessDenied".into(),
            message: "injected".into(),
        },
        Fault::Missing => StorageError::NotFound {
            key: key.to_string(),
        },
    }
}

/// A body that gives its first `until` bytes and then breaks, as a reset connection does.
struct BreaksAt {
    inner: Cursor<Arc<[u8]>>,
    until: u64,
}

impl Read for BreaksAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_sub(self.inner.position());
        if left == 0 {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let n = buf.len().min(left as usize);
        self.inner.read(&mut buf[..n])
    }
}

impl Storage for MemStorage {
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError> {
        if let Some(fault) = self.enter(Op::Put, key) {
            return Err(injected(Op::Put, key, fault));
        }
        let mut data = Vec::new();
        body.for_each_chunk(&mut |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .map_err(|e| StorageError::body_read(key, e))?;
        Ok(self.store(key, data))
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        _parts: &dyn PartBuffers,
        _concurrency: usize,
    ) -> Result<u64, StorageError> {
        if let Some(fault) = self.enter(Op::Put, key) {
            return Err(injected(Op::Put, key, fault));
        }
        let mut data = Vec::new();
        body.read_to_end(&mut data)
            .map_err(|e| StorageError::body_read(key, e))?;
        Ok(self.store(key, data))
    }

    fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let fault = self.enter(Op::Get, key);
        if let Some(f @ (Fault::Retryable | Fault::Denied | Fault::Missing)) = fault {
            return Err(injected(Op::Get, key, f));
        }
        let data = match self.state().objects.get(&normalize(key)) {
            Some(o) => o.data.clone(),
            None => return Err(injected(Op::Get, key, Fault::Missing)),
        };
        let until = data.len() as u64 / 2;
        let inner = Cursor::new(data);
        if fault == Some(Fault::BrokenBody) {
            return Ok(Box::new(BreaksAt { inner, until }));
        }
        Ok(Box::new(inner))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        match self.enter(Op::Head, key) {
            Some(Fault::Missing) => return Ok(None),
            Some(fault) => return Err(injected(Op::Head, key, fault)),
            None => {}
        }
        let state = self.state();
        Ok(state.objects.get(&normalize(key)).map(|o| ObjectMeta {
            key: key.to_string(),
            size: o.data.len() as u64,
            last_modified: o.modified,
        }))
    }

    fn list(
        &self,
        prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> Result<(), StorageError> {
        match self.enter(Op::List, prefix) {
            // An absent folder lists as empty, in every storage.
            Some(Fault::Missing) => return Ok(()),
            Some(fault) => return Err(injected(Op::List, prefix, fault)),
            None => {}
        }
        let prefix = normalize(prefix);
        // Collected first: `each` may call back into this storage.
        let found: Vec<ObjectMeta> = {
            let state = self.state();
            let under = state.objects.range(prefix.clone()..);
            under
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| recursive || !k[prefix.len()..].contains('/'))
                .map(|(k, o)| ObjectMeta {
                    key: k.clone(),
                    size: o.data.len() as u64,
                    last_modified: o.modified,
                })
                .collect()
        };
        found.into_iter().for_each(each);
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            match self.enter(Op::Delete, key) {
                Some(Fault::Missing) | None => {}
                Some(fault) => return Err(injected(Op::Delete, key, fault)),
            }
            self.state().objects.remove(&normalize(key));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory storage".to_string()
    }

    fn interrupted_writes(
        &self,
        prefix: &str,
        before: UtcTime,
    ) -> Result<Vec<Interrupted>, StorageError> {
        let prefix = normalize(prefix);
        let state = self.state();
        let found = state
            .interrupted
            .iter()
            .filter(|w| w.key.starts_with(&prefix) && w.started < before)
            .cloned()
            .collect();
        Ok(found)
    }

    fn discard_interrupted(&self, writes: &[Interrupted]) -> Result<(), StorageError> {
        let mut state = self.state();
        state
            .interrupted
            .retain(|w| !writes.iter().any(|d| d.id == w.id));
        Ok(())
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
