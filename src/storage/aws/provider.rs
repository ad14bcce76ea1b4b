//! The credentials every request is signed with, replaced before they expire.
//!
//! Fetching happens under a lock so that the upload threads of one backup ask STS or the
//! metadata service once, not once each; the lock is held only while the cached value is
//! stale. The clock is passed in, so refresh timing is tested without waiting.

use super::{Credentials, Expiring, Source};
use crate::storage::StorageError;
use crate::time::UtcTime;
use std::fmt;
use std::sync::Mutex;

/// Longest time before expiry at which credentials are replaced. The AWS SDKs refresh
/// between 5 and 15 minutes early; 5 minutes covers a slow request signed just before.
const REFRESH_BEFORE: i64 = 300;

/// A credential source and what it last gave.
pub struct CredentialProvider {
    source: Source,
    cached: Mutex<Option<Cached>>,
}

#[derive(Clone)]
struct Cached {
    value: Expiring,
    fetched: UtcTime,
}

impl Cached {
    /// Whether the value must be replaced at `now`: within [`REFRESH_BEFORE`] of expiry, or
    /// past half its lifetime when that is shorter (credentials that live a few minutes).
    fn stale(&self, now: UtcTime) -> bool {
        match self.value.expires {
            None => false,
            Some(exp) => {
                let lifetime = (exp.0 - self.fetched.0).max(0);
                let margin = REFRESH_BEFORE.min(lifetime / 2);
                now.0 >= exp.0 - margin
            }
        }
    }
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source holds paths, URLs and (for static keys) secrets; only its kind is shown.
        write!(f, "CredentialProvider({})", self.source.describe())
    }
}

impl CredentialProvider {
    /// A provider over `source`; nothing is fetched until the first request.
    pub fn new(source: Source) -> CredentialProvider {
        CredentialProvider {
            source,
            cached: Mutex::new(None),
        }
    }

    /// Fixed credentials (static keys, tests).
    pub fn fixed(credentials: Credentials) -> CredentialProvider {
        CredentialProvider::new(Source::Static(credentials))
    }

    /// Where the credentials come from, for messages (no secrets).
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The credentials to sign with now.
    pub fn current(&self) -> Result<Credentials, StorageError> {
        self.current_at(UtcTime::now(), &|s| s.fetch())
    }

    /// The credentials to sign with at `now`, fetching through `fetch` when the cached ones
    /// are missing or stale. A failed refresh while the old credentials are still valid
    /// keeps them (one more try at the next request) rather than failing the request.
    pub fn current_at(
        &self,
        now: UtcTime,
        fetch: &dyn Fn(&Source) -> Result<Expiring, StorageError>,
    ) -> Result<Credentials, StorageError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref().filter(|c| !c.stale(now)) {
            return Ok(c.value.credentials.clone());
        }
        match fetch(&self.source) {
            Ok(value) => {
                crate::devel!(
                    "AWS credentials from {}{}",
                    self.source.describe(),
                    value
                        .expires
                        .map(|t| format!(", valid until {}", t.rfc3339()))
                        .unwrap_or_default()
                );
                let credentials = value.credentials.clone();
                *cached = Some(Cached {
                    value,
                    fetched: now,
                });
                Ok(credentials)
            }
            Err(e) => match cached.as_ref() {
                Some(c) if c.value.expires.is_some_and(|exp| now.0 < exp.0) => {
                    crate::warn!(
                        "refreshing credentials from {} failed ({e}); the current ones are valid until {}",
                        self.source.describe(),
                        c.value.expires.map(|t| t.rfc3339()).unwrap_or_default()
                    );
                    Ok(c.value.credentials.clone())
                }
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn creds(id: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: "s".into(),
            session_token: Some("t".into()),
        }
    }

    #[test]
    fn refreshes_five_minutes_before_an_hour_long_expiry() {
        let p = CredentialProvider::fixed(creds("unused"));
        let calls = Cell::new(0);
        let fetch = |_: &Source| {
            calls.set(calls.get() + 1);
            Ok(Expiring {
                credentials: creds(&format!("K{}", calls.get())),
                expires: Some(UtcTime(1000 + 3600 * calls.get() as i64)),
            })
        };
        assert_eq!(
            p.current_at(UtcTime(1000), &fetch).unwrap().access_key_id,
            "K1"
        );
        assert_eq!(
            p.current_at(UtcTime(1000 + 3299), &fetch)
                .unwrap()
                .access_key_id,
            "K1"
        );
        assert_eq!(calls.get(), 1);
        // 300 s before the expiry at 4600: replaced.
        assert_eq!(
            p.current_at(UtcTime(4300), &fetch).unwrap().access_key_id,
            "K2"
        );
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn short_lived_credentials_are_replaced_at_half_life() {
        let p = CredentialProvider::fixed(creds("unused"));
        let calls = Cell::new(0);
        let fetch = |_: &Source| {
            calls.set(calls.get() + 1);
            Ok(Expiring {
                credentials: creds("K"),
                expires: Some(UtcTime(100 + 60)),
            })
        };
        p.current_at(UtcTime(100), &fetch).unwrap();
        p.current_at(UtcTime(129), &fetch).unwrap();
        assert_eq!(calls.get(), 1);
        p.current_at(UtcTime(130), &fetch).unwrap();
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_failed_refresh_keeps_valid_credentials_and_fails_expired_ones() {
        let p = CredentialProvider::fixed(creds("unused"));
        let ok = |_: &Source| {
            Ok(Expiring {
                credentials: creds("K"),
                expires: Some(UtcTime(1000)),
            })
        };
        let broken = |_: &Source| {
            Err(StorageError::Transport {
                op: crate::storage::Op::Credentials,
                key: String::new(),
                detail: "refused".into(),
            })
        };
        p.current_at(UtcTime(0), &ok).unwrap();
        assert_eq!(
            p.current_at(UtcTime(990), &broken).unwrap().access_key_id,
            "K"
        );
        assert!(p.current_at(UtcTime(1000), &broken).is_err());
    }

    #[test]
    fn static_credentials_are_fetched_once() {
        let p = CredentialProvider::fixed(creds("K"));
        let calls = Cell::new(0);
        let fetch = |s: &Source| {
            calls.set(calls.get() + 1);
            s.fetch()
        };
        for t in [0, 10_000, 1_000_000] {
            assert_eq!(p.current_at(UtcTime(t), &fetch).unwrap().access_key_id, "K");
        }
        assert_eq!(calls.get(), 1);
    }
}
