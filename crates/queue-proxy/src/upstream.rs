//! One HTTP/1.1 exchange with a plain-http upstream, on a connection from the worker's pool
//! (pool.rs): the request head written in one piece, the response head parsed (framing.rs),
//! and the response body read straight from the socket by whoever polls it (the client's
//! connection task), with no task or channel in between (docs/proxy.md, "Upstream
//! connections"; ADR 0007). [`send`] takes a connection (or opens one), runs the exchange, and
//! sends an idempotent request without a body once more on a new connection when a kept one
//! turns out to have been closed by the upstream (the error's [`Retry`](crate::error::Retry)).
//!
//! Only the upstream side is ours: clients are still served by hyper's server, which parses and
//! checks every request before it gets here. A response that fails (framing.rs is strict) has
//! its connection closed rather than reused.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWriteExt;

use crate::conn::Conn;
use crate::error::ForwardError;
use crate::framing::{Decoded, Framing, decode_chunk, parse_head};
use crate::pool::Pool;

/// The longest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;

/// A request body on its way upstream: the client's as it came (to the platform endpoints),
/// or whole (a forwarded request's, read before it took an upstream slot).
pub(crate) enum ReqBody {
    Incoming(Incoming),
    Full(Option<Bytes>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Sends the request (origin-form URI; `Host` becomes `authority`) to `authority` over a
/// connection from `pool` and returns the response head with its body, which reads from the
/// connection as it is polled and hands the connection back when it is complete. A kept
/// connection that the upstream closed just before the request (nothing came back at all) is
/// replaced by a new one and the request sent again, only when that is safe: an idempotent
/// method and no body.
pub(crate) async fn send(
    pool: &Arc<Pool>,
    authority: &Authority,
    head: http::request::Parts,
    body: ReqBody,
) -> Result<(http::response::Parts, UpBody), ForwardError> {
    let replayable = head.method.is_idempotent() && body.is_end_stream();
    let (conn, reused) = match pool.checkout(authority) {
        Some(c) => (c, true),
        None => (pool.connect(authority).await?, false),
    };
    let first = match exchange(conn, &head, body, pool, authority).await {
        Err(e) if e.may_retry(reused, replayable) => {
            let conn = pool.connect(authority).await?;
            exchange(conn, &head, ReqBody::Full(None), pool, authority).await
        }
        other => other,
    };
    first.inspect_err(|e| tracing::debug!(error = %e, "upstream exchange failed"))
}

/// Sends the request (with `Host` set to `authority`, whatever the head holds) and reads the
/// response head; the body is returned to be polled, and gives the connection back to `pool`
/// when it is done (if the response allowed keep-alive).
async fn exchange(
    mut conn: Conn,
    head: &http::request::Parts,
    mut body: ReqBody,
    pool: &Arc<Pool>,
    authority: &Authority,
) -> Result<(http::response::Parts, UpBody), ForwardError> {
    let failed = |what: &str, e: std::io::Error| ForwardError::io(what, &e);
    // The request body's framing: the client's Content-Length (hyper's server checked the body
    // against it), a buffered body's own length, or chunked.
    let known = match &body {
        ReqBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
        _ if body.is_end_stream() => Some(0),
        _ => head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()),
    };
    let mut out = std::mem::take(&mut conn.out);
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    // Always the upstream's authority (the client's `Host` travels as `X-Forwarded-Host`).
    out.extend_from_slice(authority.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == http::header::HOST {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let chunked = match known {
        Some(0) if !matches!(head.method, Method::POST | Method::PUT | Method::PATCH) => false,
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            false
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            true
        }
    };
    out.extend_from_slice(b"\r\n");
    if let ReqBody::Full(Some(b)) = &mut body {
        out.extend_from_slice(b);
        body = ReqBody::Full(None);
    }
    conn.io.write_all(&out).await.map_err(|e| failed("writing the request", e))?;
    if out.capacity() <= 64 * 1024 {
        conn.out = out;
    }
    if !body.is_end_stream() {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|e| ForwardError::protocol(format!("reading the client's body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if chunked {
                conn.io
                    .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .await
                    .map_err(|e| failed("writing the request body", e))?;
            }
            conn.io.write_all(&data).await.map_err(|e| failed("writing the request body", e))?;
            if chunked {
                conn.io.write_all(b"\r\n").await.map_err(|e| failed("writing the request body", e))?;
            }
        }
        if chunked {
            conn.io.write_all(b"0\r\n\r\n").await.map_err(|e| failed("writing the request body", e))?;
        }
    }

    loop {
        let parsed = parse_head(&mut conn.buf, head.method == Method::HEAD)?;
        if let Some((parts, framing, keep_alive)) = parsed {
            if parts.status.is_informational() {
                // 100 Continue, 103 Early Hints: not forwarded; the real answer follows.
                if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ForwardError::protocol("the upstream switched protocols"));
                }
                continue;
            }
            let done = framing == Framing::Length(0);
            let mut up = UpBody {
                conn: Some(conn),
                framing,
                keep_alive: keep_alive && framing != Framing::Close,
                pool: pool.clone(),
                authority: authority.clone(),
            };
            if done {
                up.finish();
            }
            return Ok((parts, up));
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(ForwardError::protocol("the upstream's response head is too large"));
        }
        let before = conn.buf.len();
        match conn.fill().await {
            Ok(0) if before == 0 => return Err(ForwardError::closed_early()),
            Ok(0) => return Err(ForwardError::protocol("the upstream closed in the middle of a response head")),
            Ok(_) => {}
            Err(e) if before == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ForwardError::closed_early());
            }
            Err(e) => return Err(failed("reading the response", e)),
        }
    }
}

/// An upstream's response body, read from its connection as it is polled. When the body is
/// complete the connection goes back to the pool (if it may be kept); dropped before that, the
/// connection is closed.
pub(crate) struct UpBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    authority: Authority,
}

impl UpBody {
    /// The body is complete: hand the connection back.
    fn finish(&mut self) {
        self.framing = Framing::Length(0);
        if let Some(conn) = self.conn.take()
            && self.keep_alive
        {
            self.pool.checkin(&self.authority, conn);
        }
    }

    fn invalid(&mut self, what: &str) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()))))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => return self.invalid("the upstream closed before the end of the body"),
                            Ok(_) => {}
                            Err(e) => {
                                self.conn = None;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                    }
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    self.framing = Framing::Length(left - n as u64);
                    if left == n as u64 {
                        // Handed back now: with a known length the server stops polling once
                        // the last byte is out.
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                self.conn = None;
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                self.conn = None;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match decode_chunk(&mut conn.buf, state) {
                    Ok(Decoded::Data(data, next)) => {
                        self.framing = Framing::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Moved(next)) => self.framing = Framing::Chunked(next),
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                        Ok(0) => return self.invalid("the upstream closed in the middle of a chunked body"),
                        Ok(_) => {}
                        Err(e) => {
                            self.conn = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    },
                    Err(what) => return self.invalid(what),
                },
            }
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use http::{Request, Response};
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
                        Ok::<_, std::convert::Infallible>(Response::new("ok".to_string()))
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

    async fn fetch(pool: &Arc<Pool>, authority: &Authority) -> Result<String, Kind> {
        let (_, mut body) = send(pool, authority, get(authority), ReqBody::Full(None)).await.map_err(|e| e.kind)?;
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
        assert_eq!(fetch(&pool, &refused).await, Err(Kind::ConnectRefused));
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
        assert_eq!(fetch(&pool, &ambiguous).await, Err(Kind::Protocol));
        assert_eq!(pool.held(&ambiguous), 0);
    }
}
