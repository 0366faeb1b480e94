//! Keep-alive connections to plain-http upstreams, one pool per worker thread (docs/proxy.md,
//! "Forwarding"; ADR 0007).
//!
//! A connection is a plain `TcpStream` with its read buffer; the HTTP/1.1 exchange on it is
//! upstream.rs. Taking a connection is a lookup in the worker's own list (no lock contention:
//! one thread uses it), the most recently used first; a request that finds none opens a new
//! one. A connection comes back when its response body has been read to the end (and the
//! response allowed keep-alive); one dropped before that is closed. A kept connection that
//! became readable while idle (the upstream closed it, or sent something unasked) is dropped
//! when met, as are those idle longer than `pool_idle_timeout_secs`; at most
//! `pool_max_idle_per_host` are kept per upstream.
//!
//! This replaced hyper-util's general-purpose pooled client and then hyper's client
//! connections: with them, each request crossed to a connection task through channels, and
//! the client side cost about 19k of the proxy's ~39k instructions per request.

use http::uri::Authority;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::forward::ReqBody;
use crate::upstream::{Conn, ExchangeError, UpBody, exchange};

/// Why a request did not get response headers from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The upstream did not accept a connection within the connect timeout.
    ConnectTimeout,
    /// The upstream could not be connected to (refused, unreachable).
    Connect,
    /// The exchange failed after the connection was made (reset, closed, an invalid or
    /// ambiguous response).
    Failed,
}

/// A pooled connection, and since when it has been idle.
struct Idle {
    conn: Conn,
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

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), connect_timeout, idle_timeout, max_idle }
    }

    /// Sends the request (origin-form URI; `Host` becomes `authority`) to `authority` and returns the response
    /// head with its body, which reads from the connection as it is polled and hands the
    /// connection back when it is complete. A kept connection that the upstream closed just
    /// before the request (nothing came back at all) is replaced by a new one and the request
    /// sent again, only when that is safe: an idempotent method and no body.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        head: http::request::Parts,
        body: ReqBody,
    ) -> Result<(http::response::Parts, UpBody), SendError> {
        let replayable = head.method.is_idempotent() && hyper::body::Body::is_end_stream(&body);
        let (conn, reused) = match self.checkout(authority) {
            Some(c) => (c, true),
            None => (self.connect(authority).await?, false),
        };
        match exchange(conn, &head, body, self, authority).await {
            Ok(r) => Ok(r),
            Err(ExchangeError::ClosedEarly) if reused && replayable => {
                let conn = self.connect(authority).await?;
                exchange(conn, &head, ReqBody::Full(None), self, authority).await.map_err(|e| {
                    tracing::debug!(error = %e, "upstream exchange failed");
                    SendError::Failed
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "upstream exchange failed");
                Err(SendError::Failed)
            }
        }
    }

    /// The most recently used idle connection to `authority` that is still usable; drops the
    /// closed and expired ones met on the way.
    fn checkout(&self, authority: &Authority) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = list_of(&mut idle, authority)?;
        let now = Instant::now();
        while let Some(mut e) = list.pop() {
            if now.duration_since(e.since) <= self.idle_timeout && e.conn.still_usable() {
                return Some(e.conn);
            }
        }
        None
    }

    /// Takes back a connection whose response is complete.
    pub fn checkin(&self, authority: &Authority, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if list_of(&mut idle, authority).is_none() {
            idle.push((authority.clone(), Vec::new()));
        }
        let Some(list) = list_of(&mut idle, authority) else { return };
        if list.len() < self.max_idle {
            list.push(Idle { conn, since: Instant::now() });
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, SendError> {
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
        Ok(Conn::new(stream))
    }

    /// Drops the connections idle longer than the idle timeout (and those the upstream closed).
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (_, list) in idle.iter_mut() {
            list.retain_mut(|e| now.duration_since(e.since) <= self.idle_timeout && e.conn.still_usable());
        }
        idle.retain(|(_, l)| !l.is_empty());
    }

    /// Connections held for `authority`.
    #[cfg(test)]
    fn held(&self, authority: &Authority) -> usize {
        list_of(&mut self.idle.lock().unwrap_or_else(|p| p.into_inner()), authority).map_or(0, |l| l.len())
    }

    /// Sweeps every `every` until the worker's runtime ends.
    pub async fn sweeper(self: Arc<Self>, every: Duration) {
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
    use http::{Request, Response};
    use hyper::body::{Body, Bytes, Incoming};
    use hyper_util::rt::TokioIo;
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

    fn get(authority: &Authority) -> http::request::Parts {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, authority.as_str())
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    async fn fetch(pool: &Arc<Pool>, authority: &Authority) -> Result<String, SendError> {
        let (_, mut body) = pool.send(authority, get(authority), ReqBody::Full(None)).await?;
        let mut text = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            text.extend_from_slice(&frame.expect("frame").into_data().unwrap_or_default());
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn pool(idle: Duration) -> Arc<Pool> {
        Arc::new(Pool::new(Duration::from_secs(2), idle, 8))
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
            // The upstream answered with `Connection: close`; give it a moment to close.
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

    /// A raw upstream: reads a request head, answers `answer` verbatim, then closes when `close`
    /// (else waits for the next request on the connection).
    async fn raw_upstream(answer: &'static [u8], close: bool) -> Authority {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("addr").to_string().parse().expect("authority");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.clear();
                            if s.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        authority
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_answers_arrive_whole_and_only_reusable_connections_are_kept() {
        let pool = pool(Duration::from_secs(60));
        let chunked = raw_upstream(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
            false,
        )
        .await;
        for _ in 0..3 {
            assert_eq!(fetch(&pool, &chunked).await, Ok("hello, world".to_string()));
        }
        assert_eq!(pool.held(&chunked), 1, "one kept connection served all three");

        let until_close = raw_upstream(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true).await;
        assert_eq!(fetch(&pool, &until_close).await, Ok("until the end".to_string()));
        assert_eq!(pool.held(&until_close), 0, "a close-delimited answer's connection is not kept");

        // An upstream that closes kept connections right after answering (its keep-alive ended):
        // the kept connection is passed over, or, if the close has not been seen yet, the GET
        // goes again on a new connection. No request fails.
        let closing = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true).await;
        for _ in 0..5 {
            assert_eq!(fetch(&pool, &closing).await, Ok("ok".to_string()));
        }

        // Ambiguous framing is refused, and its connection not kept.
        let ambiguous =
            raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", false).await;
        assert_eq!(fetch(&pool, &ambiguous).await, Err(SendError::Failed));
        assert_eq!(pool.held(&ambiguous), 0);
    }
}
