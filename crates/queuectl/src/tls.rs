//! `queuectl tls dev-certs`: a development CA and one server certificate per service, for
//! service-to-service TLS in docker compose and local tests. Production certificates come from
//! the deployment's issuer (cert-manager in Kubernetes), not from here.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;

/// What `dev_certs` wrote.
pub struct Written {
    pub ca_created: bool,
    pub services: Vec<String>,
}

/// Writes `ca.pem` (+ `ca.key`, kept to sign later certificates) and, for each name,
/// `<name>.pem` (certificate, then the CA) and `<name>.key`. The certificate's names are the
/// service name, `queue-<name>` (the Kubernetes Service names), `localhost` and `127.0.0.1`,
/// plus `extra_hosts`. An existing CA is reused unless `force`, so adding a service later keeps
/// the other certificates valid; service certificates are always rewritten.
pub fn dev_certs(out: &Path, names: &[String], extra_hosts: &[String], force: bool) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (ca_pem, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    let ca_params = ca_params()?;
    let ca_created = force || !ca_pem.exists() || !ca_key_path.exists();
    let ca_key = if ca_created {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params.self_signed(&key).context("self-signing the CA")?;
        crate::write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_pem, cert.pem()).with_context(|| format!("cannot write {}", ca_pem.display()))?;
        key
    } else {
        let pem =
            std::fs::read_to_string(&ca_key_path).with_context(|| format!("cannot read {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("{} is not a private key", ca_key_path.display()))?
    };
    let ca_text = std::fs::read_to_string(&ca_pem).with_context(|| format!("cannot read {}", ca_pem.display()))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut services = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        anyhow::ensure!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "service name `{name}`: use a-z, 0-9 and '-'"
        );
        let mut hosts = vec![name.to_string(), format!("queue-{name}"), "localhost".into(), "127.0.0.1".into()];
        hosts.extend(extra_hosts.iter().cloned());
        let mut params = CertificateParams::new(hosts).with_context(|| format!("names of `{name}`"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("generating a service key")?;
        let cert = params.signed_by(&key, &issuer).with_context(|| format!("signing `{name}`"))?;
        crate::write_private(&out.join(format!("{name}.key")), key.serialize_pem().as_bytes())?;
        let chain = out.join(format!("{name}.pem"));
        std::fs::write(&chain, format!("{}{ca_text}", cert.pem()))
            .with_context(|| format!("cannot write {}", chain.display()))?;
        services.push(name.to_string());
    }
    Ok(Written { ca_created, services })
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "Queue development CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}
