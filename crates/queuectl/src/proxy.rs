//! `queuectl proxy …`: the proxy's admin API (loopback, `admin.listen`) from the command line:
//! the table in force, a phase change, a rollback, a reload, the shadow report, the metrics.
//! Every call carries a fresh service token (scope `proxy:admin`, audience the proxy) minted
//! from the operator's key, or the one given with `--token`. A rollback, and a phase lower than
//! the one in force, first wait for the write-back to Raptor to be empty (`legacy::backlog`).

use anyhow::Context;
use serde_json::Value;

use crate::legacy::backlog::{Gate, GateArgs};
use crate::{ProxyAuth, ProxyCommand};

/// The phase in force (`GET /admin/routes`).
async fn phase_in_force(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<u64> {
    let resp = client
        .get(format!("{base}/admin/routes"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the proxy's admin API at {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.context("the admin API did not answer JSON")?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", body["error"]["message"].as_str().unwrap_or("no message"));
    }
    body["phase"].as_u64().context("the admin API's table has no phase")
}

/// The write-back gate of a command that may move routes back to Raptor, with the operator's key.
fn gate(auth: &ProxyAuth, args: &GateArgs) -> Gate {
    Gate::new(args.clone(), &auth.iss, &auth.key_path())
}

pub fn run(admin_url: &str, auth: &ProxyAuth, cmd: ProxyCommand) -> anyhow::Result<()> {
    let token = auth.bearer()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        let base = admin_url.trim_end_matches('/');
        match &cmd {
            ProxyCommand::Rollback { gate: args } => gate(auth, args).check("rolling back").await?,
            ProxyCommand::Phase { phase, gate: args } => {
                let now = phase_in_force(&client, base, &token).await?;
                if u64::from(*phase) < now {
                    gate(auth, args).check(&format!("moving from phase {now} back to phase {phase}")).await?;
                }
            }
            _ => {}
        }
        let (method, path, body) = match &cmd {
            ProxyCommand::Status => (reqwest::Method::GET, "/admin/routes", None),
            ProxyCommand::Phase { phase, .. } => {
                (reqwest::Method::POST, "/admin/phase", Some(serde_json::json!({ "phase": phase })))
            }
            ProxyCommand::Rollback { .. } => (reqwest::Method::POST, "/admin/rollback", None),
            ProxyCommand::Reload => (reqwest::Method::POST, "/admin/reload", None),
            ProxyCommand::Shadow => (reqwest::Method::GET, "/admin/shadow", None),
            ProxyCommand::Metrics => (reqwest::Method::GET, "/metrics", None),
        };
        let mut req = client.request(method, format!("{base}{path}")).bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the proxy's admin API at {base}"))?;
        let status = resp.status();
        if matches!(cmd, ProxyCommand::Metrics) && status.is_success() {
            print!("{}", resp.text().await.context("reading the metrics")?);
            return Ok(());
        }
        let body: Value = resp.json().await.context("the admin API did not answer JSON")?;
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("no message");
            anyhow::bail!("{status}: {msg}");
        }
        match cmd {
            ProxyCommand::Status => print_status(&body),
            ProxyCommand::Phase { .. } | ProxyCommand::Rollback { .. } | ProxyCommand::Reload => print_change(&body),
            ProxyCommand::Shadow | ProxyCommand::Metrics => println!("{}", serde_json::to_string_pretty(&body)?),
        }
        Ok(())
    })
}

fn print_status(t: &Value) {
    println!(
        "table {} (phase {}, generation {}, by {} at {})",
        t["version"].as_str().unwrap_or("?"),
        t["phase"],
        t["generation"],
        t["trigger"].as_str().unwrap_or("?"),
        t["loaded_at"].as_str().unwrap_or("?"),
    );
    if let Some(f) = t["file"].as_str() {
        println!("file  {f}");
    }
    for r in t["routes"].as_array().into_iter().flatten() {
        let m = &r["match"];
        let pattern = m["prefix"].as_str().or(m["pattern"].as_str()).unwrap_or("?");
        println!(
            "route {:<20} {:<40} -> {:<7} (cut over in phase {}, queue {}{})",
            r["name"].as_str().unwrap_or("?"),
            pattern,
            r["now"].as_str().unwrap_or("?"),
            r["cutover_phase"],
            r["queue_service"].as_str().unwrap_or("?"),
            r["queue_path"].as_str().unwrap_or("?"),
        );
    }
    let history: Vec<String> = t["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| format!("{} (phase {})", h["version"].as_str().unwrap_or("?"), h["phase"]))
        .collect();
    println!("rollback to: {}", if history.is_empty() { "nothing".to_string() } else { history.join(", ") });
}

fn print_change(c: &Value) {
    if c["changed"] == true {
        println!(
            "table {} in force (phase {}, generation {}), was {}{}",
            c["version"].as_str().unwrap_or("?"),
            c["phase"],
            c["generation"],
            c["previous_version"].as_str().unwrap_or("?"),
            if c["persisted"] == true { "" } else { "; NOT written to the table file" },
        );
    } else {
        println!("unchanged: table {} (phase {})", c["version"].as_str().unwrap_or("?"), c["phase"]);
    }
}
