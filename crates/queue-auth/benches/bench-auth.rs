//! `make bench-auth`: session validations and passkey logins through loopback HTTP on a durable
//! PostgreSQL, with pgbench select-only on the same cluster as the reference. The client side of
//! each passkey login (signing the challenge) is done here, by webauthn-authenticator-rs's
//! SoftPasskey. Prints the figures and writes them to docs/benchmarks.md (section `bench-auth`).
//! Not a test: nothing here asserts a speed.

/// The allocator the service binaries use, so the figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use queue_auth::AuthConfig;
use queue_auth::domain::RequestInfo;
use queue_auth::domain::sessions::{self, Kind};
use queue_bench::{Cluster, load, machine, serve_on_own_runtime, write_section};
use queue_platform::Signals;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const CLIENTS: usize = 64;

async fn post(client: &reqwest::Client, url: &str, bearer: Option<&str>, body: &Value) -> anyhow::Result<Value> {
    post_from(client, url, bearer, body, None).await
}

/// [`post`] on behalf of the client at `ip` (in `X-Forwarded-For`, as the proxy sends it).
async fn post_from(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &Value,
    ip: Option<&str>,
) -> anyhow::Result<Value> {
    let mut r = client.post(url).json(body);
    if let Some(ip) = ip {
        r = r.header("x-forwarded-for", ip);
    }
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let cluster = Cluster::start("bench")?;
    let keys = queue_testkit::TestKeys::new();
    let dir = tempfile::tempdir()?;
    let pepper = dir.path().join("pepper.key");
    queue_auth::config::write_pepper(&pepper, true)?;
    let mut base = queue_testkit::service_config("auth", &cluster.url("bench"), &keys);
    base.server.workers = None;
    base.database.pool_size = 32;
    let mut config = AuthConfig::new(base, pepper);
    config.mailer.dev_dir = dir.path().join("mail");
    config.limits.per_ip_attempts = i32::MAX;
    // As deployed: behind the proxy, which names each client in X-Forwarded-For (the logins
    // below come from 64 different addresses, not all from one).
    config.auth.trusted_proxies = queue_platform::net::TrustedNetworks::parse(&["127.0.0.1"]).expect("valid");
    let origin = Url::parse("http://localhost:8080")?;

    // The service on a runtime of its own, as in a deployment.
    let service_config = config.clone();
    let (addr, handle) = serve_on_own_runtime(move || queue_auth::run(service_config, Signals::Ignore))?;
    let base_url = format!("http://{addr}");
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("bench-auth: {seconds} s per run, {CLIENTS} concurrent clients, {}", machine());

    // One user per client, each with a passkey (registered through the API) and a full session.
    let raptor = keys.token("raptor", "auth", &["users:write"]);
    let mut conn = {
        use diesel_async::AsyncConnection;
        diesel_async::AsyncPgConnection::establish(&cluster.url("bench")).await?
    };
    let mut tokens = Vec::new();
    let mut authenticators = Vec::new();
    for i in 0..CLIENTS {
        let email = format!("bench{i}@example.com");
        let user =
            post(&client, &format!("{base_url}/internal/v1/users"), Some(&raptor), &json!({"email": email})).await?;
        let user_id: uuid::Uuid = user["id"].as_str().unwrap_or_default().parse()?;
        let now = chrono::Utc::now();
        let info = RequestInfo::default();
        let enrollment =
            sessions::create(&mut conn, &config.sessions, now, &info, user_id, "default", Kind::Enrollment)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let full =
            sessions::create(&mut conn, &config.sessions, now, &RequestInfo::default(), user_id, "default", Kind::Full)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        tokens.push(full.token.to_string());
        let mut key = SoftPasskey::new(true);
        let start = post(
            &client,
            &format!("{base_url}/api/v1/auth/webauthn/register/start"),
            Some(&enrollment.token),
            &json!({}),
        )
        .await?;
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone())?;
        let cred = key.do_registration(origin.clone(), ccr).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        post(
            &client,
            &format!("{base_url}/api/v1/auth/webauthn/register/finish"),
            Some(&enrollment.token),
            &json!({"ceremony_id": start["ceremony_id"], "credential": cred}),
        )
        .await?;
        authenticators.push(Mutex::new((email, key)));
    }

    // Session validations, as the proxy makes them.
    let svc = Arc::new(keys.token("proxy", "auth", &["sessions:validate"]));
    let tokens = Arc::new(tokens);
    let validate_url = Arc::new(format!("{base_url}/internal/v1/sessions/validate"));
    // Every token is valid before and after the run (wrk itself only sees 200s).
    let all_valid = async || -> anyhow::Result<()> {
        for t in tokens.iter() {
            let v = post(&client, &validate_url, Some(&svc), &json!({"token": t})).await?;
            anyhow::ensure!(v["valid"] == true, "invalid: {v}");
        }
        Ok(())
    };
    all_valid().await?;
    // The load from wrk (a generator in C leaves the shared cores to the service), each request
    // a session of the 64 in turn.
    let script = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {svc}\"\nlocal tokens = {{{}}}\nlocal n = 0\n\
         request = function()\n  n = n % #tokens + 1\n  return wrk.format(nil, nil, nil, '{{\"token\":\"' .. tokens[n] .. '\"}}')\nend\n",
        tokens.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ")
    );
    let validations = queue_bench::wrk(&validate_url, &script, CLIENTS, duration)?;
    all_valid().await?;
    println!(
        "session validations: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        validations.per_sec(),
        validations.p50_ms,
        validations.p99_ms
    );

    // Passkey logins: start, sign (client side, here), finish.
    let authenticators = Arc::new(authenticators);
    let (c, a, b, o) = (client.clone(), authenticators.clone(), Arc::new(base_url.clone()), origin.clone());
    let logins = load(CLIENTS, duration, move |i, _| {
        let (c, a, b, o) = (c.clone(), a.clone(), b.clone(), o.clone());
        async move {
            let email = a[i].lock().map_err(|_| anyhow::anyhow!("lock"))?.0.clone();
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let ip = Some(ip.as_str());
            let start =
                post_from(&c, &format!("{b}/api/v1/auth/webauthn/login/start"), None, &json!({"email": email}), ip)
                    .await?;
            let rcr: RequestChallengeResponse = serde_json::from_value(start["options"].clone())?;
            let cred = {
                let mut g = a[i].lock().map_err(|_| anyhow::anyhow!("lock"))?;
                g.1.do_authentication(o, rcr).map_err(|e| anyhow::anyhow!("{e:?}"))?
            };
            let done = post_from(
                &c,
                &format!("{b}/api/v1/auth/webauthn/login/finish"),
                None,
                &json!({"ceremony_id": start["ceremony_id"], "credential": cred}),
                ip,
            )
            .await?;
            anyhow::ensure!(done["session"]["token"].is_string(), "{done}");
            Ok(1)
        }
    })
    .await;
    println!(
        "passkey logins (start + sign + finish): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        logins.per_sec(),
        logins.p50_ms,
        logins.p99_ms
    );
    handle.stop(true).await;

    // The reference: pgbench select-only on the same cluster, same concurrency.
    let init = Command::new("pgbench").args(["-i", "-q", "-s", "10"]).arg(cluster.url("bench")).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let out = Command::new("pgbench")
        .args(["-n", "-S", "-c", &CLIENTS.to_string(), "-j", "2", "-T", &seconds.to_string()])
        .arg(cluster.url("bench"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))?;
    println!("pgbench select-only: {tps:.0} TPS ({CLIENTS} clients)");

    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let first = |l: &str| l.split_whitespace().next().unwrap_or("?").to_string();
    let body = format!(
        "## Auth (`make bench-auth`)\n\n{machine}; {seconds} s per run; {CLIENTS} concurrent clients over loopback HTTP; \
durable PostgreSQL (fsync on) on the same machine; service, load generator and PostgreSQL share the cores; \
validations driven by wrk (`-t1 -c{CLIENTS}`), logins by clients in the bench process (which also sign), \
each from its own address (`X-Forwarded-For` from a trusted proxy, as deployed behind queue-proxy).\n\n\
| what | per second | p50 | p99 |\n|---|---|---|---|\n\
| session validations (`POST /internal/v1/sessions/validate`, service token) | {:.0} | {:.2} ms | {:.2} ms |\n\
| passkey logins (start + client-side signature + finish, a session minted) | {:.0} | {:.2} ms | {:.2} ms |\n\
| pgbench select-only (reference, same cluster, same run) | {tps:.0} TPS | | |\n\n\
Load average (1 min) before / after the run: {} / {} (other work on the machine skews the figures).\n\n\
Aims (issue 4): ≥ 15,000 validations/s and ≥ 500 passkey logins/s on 2 cores.\n",
        validations.per_sec(),
        validations.p50_ms,
        validations.p99_ms,
        logins.per_sec(),
        logins.p50_ms,
        logins.p99_ms,
        first(&load_before),
        first(&load_after),
        machine = machine(),
    );
    let path = write_section("bench-auth", &body)?;
    println!("figures written to {}", path.display());
    Ok(())
}
