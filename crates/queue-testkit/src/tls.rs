//! Certificates for tests of service-to-service TLS: a throwaway CA and one server certificate
//! it signs, for 127.0.0.1 and localhost (what `queuectl tls dev-certs` makes for a
//! deployment, but one service at a time and in a temp dir).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// Where [`ca_and_server_cert`] wrote its files.
pub struct CertFiles {
    /// The CA's certificate (`server.tls.ca_file` of whoever must trust it).
    pub ca: PathBuf,
    /// The server's certificate and key (`server.tls.cert_file` / `key_file`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new CA and a server certificate it signs for 127.0.0.1 and localhost, written to
/// `<dir>/<name>-ca.pem`, `<dir>/<name>.pem` and `<dir>/<name>.key`.
pub fn ca_and_server_cert(dir: &Path, name: &str) -> CertFiles {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf params");
    let cert = leaf.signed_by(&key, &issuer).expect("sign");
    let files = CertFiles {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}
