//! Azure Storage's Shared Key authorization, by hand: HMAC-SHA256 with the account key over
//! the verb, eleven standard headers, the `x-ms-*` headers and the resource, as Microsoft's
//! "Authorize with Shared Key" defines it for the Blob service (versions 2015-02-21 on: a
//! zero `Content-Length` is signed as empty). Also the percent-encoding of blob names and
//! query values, which the signature covers as sent.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

/// An account's name and key. `Debug` is written by hand so that logging a configuration
/// can never show the key.
#[derive(Clone)]
pub struct SharedKey {
    /// The storage account.
    pub account: String,
    /// The account key, decoded from its base64 form.
    pub key: Vec<u8>,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SharedKey {
    /// From the account key as the portal shows it (base64); `None` when it is not base64.
    pub fn new(account: &str, key_base64: &str) -> Option<SharedKey> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .ok()
            .filter(|k| !k.is_empty())?;
        Some(SharedKey {
            account: account.to_string(),
            key,
        })
    }

    /// `SharedKey ACCOUNT:SIGNATURE` for `req`.
    pub fn authorization(&self, req: &Request) -> String {
        let to_sign = string_to_sign(&self.account, req);
        format!("SharedKey {}:{}", self.account, self.sign(&to_sign))
    }

    /// Base64 of HMAC-SHA256 of `text` under the key.
    pub fn sign(&self, text: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// A request as Shared Key sees it.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The URL's path as sent (percent-encoded), e.g. `/container/wal_005/x.lz4`.
    pub path: &'a str,
    /// Query parameters, decoded.
    pub query: &'a [(String, String)],
    /// Headers with lower-case names, as sent.
    pub headers: &'a [(String, String)],
}

impl Request<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The standard headers of the string to sign, in its order.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The string Shared Key signs for `req` of `account`.
pub fn string_to_sign(account: &str, req: &Request) -> String {
    let mut out = format!("{}\n", req.method);
    for name in STANDARD_HEADERS {
        let value = req.header(name);
        // Since 2015-02-21 a zero length is signed as an empty line.
        if !(name == "content-length" && value == "0") {
            out.push_str(value);
        }
        out.push('\n');
    }
    let mut ms: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str(), v.trim()))
        .collect();
    ms.sort();
    for (k, v) in ms {
        out.push_str(&format!("{k}:{v}\n"));
    }
    out.push_str(&format!("/{account}{}", req.path));
    let mut query: Vec<(String, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    query.sort();
    let mut i = 0;
    while i < query.len() {
        let name = &query[i].0;
        let values: Vec<&str> = query[i..]
            .iter()
            .take_while(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .collect();
        out.push_str(&format!("\n{name}:{}", values.join(",")));
        i += values.len();
    }
    out
}

/// Percent-encodes `s` for a URL: everything but unreserved characters, and `/` too unless
/// `keep_slash` (blob names keep their folders).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azurite's published development account key.
    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Microsoft's own example in "Authorize with Shared Key": Get Container Metadata of
    /// `mycontainer` with a 20 s timeout.
    #[test]
    fn the_published_string_to_sign() {
        let headers = q(&[
            ("x-ms-version", "2015-02-21"),
            ("x-ms-date", "Fri, 26 Jun 2015 23:39:12 GMT"),
        ]);
        let query = q(&[
            ("restype", "container"),
            ("comp", "metadata"),
            ("timeout", "20"),
        ]);
        let req = Request {
            method: "GET",
            path: "/mycontainer",
            query: &query,
            headers: &headers,
        };
        assert_eq!(
            string_to_sign("myaccount", &req),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\n\
             x-ms-version:2015-02-21\n/myaccount/mycontainer\ncomp:metadata\n\
             restype:container\ntimeout:20"
        );
    }

    /// A Put Block of 5 bytes with its MD5, signed with the development key; the signature
    /// was computed independently (`openssl dgst -sha256 -mac HMAC -macopt hexkey:...`).
    #[test]
    fn a_signed_put_block() {
        let headers = q(&[
            ("content-length", "5"),
            ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
            ("x-ms-date", "Fri, 04 Dec 2026 03:25:05 GMT"),
            ("x-ms-version", "2021-08-06"),
        ]);
        let query = q(&[("comp", "block"), ("blockid", "AAAB")]);
        let req = Request {
            method: "PUT",
            path: "/devstoreaccount1/c1/wal_005/a%20b.lz4",
            query: &query,
            headers: &headers,
        };
        let to_sign = string_to_sign("devstoreaccount1", &req);
        assert_eq!(
            to_sign,
            "PUT\n\n\n5\nXUFAKrxLKna5cZ2REBfFkg==\n\n\n\n\n\n\n\n\
             x-ms-date:Fri, 04 Dec 2026 03:25:05 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/c1/wal_005/a%20b.lz4\nblockid:AAAB\ncomp:block"
        );
        let key = SharedKey::new("devstoreaccount1", DEV_KEY).unwrap();
        assert_eq!(
            key.authorization(&req),
            format!("SharedKey devstoreaccount1:{}", SIGNATURE)
        );
        assert!(!format!("{key:?}").contains("Eby8"));
    }

    /// See `a_signed_put_block`.
    const SIGNATURE: &str = "o0PQDPeXc3Ywr/2Uwghze/Nlzm3YBxHyJ+RmeatfSHg=";

    #[test]
    fn zero_length_is_signed_empty_and_repeated_parameters_join() {
        let headers = q(&[("content-length", "0")]);
        let query = q(&[("B", "2"), ("a", "x"), ("b", "1")]);
        let req = Request {
            method: "DELETE",
            path: "/c/k",
            query: &query,
            headers: &headers,
        };
        assert_eq!(
            string_to_sign("acct", &req),
            "DELETE\n\n\n\n\n\n\n\n\n\n\n\n/acct/c/k\na:x\nb:1,2"
        );
    }

    #[test]
    fn names_are_encoded_but_keep_their_folders() {
        assert_eq!(encode("wal_005/a b+c=", true), "wal_005/a%20b%2Bc%3D");
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert!(SharedKey::new("a", "not base64!").is_none());
    }
}
