//! The blocking HTTP agent every cloud client sends through.

use crate::storage::StorageError;
use std::path::PathBuf;
use std::time::Duration;

/// How connections are made: the same settings for every cloud.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read or write on the connection.
    pub io_timeout: Duration,
    /// Extra CA bundle trusted besides the system's (`WALG_S3_CA_CERT_FILE`, `AWS_CA_BUNDLE`).
    pub ca_cert_file: Option<PathBuf>,
    /// The setting that named `ca_cert_file`, for messages.
    pub ca_setting: &'static str,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            ca_cert_file: None,
            ca_setting: "WALG_S3_CA_CERT_FILE",
        }
    }
}

/// An agent with the timeouts, no redirects (a redirect would carry a signature elsewhere),
/// and, for HTTPS, the trust list of `settings`.
pub fn build_agent(settings: &AgentSettings, https: bool) -> Result<ureq::Agent, StorageError> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(settings.connect_timeout)
        .timeout_read(settings.io_timeout)
        .timeout_write(settings.io_timeout)
        .max_idle_connections(4)
        .redirects(0)
        .user_agent(concat!("wal-rus/", env!("CARGO_PKG_VERSION")));
    if https {
        builder = builder.tls_config(super::tls::client_config(
            settings.ca_cert_file.as_deref(),
            settings.ca_setting,
        )?);
    }
    Ok(builder.build())
}
