//! The client API's TLS settings: the server certificate from
//! `api.tls_cert` and `api.tls_key`, rustls with the ring provider (as
//! everywhere in quorate). The connections are served by `api::accept`.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("api.tls_cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("api.tls_key {path}: {why}")]
    Key { path: String, why: String },
    #[error("api.tls_cert and api.tls_key do not make a usable TLS server: {0}")]
    Config(String),
}

/// The TLS server settings for the certificate chain and key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, HttpsError> {
    let cert_err = |why: String| HttpsError::Cert {
        path: cert.display().to_string(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(format!("cannot read a PEM certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("holds no certificate".into()));
    }
    // The error of a key file never quotes it.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| HttpsError::Key {
        path: key.display().to_string(),
        why: format!("cannot read a PEM private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| HttpsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
