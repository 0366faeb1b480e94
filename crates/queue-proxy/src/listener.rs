//! The public listener: hyper's HTTP/1 server on `server.workers` threads, each with its own
//! single-threaded tokio runtime, all accepting on the same socket (docs/proxy.md, ADR 0007).
//!
//! Forwarded requests are served here directly, with the `http` 1.x types the upstream client
//! uses: the request's head goes upstream as it came (no header conversions), its body read
//! whole first (forward/exchange.rs: the slot rule), and the upstream's body comes back as it
//! arrives. The platform endpoints (`/healthz`, `/readyz`, `/.well-known/jwks.json`,
//! `/internal/v1/caller`) stay queue-platform's actix code: that app listens on a loopback port
//! of its own and this listener relays exactly those paths to it (forward/platform.rs).
//!
//! Connection tasks are plain `tokio::spawn`s on the worker's current-thread runtime, not a
//! `LocalSet`: a `LocalSet` task woken by I/O wakes the runtime's `block_on` future, which
//! writes the runtime's eventfd (a system call on about every third request under load).
//!
//! Each worker thread has its own pool of upstream connections (pool.rs), so a keep-alive
//! connection to an upstream is driven by the thread that uses it (no cross-thread wake-ups per
//! request).

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use queue_platform::config::ServerConfig;
use queue_platform::{Platform, Running, Signals};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::ProxyState;
use crate::deadline::Deadlines;
use crate::forward::{self, Worker};

/// Slowloris protection: a client has this long to send a request's head (also how long an
/// idle keep-alive connection stays open), as actix's `client_request_timeout` did.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops the workers when dropped (the public server's `tasks` hold it, and are aborted when
/// the server stops) or when [`Stop::stop`] is called.
struct Stop(watch::Sender<bool>);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Binds the public listener, starts queue-platform's app on loopback and the workers. The
/// returned `Running` is the platform app's server (its handle stops everything) with `addr`
/// the public address.
pub(crate) fn serve(
    platform: Arc<Platform>,
    config: &ServerConfig,
    signals: Signals,
    state: Arc<ProxyState>,
) -> anyhow::Result<Running> {
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;

    // The platform endpoints: queue-platform's own app, on loopback, one worker (they are rare).
    // Plain HTTP: the public workers reach it over loopback.
    let internal_config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: Some(1),
        tls: Default::default(),
        ..config.clone()
    };
    let mut running = queue_platform::server::serve(platform, &internal_config, Signals::Ignore, |_| {})?;
    let internal: http::uri::Authority = running.addr.to_string().parse()?;
    running.addr = addr;

    let workers = config.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each worker holds a clone until it has drained its connections.
    let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
    let grace = Duration::from_secs(config.shutdown_timeout_secs);
    for i in 0..workers {
        let listener = listener.try_clone()?;
        let state = state.clone();
        let stop = stop_rx.clone();
        let drained = drained_tx.clone();
        let internal = internal.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name(format!("queue-proxy-{i}")).spawn(move || {
            runtime.block_on(async move {
                if let Err(e) = worker(listener, state, internal, stop, grace).await {
                    tracing::error!(error = %e, "public listener worker failed");
                }
                drop(drained);
            });
        })?;
    }
    drop(drained_tx);
    let stop = Stop(stop_tx);
    tracing::info!(service = crate::NAME, %addr, workers, "listening on http://{addr}");

    if signals == Signals::Handle {
        // SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
        // `server.shutdown_timeout_secs`), then stop the platform app, which ends `wait()`.
        let handle = running.handle();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        running.tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: draining the public listener");
            let _ = stop.0.send(true);
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), drained_rx.recv()).await;
            handle.stop(true).await;
            drop(stop);
        }));
    } else {
        running.tasks.push(tokio::spawn(async move {
            let _stop = stop;
            std::future::pending::<()>().await;
        }));
    }
    Ok(running)
}

/// One worker: accepts until told to stop, then lets its connections finish their requests
/// (up to `grace`).
async fn worker(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
    internal: http::uri::Authority,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let pool = Arc::new(state.upstream_pool());
    tokio::spawn(pool.clone().sweeper(Duration::from_secs(1)));
    let deadlines = Deadlines::default();
    tokio::spawn(deadlines.timer());
    let worker = Arc::new(Worker { state, pool, internal, deadlines });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Larger heads than the proxy's limit are refused by hyper (431) before they are parsed
        // whole; heads under it but over `max_header_bytes` get the proxy's JSON 431.
        // (hyper's default of at most 100 headers stays: setting it moves the parser's header
        // array from the stack to the heap.)
        .max_buf_size((worker.state.max_header_bytes + 8 * 1024).max(8 * 1024));
    let http = Arc::new(http);
    let write_timeout = worker.state.client_write_timeout;
    // Each connection holds a clone; `recv` answers `None` once they are all gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let http = http.clone();
        let mut stop = stop.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let worker = worker.clone();
                async move { Ok::<_, std::convert::Infallible>(forward::handle(&worker, req, peer).await) }
            });
            let io = WriteTimeout { inner: stream, timeout: write_timeout, pause: None };
            let conn = http.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = tokio::time::timeout(grace, open_rx.recv()).await;
    Ok(())
}

/// A client connection whose writes may not stall longer than `timeout`: a client that stops
/// reading its response would otherwise hold the response's upstream slot (and connection)
/// for as long as it likes. A write that has waited that long fails, which ends the connection
/// and drops the response body with its slot (issue 16, item 2). Reads pass through (the head
/// has hyper's `header_read_timeout`, the body the proxy's `client_body_timeout_ms`).
struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed only while a write waits; reused across waits (no timer per write).
    pause: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
}

impl<T> WriteTimeout<T> {
    /// Passes `polled` on, failing it once a wait has lasted `timeout`.
    fn watch<R>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            if let Some((armed, _)) = self.pause.as_mut() {
                *armed = false;
            }
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (armed, sleep) = self.pause.get_or_insert_with(|| (false, Box::pin(tokio::time::sleep_until(deadline))));
        if !*armed {
            sleep.as_mut().reset(deadline);
            *armed = true;
        }
        if sleep.as_mut().poll(cx).is_ready() {
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the client did not read its response in time");
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
