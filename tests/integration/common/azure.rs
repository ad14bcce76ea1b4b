//! Azure Blob Storage for the tests: Azurite 3.37.0's blob service on a loopback port, plain
//! HTTP, with the well-known development account.
//!
//! What it checks (tried by hand): Shared Key (`Authorization: SharedKey ACCOUNT:SIG`) and
//! SAS tokens (account and service SAS) are verified against the account key, a wrong key
//! or no auth at all gets 403 AuthorizationFailure; a missing `x-ms-version` is accepted.
//! `x-ms-version` up to 2026-06-06 is accepted; newer ones only thanks to
//! `--skipApiVersionCheck` (Azure itself accepts every older version, so the check only
//! ever refuses a client newer than the emulator). `--loose` is NOT given: it only lets
//! customer-provided encryption keys and `x-ms-range-get-content-crc64` through, which
//! Azurite cannot honour. Container names need 3-63 characters.
//!
//! Blobs are stored as Azurite's extents and a LokiJS database under the data dir, not as
//! plain files.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::emulator::Emulator;
use super::{Tool, require_or_fail};

/// Azurite's built-in account (its documentation publishes the key; it opens nothing real).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `x-ms-version` the helpers here send.
const API_VERSION: &str = "2021-08-06";

/// An Azurite blob service. Killed on drop.
pub struct AzureServer {
    /// `http://127.0.0.1:PORT/devstoreaccount1`: path-style, the account is the first segment.
    pub endpoint: String,
    pub port: u16,
    emulator: Emulator,
}

impl AzureServer {
    /// Starts one with no containers; `None` (after a `SKIP:` line) when azurite-blob is
    /// unavailable and tools are not required, a panic when they are (see `require_or_fail`).
    pub fn start(test: &str) -> Option<AzureServer> {
        let bin = require_or_fail(Tool::Azurite, test)?;
        let emulator = Emulator::start("azurite-blob", &bin, &[], |port, data| {
            [
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
                &data.display().to_string(),
                // By default Azurite sends usage data to Application Insights: no traffic
                // off this machine.
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ]
            .map(String::from)
            .to_vec()
        });
        Some(AzureServer {
            endpoint: format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", emulator.port),
            port: emulator.port,
            emulator,
        })
    }

    /// The connection string an Azure client is configured with.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};\
             AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.endpoint
        )
    }

    /// Creates container `name` (`PUT /ACCOUNT/NAME?restype=container`, Shared Key signed):
    /// true when made, false when it was there already (409); panics on any other failure.
    pub fn create_container(&self, name: &str) -> bool {
        let date = http_date(wal_rus::time::UtcTime::now());
        // Shared Key's string to sign: the verb, eleven standard headers (all empty here,
        // Content-Length too since it is 0), the x-ms-* headers, then the resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n\
             /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let result = ureq::put(&format!("{}/{name}?restype=container", self.endpoint))
            .set("x-ms-date", &date)
            .set("x-ms-version", API_VERSION)
            .set("Authorization", &shared_key(&to_sign))
            .send_bytes(&[]);
        match result {
            Ok(_) => true,
            Err(ureq::Error::Status(409, _)) => false,
            Err(e) => panic!("create Azure container {name}: {e}\n{}", self.log()),
        }
    }

    /// The server's log so far, one access-log line per request (for failure messages).
    pub fn log(&self) -> String {
        self.emulator.log()
    }
}

/// `SharedKey ACCOUNT:base64(HMAC-SHA256(key, to_sign))`.
fn shared_key(to_sign: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(AZURITE_KEY)
        .expect("the well-known key is base64");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!("SharedKey {AZURITE_ACCOUNT}:{sig}")
}

/// RFC 1123 date (`Fri, 04 Dec 2026 03:25:05 GMT`), the form `x-ms-date` takes.
fn http_date(t: wal_rus::time::UtcTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // rfc3339 is `YYYY-MM-DDTHH:MM:SSZ`; 1970-01-01 was a Thursday.
    let s = t.rfc3339();
    let month: usize = s[5..7].parse().expect("month");
    let weekday = DAYS[t.0.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {} {} {} {} GMT",
        &s[8..10],
        MONTHS[month - 1],
        &s[0..4],
        &s[11..19]
    )
}
