//! `queuectl audit …`: the audit service's domain operations, run by an operator against the
//! database and keys directly (the service need not be running).

use anyhow::Context;
use diesel_async::AsyncConnection;
use queue_audit::AuditConfig;
use queue_audit::domain::bundle;
use queue_audit::domain::verify::{self, ExportLine};
use queue_platform::config::{self, ProcessEnv};
use queue_platform::db::Db;
use std::io::Write;

use crate::{AuditCommand, AuditConfigArg};

fn load(arg: &AuditConfigArg) -> anyhow::Result<AuditConfig> {
    config::load::<AuditConfig>(Some(&arg.config), &ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{}: {e}", arg.config.display()))
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cmd {
            AuditCommand::Verify { tenant, file, config } => {
                let config = load(&config)?;
                let keys = queue_audit::key_ring(&config).await?;
                let report = match (tenant, file) {
                    (Some(t), _) => {
                        let db = Db::with_role(&config.database, Some(queue_audit::APP_ROLE))?;
                        verify::verify_tenant(&db, &keys, &t).await.map_err(|e| anyhow::anyhow!("{e}"))?
                    }
                    (None, Some(f)) => {
                        let text =
                            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
                        verify::verify_export(text.lines().map(String::from), &keys)
                            .await
                            .map_err(|e| anyhow::anyhow!(e))?
                    }
                    (None, None) => anyhow::bail!("give --tenant or --file"),
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.ok {
                    std::process::exit(1);
                }
                Ok(())
            }
            AuditCommand::Export { tenant, out, config } => {
                let config = load(&config)?;
                let keys = queue_audit::key_ring(&config).await?;
                let db = Db::with_role(&config.database, Some(queue_audit::APP_ROLE))?;
                let mut sink: Box<dyn Write> = match &out {
                    Some(p) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                    )),
                    None => Box::new(std::io::BufWriter::new(std::io::stdout())),
                };
                let header = verify::export_header(&db, &keys, &tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(sink, "{}", serde_json::to_string(&header)?)?;
                let mut after = 0;
                let mut n = 0;
                loop {
                    let rows = verify::page(&db, &tenant, after, 5_000).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    let Some(last) = rows.last() else { break };
                    after = last.seq;
                    for r in rows {
                        n += 1;
                        writeln!(sink, "{}", serde_json::to_string(&ExportLine::Event(r))?)?;
                    }
                }
                for c in verify::checkpoint_records(&db, &tenant).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                    writeln!(sink, "{}", serde_json::to_string(&ExportLine::Checkpoint(c))?)?;
                }
                sink.flush()?;
                eprintln!("exported {n} event(s) of tenant {tenant}");
                Ok(())
            }
            AuditCommand::Bundle { tenant, seq, out, config } => {
                let config = load(&config)?;
                let db = Db::with_role(&config.database, Some(queue_audit::APP_ROLE))?;
                let b = bundle::build(&db, &tenant, seq).await.map_err(|e| anyhow::anyhow!(e))?;
                let text = serde_json::to_string_pretty(&b)?;
                match &out {
                    Some(p) => std::fs::write(p, format!("{text}\n"))
                        .with_context(|| format!("cannot write {}", p.display()))?,
                    None => println!("{text}"),
                }
                eprintln!("bundle of event {seq} of tenant {tenant} against its checkpoint of {} events", b.tree_size);
                Ok(())
            }
            AuditCommand::VerifyBundle { file, key } => {
                let key = match key.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
                    None => key,
                };
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let b: bundle::Bundle =
                    serde_json::from_str(&text).with_context(|| format!("{} is not a bundle", file.display()))?;
                match bundle::verify(&b, &key) {
                    Ok(p) => {
                        println!(
                            "ok: event {} of tenant {} is in log {} of {} events, signed by {}",
                            p.seq, p.tenant_id, p.origin, p.tree_size, p.key
                        );
                        Ok(())
                    }
                    Err(why) => {
                        println!("does not verify: {why}");
                        std::process::exit(1);
                    }
                }
            }
            AuditCommand::RotateKey { config } => {
                let config = load(&config)?;
                let keys = queue_audit::key_ring(&config).await?;
                let mut owner = diesel_async::AsyncPgConnection::establish(&config.database.url).await?;
                let epoch = keys.rotate(&mut owner).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("audit data key rotated: new events use epoch {epoch}; older epochs stay for verification");
                Ok(())
            }
        }
    })
}
