//! Keep-alive connections to plain-http upstreams, one pool per worker thread (docs/proxy.md,
//! "Upstream connections").
//!
//! A connection is hyper's HTTP/1 client connection (`hyper::client::conn::http1`): its
//! `SendRequest` handle lives here between requests, its connection task on the worker's
//! runtime. Taking a connection is a lookup in the worker's own map (no lock contention: one
//! thread uses it), trying the most recently used first; a request that finds none ready opens
//! a new one. A connection goes back into the map as soon as its response head has arrived: it
//! becomes ready again by itself once the response body has been read to the end, and until
//! then it is passed over. Connections idle longer than `pool_idle_timeout_secs`, or closed by
//! the upstream, are dropped; at most `pool_max_idle_per_host` are kept per upstream.
//!
//! This replaced hyper-util's general-purpose pooled client, whose pool key hashing, locking,
//! per-request task that waits to return the connection, and large futures cost about a quarter
//! of the proxy's instructions per request.

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::forward::ReqBody;

/// Why a request did not get response headers from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The upstream did not accept a connection within the connect timeout.
    ConnectTimeout,
    /// The upstream could not be connected to (refused, unreachable, not an HTTP/1 server).
    Connect,
    /// The connection failed after the request went out (reset, closed, invalid response).
    Failed,
}

/// A pooled connection: its sender, and since when it has been in the pool.
struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

pub struct Pool {
    /// Per upstream authority, its connections (most recently used last). A list, not a map:
    /// there are few upstreams, and comparing a short authority costs less than hashing it.
    idle: Mutex<Vec<(Authority, Vec<Idle>)>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

/// How many pooled connections a request tries that turn out closed before it went out, before
/// it opens a new one.
const STALE_TRIES: usize = 3;

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), connect_timeout, idle_timeout, max_idle }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `authority` and returns the response head
    /// with its streaming body. A pooled connection that was closed before the request went out
    /// (the upstream's keep-alive ended) is passed over and the request sent on another: nothing
    /// reached the upstream, so this is safe for every method.
    pub async fn send(
        &self,
        authority: &Authority,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, SendError> {
        for _ in 0..STALE_TRIES {
            let Some(mut sender) = self.checkout(authority) else { break };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin(authority, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Failed),
                },
            }
        }
        let mut sender = self.connect(authority).await?;
        match sender.send_request(req).await {
            Ok(resp) => {
                self.checkin(authority, sender);
                Ok(resp)
            }
            Err(_) => Err(SendError::Failed),
        }
    }

    /// The most recently used connection to `authority` that is ready for a request; drops the
    /// closed and expired ones met on the way.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = list_of(&mut idle, authority)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let e = &list[i];
            if e.sender.is_closed() || now.duration_since(e.since) > self.idle_timeout {
                list.remove(i);
            } else if e.sender.is_ready() {
                return Some(list.remove(i).sender);
            }
        }
        None
    }

    fn checkin(&self, authority: &Authority, sender: SendRequest<ReqBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if list_of(&mut idle, authority).is_none() {
            idle.push((authority.clone(), Vec::new()));
        }
        let Some(list) = list_of(&mut idle, authority) else { return };
        if list.len() < self.max_idle {
            list.push(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ReqBody>, SendError> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect((host, port))).await {
                Err(_) => return Err(SendError::ConnectTimeout),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(SendError::ConnectTimeout),
                Ok(Err(_)) => return Err(SendError::Connect),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| SendError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Drops the connections idle longer than the idle timeout (and those the upstream closed).
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (_, list) in idle.iter_mut() {
            list.retain(|e| !e.sender.is_closed() && now.duration_since(e.since) <= self.idle_timeout);
        }
        idle.retain(|(_, l)| !l.is_empty());
    }

    /// Connections held for `authority`.
    #[cfg(test)]
    fn held(&self, authority: &Authority) -> usize {
        list_of(&mut self.idle.lock().unwrap_or_else(|p| p.into_inner()), authority).map_or(0, |l| l.len())
    }

    /// Sweeps every `every` until the worker's runtime ends.
    pub async fn sweeper(self: std::sync::Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }
}

/// The connections to `authority` (compared as written: the table's authorities are parsed once).
fn list_of<'a>(idle: &'a mut [(Authority, Vec<Idle>)], authority: &Authority) -> Option<&'a mut Vec<Idle>> {
    idle.iter_mut().find(|(a, _)| a.as_str() == authority.as_str()).map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::RespBody;
    use hyper::body::{Body, Bytes};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback HTTP/1 server answering "ok"; counts the connections it accepted. With
    /// `close`, it closes every connection after its first answer (as an upstream whose
    /// keep-alive ended would).
    async fn upstream(close: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority: Authority = listener.local_addr().expect("addr").to_string().parse().expect("authority");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(RespBody::Full(Some(Bytes::from_static(
                            b"ok",
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (authority, accepted)
    }

    fn get(authority: &Authority) -> Request<ReqBody> {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, authority.as_str())
            .body(ReqBody::Full(None))
            .expect("request")
    }

    async fn fetch(pool: &Pool, authority: &Authority) -> Result<String, SendError> {
        let mut body = pool.send(authority, get(authority)).await?.into_body();
        let mut text = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            text.extend_from_slice(&frame.expect("frame").into_data().unwrap_or_default());
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn pool(idle: Duration) -> Pool {
        Pool::new(Duration::from_secs(2), idle, 8)
    }

    #[tokio::test]
    async fn one_connection_serves_request_after_request() {
        let (authority, accepted) = upstream(false).await;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(fetch(&pool, &authority).await, Ok("ok".to_string()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.held(&authority), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_passed_over() {
        let (authority, accepted) = upstream(true).await;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(fetch(&pool, &authority).await, Ok("ok".to_string()));
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a new connection for each request");
    }

    #[tokio::test]
    async fn idle_connections_expire_and_a_refused_connect_is_an_error() {
        let (authority, accepted) = upstream(false).await;
        let pool = pool(Duration::from_millis(50));
        assert_eq!(fetch(&pool, &authority).await, Ok("ok".to_string()));
        assert_eq!(pool.held(&authority), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        pool.sweep();
        assert_eq!(pool.held(&authority), 0);
        assert_eq!(fetch(&pool, &authority).await, Ok("ok".to_string()));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // A port nobody listens on (bound, then closed).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let refused: Authority = closed.to_string().parse().expect("authority");
        assert_eq!(fetch(&pool, &refused).await, Err(SendError::Connect));
    }
}
