//! What every HTTP object store shares (S3, Google Cloud Storage, Azure Blob Storage): one
//! blocking agent with timeouts on every connection and a TLS trust list, bounded retries with
//! back-off and jitter, and the small helpers for answers and dates.
//!
//! The clouds differ in addressing, signing and error documents, which stay in their own
//! modules; how long to wait, how often to try again and what to trust must not differ.

pub mod agent;
pub mod answer;
pub mod body;
#[cfg(test)]
pub mod fake_server;
pub mod oauth;
pub mod parts;
pub mod reopen;
pub mod resume;
pub mod retry;
pub mod tls;
pub mod xml;

pub use agent::{AgentSettings, build_agent};
pub use answer::{
    Coalesced, Sent, closed_while_sending, describe_body, head_meta, listed, parse_http_date,
    parse_small, read_small_body, refused_like_probe, transport_detail,
};
pub use body::Body;
pub use retry::{Retrier, RetryPolicy};
