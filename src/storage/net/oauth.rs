//! Bearer tokens as every cloud hands them out (OAuth2 token endpoints, metadata and
//! managed-identity services): the answer read, whatever form its lifetime takes, and a
//! cache that replaces a token before it expires, so a backup that runs for hours never
//! sends a stale one.
//!
//! The cache takes the time as an argument, so tests can move it; a token is replaced once
//! less than [`REFRESH_MARGIN`] (or half its lifetime, for short ones) is left, and at once
//! when the store refuses it (a revoked or rotated token).

use crate::storage::net::{describe_body, read_small_body, transport_detail};
use crate::storage::{Op, StorageError};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::sync::Mutex;

/// Seconds before expiry at which a token is replaced.
pub const REFRESH_MARGIN: i64 = 300;

/// A `u64` that may come as a JSON string or a number (Azure's managed identity and GCS's
/// `int64` fields send strings).
pub fn u64_loose<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Num(u64),
        Text(String),
    }
    match Loose::deserialize(d)? {
        Loose::Num(n) => Ok(n),
        Loose::Text(s) => s.trim().parse().map_err(de::Error::custom),
    }
}

fn opt_u64_loose<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64_loose(d).map(Some)
}

/// An OAuth2 token answer.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The bearer token. Deliberately not `Debug`.
    pub access_token: String,
    /// Seconds it stays valid.
    #[serde(default, deserialize_with = "opt_u64_loose")]
    pub expires_in: Option<u64>,
    /// When it expires, Unix seconds (App Service's managed identity sends only this).
    #[serde(default, deserialize_with = "opt_u64_loose")]
    pub expires_on: Option<u64>,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: String,
}

/// An OAuth2 error answer: `{"error": "invalid_grant", "error_description": "..."}`. Its
/// words are the provider's and hold no secret.
#[derive(Debug, Deserialize)]
pub struct TokenError {
    /// The error code.
    pub error: String,
    /// Its description.
    #[serde(default)]
    pub error_description: String,
}

/// A token and when to stop using it.
struct Cached {
    token: String,
    refresh_at: i64,
}

/// The current token, shared by every thread of a command.
#[derive(Default)]
pub struct TokenCache {
    current: Mutex<Option<Cached>>,
}

/// What a fetch returns: the token and its lifetime in seconds.
pub type Fetched = (String, u64);

impl TokenCache {
    /// The token to send at `now` (Unix seconds): the kept one while it is fresh, else a new
    /// one from `fetch`. Threads that need one meanwhile wait for the same fetch.
    pub fn get(
        &self,
        now: i64,
        fetch: &mut dyn FnMut(i64) -> Result<Fetched, StorageError>,
    ) -> Result<String, StorageError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = current.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = fetch(now)?;
        let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX / 2);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *current = Some(Cached {
            token: token.clone(),
            refresh_at: now.saturating_add(lifetime - margin),
        });
        Ok(token)
    }

    /// Forgets the kept token (the store refused it).
    pub fn invalidate(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A failure to get a token that another try will not cure.
pub fn fail(what: &str, detail: String) -> StorageError {
    StorageError::Io {
        op: Op::Credentials,
        key: what.to_string(),
        source: std::io::Error::other(detail),
    }
}

/// Reads a token answer received at `now`, or says why there was none; `off_cloud` is the
/// hint for a service that cannot be reached at all (a metadata service off its cloud).
pub fn token_answer(
    answer: Result<ureq::Response, ureq::Error>,
    what: &str,
    off_cloud: Option<&str>,
    now: i64,
) -> Result<Fetched, StorageError> {
    let resp = match answer {
        Ok(resp) => resp,
        Err(ureq::Error::Status(status, resp)) => {
            let body = read_small_body(resp, Op::Credentials, what).unwrap_or_default();
            let (code, message) = match serde_json::from_slice::<TokenError>(&body) {
                Ok(e) => (e.error, e.error_description),
                Err(_) => ("(no OAuth2 error document)".into(), describe_body(&body)),
            };
            return Err(StorageError::Remote {
                op: Op::Credentials,
                key: what.to_string(),
                status,
                code,
                message,
            });
        }
        // Off its cloud a metadata service's name does not resolve or its address does not
        // answer: no retry helps.
        Err(ureq::Error::Transport(t))
            if off_cloud.is_some()
                && matches!(
                    t.kind(),
                    ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed
                ) =>
        {
            return Err(fail(
                what,
                format!("{} ({})", transport_detail(&t), off_cloud.unwrap_or("")),
            ));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(StorageError::Transport {
                op: Op::Credentials,
                key: what.to_string(),
                detail: transport_detail(&t),
            });
        }
    };
    let body = read_small_body(resp, Op::Credentials, what)?;
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| StorageError::Garbled {
        op: Op::Credentials,
        key: what.to_string(),
        detail: format!("not a token answer ({e})"),
    })?;
    if answer.access_token.is_empty()
        || !(answer.token_type.is_empty() || answer.token_type.eq_ignore_ascii_case("bearer"))
    {
        return Err(fail(
            what,
            format!(
                "answer holds no bearer token (type {:?})",
                answer.token_type
            ),
        ));
    }
    let lifetime = match (answer.expires_in, answer.expires_on) {
        (Some(s), _) => s,
        (None, Some(on)) => on.saturating_sub(u64::try_from(now).unwrap_or(0)),
        (None, None) => {
            return Err(fail(
                what,
                "answer says nothing of the token's lifetime".into(),
            ));
        }
    };
    Ok((answer.access_token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn tokens_are_kept_until_shortly_before_they_expire() {
        let cache = TokenCache::default();
        let fetches = Cell::new(0);
        let mut fetch = |now: i64| {
            fetches.set(fetches.get() + 1);
            Ok((format!("t{}@{now}", fetches.get()), 3600))
        };
        assert_eq!(cache.get(1000, &mut fetch).unwrap(), "t1@1000");
        // Kept for 3600 s less the 300 s margin.
        assert_eq!(cache.get(1001, &mut fetch).unwrap(), "t1@1000");
        assert_eq!(cache.get(1000 + 3299, &mut fetch).unwrap(), "t1@1000");
        assert_eq!(fetches.get(), 1);
        // The hour mark of a long backup: replaced before it is refused.
        assert_eq!(cache.get(1000 + 3300, &mut fetch).unwrap(), "t2@4300");
        assert_eq!(cache.get(4400, &mut fetch).unwrap(), "t2@4300");
        assert_eq!(fetches.get(), 2);
        cache.invalidate();
        assert_eq!(cache.get(4401, &mut fetch).unwrap(), "t3@4401");
    }

    #[test]
    fn short_lived_tokens_are_replaced_at_half_life() {
        let cache = TokenCache::default();
        let mut n = 0;
        let mut fetch = |_now: i64| {
            n += 1;
            Ok((format!("t{n}"), 60))
        };
        assert_eq!(cache.get(0, &mut fetch).unwrap(), "t1");
        assert_eq!(cache.get(29, &mut fetch).unwrap(), "t1");
        assert_eq!(cache.get(30, &mut fetch).unwrap(), "t2");
    }

    #[test]
    fn a_failed_fetch_keeps_nothing_and_is_tried_again() {
        let cache = TokenCache::default();
        let mut fail_next = true;
        let mut fetch = |_now: i64| {
            if std::mem::take(&mut fail_next) {
                Err(fail("token", "refused".into()))
            } else {
                Ok(("good".into(), 3600))
            }
        };
        assert!(cache.get(0, &mut fetch).is_err());
        assert_eq!(cache.get(1, &mut fetch).unwrap(), "good");
    }

    #[test]
    fn lifetimes_come_as_numbers_strings_or_an_expiry_time() {
        let parse = |s: &str| serde_json::from_str::<TokenAnswer>(s).unwrap();
        let a = parse(r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#);
        assert_eq!(
            (a.access_token.as_str(), a.expires_in),
            ("ya29.x", Some(3599))
        );
        let b = parse(r#"{"access_token":"t","expires_in":"86399","expires_on":"1700000000"}"#);
        assert_eq!(
            (b.expires_in, b.expires_on),
            (Some(86399), Some(1_700_000_000))
        );
        let c = parse(r#"{"access_token":"t","expires_on":1700000000}"#);
        assert_eq!((c.expires_in, c.expires_on), (None, Some(1_700_000_000)));
        let e: TokenError =
            serde_json::from_str(r#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#)
                .unwrap();
        assert_eq!(e.error, "invalid_grant");
    }
}
