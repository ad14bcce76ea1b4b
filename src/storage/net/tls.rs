//! Which servers an HTTPS connection trusts: the system's CA store plus an extra bundle
//! (`WALG_S3_CA_CERT_FILE` for a private MinIO or Ceph with its own CA), with ring as the
//! only crypto provider so no other one is linked in.

use crate::storage::{Op, StorageError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The configurations built so far, by extra CA file: the storage client and the credential
/// services (STS, a container endpoint) share one root store instead of each loading the
/// system's (about 0.75 MiB) again, which the memory plan counts once.
static BUILT: Mutex<Vec<(Option<PathBuf>, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());

/// The TLS configuration: system roots plus the extra CA file, built on first HTTPS use and
/// shared after.
pub fn client_config(
    ca_file: Option<&std::path::Path>,
    setting: &str,
) -> Result<Arc<rustls::ClientConfig>, StorageError> {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = built.iter().find(|(f, _)| f.as_deref() == ca_file) {
        return Ok(c.clone());
    }
    let config = build(ca_file, setting)?;
    built.push((ca_file.map(PathBuf::from), config.clone()));
    Ok(config)
}

fn build(
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
