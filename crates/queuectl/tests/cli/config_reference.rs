//! docs/configuration.md describes every key of every service's config type. The keys are read
//! from the types themselves: each table is `deny_unknown_fields`, so a parse of a table holding
//! one unknown key fails with serde's list of the keys it expects. Tables are found the same
//! way, one level at a time, so a key added to a config struct fails this test until documented.

use serde::de::DeserializeOwned;
use std::path::Path;

const PROBE: &str = "zzz_not_a_key";
/// Tables shared by every service, documented once at the top of configuration.md.
const SHARED: [&str; 4] = ["server", "database", "telemetry", "tokens"];

#[test]
fn every_config_key_of_every_service_is_in_configuration_md() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"))
        .expect("docs/configuration.md");
    let services: [(&str, Vec<Vec<String>>); 4] = [
        ("auth", keys::<queue_auth::config::AuthConfig>(&[])),
        ("rbac", keys::<queue_rbac::config::RbacConfig>(&[])),
        ("audit", keys::<queue_audit::AuditConfig>(&[])),
        ("proxy", keys::<queue_proxy::ProxyConfig>(&[])),
    ];
    let mut missing = Vec::new();
    for (service, keys) in &services {
        assert!(keys.len() >= 20, "{service}: only {keys:?}: the probe no longer finds the keys");
        let section = section(&doc, service);
        for key in keys {
            let table = key[0].as_str();
            let leaf = key.last().expect("a key has a name");
            let text = if SHARED.contains(&table) { doc.as_str() } else { section };
            let dotted = key.join(".");
            let documented = text.contains(&format!("`{dotted}`"))
                || (text.contains(&format!("[{table}")) && text.contains(&format!("`{leaf}`")));
            if !documented {
                missing.push(format!("{service}: {dotted}"));
            }
        }
    }
    assert!(missing.is_empty(), "keys not described in docs/configuration.md:\n{}", missing.join("\n"));
}

#[test]
fn the_probe_finds_nested_tables_and_arrays_of_tables() {
    let keys = keys::<queue_audit::AuditConfig>(&[]);
    for expected in
        [&["tokens", "trusted", "public_key"][..], &["users", "session_cache_secs"], &["keys", "kms_region"]]
    {
        assert!(keys.iter().any(|k| k == expected), "{expected:?} not in {keys:?}");
    }
    assert!(!keys.iter().any(|k| k == &["server"]), "a table is not a key");
}

/// The part of the doc about one service: from `### <service>` to the next `### `.
fn section<'a>(doc: &'a str, service: &str) -> &'a str {
    let start = doc.find(&format!("\n### {service}\n")).unwrap_or_else(|| panic!("no `### {service}` in the doc"));
    let rest = &doc[start + 1..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |e| e + 4);
    &rest[..end]
}

/// Every leaf key under the table at `path` (the root when empty), as paths.
fn keys<T: DeserializeOwned>(path: &[String]) -> Vec<Vec<String>> {
    let header = if path.is_empty() { String::new() } else { format!("[{}]\n", path.join(".")) };
    let fields = expected_fields::<T>(&format!("{header}{PROBE} = 1\n"))
        .unwrap_or_else(|| panic!("no field list for table {path:?}"));
    let mut out = Vec::new();
    for f in fields {
        let mut p = path.to_vec();
        p.push(f);
        let dotted = p.join(".");
        if expected_fields::<T>(&format!("[{dotted}]\n{PROBE} = 1\n")).is_some() {
            out.extend(keys::<T>(&p));
        } else if let Some(inner) = expected_fields::<T>(&format!("[[{dotted}]]\n{PROBE} = 1\n")) {
            out.extend(inner.into_iter().map(|k| {
                let mut q = p.clone();
                q.push(k);
                q
            }));
        } else {
            out.push(p);
        }
    }
    out
}

/// The keys serde expected where it met the probe, if the probe was refused as an unknown key.
fn expected_fields<T: DeserializeOwned>(text: &str) -> Option<Vec<String>> {
    let message = toml::from_str::<T>(text).err()?.to_string();
    let marker = format!("unknown field `{PROBE}`, expected ");
    let rest = &message[message.find(&marker)? + marker.len()..];
    let line = rest.lines().next().unwrap_or("");
    let names: Vec<String> = line.split('`').skip(1).step_by(2).map(str::to_string).collect();
    (!names.is_empty()).then_some(names)
}
