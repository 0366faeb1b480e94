//! Every config file under deploy/ parses into its service's real config type, so an unknown or
//! misspelt key there fails here rather than at a deploy. (File paths inside them point at the
//! deployment's filesystem, so only the schema is checked, not `validate`.)

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_as<T: DeserializeOwned>(what: &str, mut table: toml::Table) {
    // Kubernetes leaves database.url to the DATABASE_URL Secret.
    if let Some(toml::Value::Table(db)) = table.get_mut("database") {
        db.entry("url").or_insert_with(|| toml::Value::String("postgres://from-secret@db/queue".into()));
    }
    if let Err(e) = T::deserialize(toml::Value::Table(table)) {
        panic!("{what}: {e}");
    }
}

fn check(service: &str, what: &str, text: &str) {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    match service {
        "audit" => parse_as::<queue_audit::AuditConfig>(what, table),
        "auth" => parse_as::<queue_auth::AuthConfig>(what, table),
        "proxy" => parse_as::<queue_proxy::ProxyConfig>(what, table),
        "rbac" => parse_as::<queue_rbac::RbacConfig>(what, table),
        _ => parse_as::<queue_platform::ServiceConfig>(what, table),
    }
}

/// The `config.toml: |` block of a ConfigMap.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "config.toml: |").skip(1);
    let mut out = String::new();
    for l in lines.by_ref() {
        if !l.is_empty() && !l.starts_with("    ") {
            break;
        }
        out.push_str(l.strip_prefix("    ").unwrap_or(l));
        out.push('\n');
    }
    out
}

#[test]
fn every_deploy_config_fits_its_service() {
    let mut checked = 0;
    for service in ["auth", "rbac", "audit", "proxy"] {
        for dir in ["deploy/local", "deploy/compose"] {
            let p = root().join(dir).join(format!("{service}.toml"));
            check(service, &p.display().to_string(), &std::fs::read_to_string(&p).expect("config file"));
            checked += 1;
        }
        let p = root().join(format!("deploy/k8s/{service}/configmap.yaml"));
        let text = configmap_toml(&std::fs::read_to_string(&p).expect("configmap"));
        assert!(text.contains("[server]"), "{}: no config.toml block", p.display());
        check(service, &p.display().to_string(), &text);
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[test]
fn a_misspelt_key_fails_the_check() {
    let text =
        std::fs::read_to_string(root().join("deploy/local/audit.toml")).expect("file").replace("[keys]", "[keyz]")
            + "\n[keyz]\nprovider = \"local\"\n";
    let result = std::panic::catch_unwind(|| check("audit", "probe", &text));
    assert!(result.is_err());
}
