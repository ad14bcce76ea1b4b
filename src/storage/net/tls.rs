//! Which servers an HTTPS connection trusts: the system's CA store plus an extra bundle
//! (`WALG_S3_CA_CERT_FILE` for a private MinIO or Ceph with its own CA), with ring as the
//! only crypto provider so no other one is linked in.

use crate::storage::{Op, StorageError};
use std::sync::Arc;

/// The TLS configuration, built on first HTTPS use: system roots plus the extra CA file.
pub fn client_config(
    ca_file: Option<&std::path::Path>,
    setting: &str,
) -> Result<Arc<rustls::ClientConfig>, StorageError> {
    let cfg_err = |detail: String| StorageError::Transport {
        op: Op::TlsSetup,
        key: String::new(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let data = std::fs::read(path)
            .map_err(|e| cfg_err(format!("reading {setting} {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &data[..]) {
            let cert = cert.map_err(|e| cfg_err(format!("{setting} {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| cfg_err(format!("{setting} {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(cfg_err(format!(
                "{setting} {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    if roots.is_empty() {
        return Err(cfg_err(format!(
            "no trusted CA certificates found (system store empty; set {setting})"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
