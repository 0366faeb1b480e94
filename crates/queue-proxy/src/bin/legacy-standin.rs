//! `legacy-standin`: an echoing Raptor for the proxy's and the end-to-end tests (see
//! `queue_proxy::standin`). Stops on SIGTERM or Ctrl-C.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "legacy-standin",
    about = "Plays Raptor, the legacy app: echoes requests to a few legacy paths as JSON."
)]
struct Flags {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The name it answers with (`server` in each echo).
    #[arg(long, default_value = "raptor")]
    name: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("legacy-standin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (addr, server) = queue_proxy::standin::serve(flags.listen, &flags.name, flags.workers.max(1), false)?;
        eprintln!("legacy-standin: `{}` listening on http://{addr}", flags.name);
        let handle = server.handle();
        let task = tokio::spawn(server);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.stop(true).await;
        let _ = task.await;
        Ok::<_, std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("legacy-standin: {e}");
            ExitCode::FAILURE
        }
    }
}
