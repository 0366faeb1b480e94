//! Service-to-service TLS with rustls: the server side of a listener (certificate chain and
//! key from PEM files) and the roots an outgoing client trusts (a CA bundle from a PEM file).
//! Nothing here makes or checks certificates by hand; rustls and webpki do all of it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The rustls configuration a listener serves HTTPS with. Errors name the file and what is
/// wrong with it, never the key material.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{} is not a PEM private key: {e}", key_file.display()))?;
    // The provider is named, not taken from a process default: the dependency tree may enable
    // more than one, and then rustls would refuse to guess.
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} does not fit {}: {e}", key_file.display(), cert_file.display()))
}

/// The CA certificates in `ca_file`, for [`crate::http_client::HttpClient::with_ca`].
pub fn read_ca(ca_file: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", ca_file.display()));
    }
    Ok(certs)
}
