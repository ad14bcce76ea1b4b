//! TLS for the PostgreSQL connection (rustls), with libpq's `sslmode` semantics.
//!
//! libpq's `prefer` and `require` encrypt without checking who is at the other end, and
//! many servers run with self-signed certificates because of that; so those modes accept
//! any certificate (handshake signatures are still checked, and SCRAM channel binding
//! ties the login to the certificate actually seen). `verify-ca` checks the chain only,
//! `verify-full` the chain and the host name.

use super::error::PgError;
use super::params::SslMode;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate (libpq's `require`/`prefer`) but still checks that the server
/// holds the key of the certificate it showed.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root, whatever name the certificate carries.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the name only after the chain, so a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Trusted roots for the verify modes: the PEM file `rootcert` (or the system store when it
/// is `None` or the word `system`).
fn roots(rootcert: Option<&Path>) -> Result<RootCertStore, PgError> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        Some(path) if path != Path::new("system") => {
            let data = std::fs::read(path).map_err(|e| {
                PgError::Tls(format!(
                    "reading PGSSLROOTCERT {}: {}",
                    path.display(),
                    super::error::io_text(&e)
                ))
            })?;
            for cert in rustls_pemfile::certs(&mut &data[..]) {
                let cert = cert
                    .map_err(|e| PgError::Tls(format!("PGSSLROOTCERT {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| PgError::Tls(format!("PGSSLROOTCERT {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(PgError::Tls(format!(
                    "PGSSLROOTCERT {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(PgError::Tls(
                    "no trusted CA certificates in the system store; set PGSSLROOTCERT".to_string(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The rustls client configuration for `mode`.
pub(crate) fn client_config(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, PgError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(format!("configuring TLS: {e}")))?;
    let config = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(rootcert)?), provider)
                    .build()
                    .map_err(|e| {
                        PgError::Tls(format!("configuring certificate verification: {e}"))
                    })?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner: verifier }))
                    .with_no_client_auth()
            }
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name the certificate is checked against (and sent as SNI for DNS names).
pub(crate) fn server_name(host: &str, mode: SslMode) -> Result<ServerName<'static>, PgError> {
    match ServerName::try_from(host.to_string()) {
        Ok(name) => Ok(name),
        Err(_) if mode != SslMode::VerifyFull => {
            // The name is not checked in these modes; any syntactically valid one will do.
            Ok(ServerName::try_from("localhost").expect("valid DNS name"))
        }
        Err(e) => Err(PgError::Tls(format!(
            "host {host:?} cannot be verified against a certificate: {e}"
        ))),
    }
}

/// `tls-server-end-point` channel-binding data (RFC 5929) for the server certificate `der`:
/// its hash under the certificate's signature hash, SHA-256 for MD5/SHA-1.
///
/// `None` for signature algorithms without a single hash (Ed25519, RSA-PSS): the login then
/// goes ahead without channel binding, as PostgreSQL itself allows.
pub(crate) fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    let oid = signature_algorithm_oid(der)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    enum Hash {
        S256,
        S384,
        S512,
    }
    let hash = if let Some(last) = oid.strip_prefix(RSA) {
        match last {
            [0x04] | [0x05] | [0x0b] => Hash::S256, // md5, sha1, sha256 WithRSAEncryption
            [0x0c] => Hash::S384,
            [0x0d] => Hash::S512,
            _ => return None,
        }
    } else if let Some(last) = oid.strip_prefix(ECDSA_SHA2) {
        match last {
            [0x02] => Hash::S256,
            [0x03] => Hash::S384,
            [0x04] => Hash::S512,
            _ => return None,
        }
    } else if oid == ECDSA_SHA1 {
        Hash::S256
    } else {
        return None;
    };
    Some(match hash {
        Hash::S256 => sha2::Sha256::digest(der).to_vec(),
        Hash::S384 => sha2::Sha384::digest(der).to_vec(),
        Hash::S512 => sha2::Sha512::digest(der).to_vec(),
    })
}

/// One DER element of `input`: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The OID (contents bytes) of `Certificate.signatureAlgorithm`.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, cert, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_tbs_tag, _tbs, rest) = der_element(cert)?;
    let (tag, alg, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_element(alg)?;
    (tag == OID).then_some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signature_algorithm() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID sha256WithRSAEncryption, NULL }, BIT STRING }
        let cert = [
            0x30, 0x14, 0x30, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
            0x01, 0x01, 0x0b, 0x05, 0x00, 0x03, 0x01, 0x00,
        ];
        assert_eq!(signature_algorithm_oid(&cert), Some(&cert[8..17]));
        let hash = end_point_hash(&cert).unwrap();
        use sha2::Digest;
        assert_eq!(hash, sha2::Sha256::digest(cert).to_vec());
        assert_eq!(end_point_hash(&cert[..10]), None);
    }

    #[test]
    fn names_for_unverified_modes_never_fail() {
        assert!(server_name("127.0.0.1", SslMode::VerifyFull).is_ok());
        assert!(server_name("db.example", SslMode::VerifyFull).is_ok());
        assert!(server_name("bad_host name", SslMode::Require).is_ok());
        assert!(server_name("bad_host name", SslMode::VerifyFull).is_err());
    }
}
