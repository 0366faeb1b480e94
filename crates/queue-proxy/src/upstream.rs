//! One HTTP/1.1 exchange with a plain-http upstream, on a connection from the worker's pool
//! (pool.rs): the request head written in one piece, the response head parsed with httparse,
//! and the response body read straight from the socket by whoever polls it (the client's
//! connection task), with no task or channel in between (docs/proxy.md, "Upstream
//! connections"; ADR 0007).
//!
//! Only the upstream side is ours: clients are still served by hyper's server, which parses and
//! checks every request before it gets here. The framing rules are RFC 9112's, and strict: a
//! response whose length is ambiguous (`Transfer-Encoding` beside `Content-Length`, differing
//! `Content-Length`s, a coding other than `chunked` last, a malformed chunk) fails, and its
//! connection is closed rather than reused, so one bad answer cannot shift the next one.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::forward::ReqBody;
use crate::pool::Pool;

/// The longest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Response headers at most (httparse's array lives on the stack).
const MAX_HEADERS: usize = 100;
/// How much a read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;

/// A keep-alive connection to an upstream, with what has been read and not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The request head being written (kept: its room is reused by the next request).
    out: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection ended before any byte of a response (a reused connection the upstream
    /// had just closed, typically).
    ClosedEarly,
    /// Anything else: a reset, a malformed or ambiguous response, a failing request body.
    Failed(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClosedEarly => f.write_str("the connection closed before any response"),
            Self::Failed(what) => f.write_str(what),
        }
    }
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self { io, buf: BytesMut::new(), out: Vec::new() }
    }

    /// Whether an idle connection may be used: the upstream has neither closed it nor sent
    /// anything unasked. Costs no system call unless the socket became readable while idle.
    pub fn still_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            // Readable while idle: closed (0 bytes), an error, or unsolicited bytes; only
            // "nothing after all" (a stale readiness) keeps it.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            Poll::Ready(Err(_)) => false,
        }
    }

    /// Reads what the kernel has into the buffer's spare room (no zero-filling: tokio's
    /// `read_buf` reads into uninitialised capacity safely); `Ok(0)` is end of stream. A new
    /// allocation only when less than a quarter of [`READ_CHUNK`] is left, so one buffer
    /// serves many small responses.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection (which is then not reused).
    Close,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (trailers are not forwarded).
    Trailers,
}

/// Sends the request (with `Host` set to `authority`, whatever the head holds) and reads the
/// response head; the body is returned to be polled.
/// `reusable` is whether the connection may go back to the pool when the body is done.
pub async fn exchange(
    mut conn: Conn,
    head: &http::request::Parts,
    mut body: ReqBody,
    pool: &Arc<Pool>,
    authority: &http::uri::Authority,
) -> Result<(http::response::Parts, UpBody), ExchangeError> {
    let failed = |what: &str, e: std::io::Error| ExchangeError::Failed(format!("{what}: {e}"));
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
            let frame = frame.map_err(|e| ExchangeError::Failed(format!("reading the client's body: {e}")))?;
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
                    return Err(ExchangeError::Failed("the upstream switched protocols".into()));
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
            return Err(ExchangeError::Failed("the upstream's response head is too large".into()));
        }
        let before = conn.buf.len();
        match conn.fill().await {
            Ok(0) if before == 0 => return Err(ExchangeError::ClosedEarly),
            Ok(0) => return Err(ExchangeError::Failed("the upstream closed in the middle of a response head".into())),
            Ok(_) => {}
            Err(e) if before == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ExchangeError::ClosedEarly);
            }
            Err(e) => return Err(failed("reading the response", e)),
        }
    }
}

/// Parses a response head from the front of `buf` (consuming it) if it is complete: the
/// head, the body's framing, and whether the connection may be kept.
fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(http::response::Parts, Framing, bool)>, ExchangeError> {
    let bad = |what: &str| ExchangeError::Failed(format!("invalid response from the upstream: {what}"));
    if buf.is_empty() {
        return Ok(None);
    }
    // Slots left uninitialised (httparse writes those it uses): no 3 KiB of zeroing per head.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let code = res.code.ok_or_else(|| bad("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| bad("status"))?;
    let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let raw = &*res.headers;
    // One pass over the names (compared by length first): which fields frame the body or are
    // hop-by-hop.
    let mut class = [Field::Other; MAX_HEADERS];
    let (mut has_te, mut has_cl, mut has_connection) = (false, false, false);
    for (h, c) in raw.iter().zip(class.iter_mut()) {
        *c = Field::of(h.name);
        has_te |= *c == Field::TransferEncoding;
        has_cl |= *c == Field::ContentLength;
        has_connection |= *c == Field::Connection;
    }
    let fields = || raw.iter().zip(class.iter().copied());
    let values = move |want: Field| {
        fields().filter(move |(_, c)| *c == want).map(|(h, _)| std::str::from_utf8(h.value).unwrap_or("\u{0}"))
    };

    // Keep-alive, and the names `Connection` lists (hop-by-hop for this message).
    let mut keep_alive = version == Version::HTTP_11;
    let mut listed: Vec<&str> = Vec::new();
    if has_connection {
        for token in values(Field::Connection).flat_map(|v| v.split(',')).map(str::trim) {
            if token.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case("keep-alive") {
                keep_alive |= version == Version::HTTP_10;
            } else if !token.is_empty() {
                listed.push(token);
            }
        }
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if has_te {
        if has_cl {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        let last = values(Field::TransferEncoding)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .unwrap_or("");
        if last.eq_ignore_ascii_case("chunked") { Framing::Chunked(Chunk::Size) } else { Framing::Close }
    } else if has_cl {
        let mut lengths = values(Field::ContentLength)
            .flat_map(|v| v.split(','))
            .map(|v| v.trim())
            .map(|v| v.parse::<u64>().ok().filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())));
        let first = lengths.next().flatten().ok_or_else(|| bad("Content-Length"))?;
        if lengths.any(|l| l != Some(first)) {
            return Err(bad("differing Content-Lengths"));
        }
        Framing::Length(first)
    } else {
        Framing::Close
    };

    // The head is copied out (a few hundred bytes), so the read buffer stays unshared and its
    // room is reused for the next response instead of a new allocation; the values share the
    // copy. Hop-by-hop fields (and those `Connection` names) are left out here rather than
    // removed later.
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(raw.len());
    for (h, c) in fields() {
        if c.hop_by_hop() || listed.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("header name"))?;
        let start = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(bytes.slice(start..start + h.value.len()))
            .map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    buf.advance(len);
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, framing, keep_alive)))
}

/// What a response field is to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Another hop-by-hop field (RFC 9110 §7.6.1): `keep-alive`, `te`, `trailer`, `upgrade`,
    /// `proxy-*`.
    HopByHop,
}

impl Field {
    fn of(name: &str) -> Self {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match name.len() {
            14 if is("content-length") => Self::ContentLength,
            17 if is("transfer-encoding") => Self::TransferEncoding,
            10 if is("connection") => Self::Connection,
            10 if is("keep-alive") => Self::HopByHop,
            2 if is("te") => Self::HopByHop,
            7 if is("trailer") || is("upgrade") => Self::HopByHop,
            16 if is("proxy-connection") => Self::HopByHop,
            18 if is("proxy-authenticate") => Self::HopByHop,
            19 if is("proxy-authorization") => Self::HopByHop,
            _ => Self::Other,
        }
    }

    fn hop_by_hop(self) -> bool {
        matches!(self, Self::TransferEncoding | Self::Connection | Self::HopByHop)
    }
}

/// An upstream's response body, read from its connection as it is polled. When the body is
/// complete the connection goes back to the pool (if it may be kept); dropped before that, the
/// connection is closed.
pub struct UpBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
    authority: http::uri::Authority,
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

/// One step of a chunked body's decoder.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes, Chunk),
    /// The decoder moved on without data (a size line, a chunk's CRLF, a trailer line).
    Moved(Chunk),
    End,
    NeedMore,
}

/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// One line (without its CRLF) from the front of `buf`, if complete.
fn line(buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= MAX_LINE => {
            let l = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(l))
        }
        Some(_) => Err("a chunked body's line is too long"),
        None if buf.len() > MAX_LINE => Err("a chunked body's line is too long"),
        None => Ok(None),
    }
}

fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> Result<Decoded, &'static str> {
    match state {
        Chunk::Size => {
            let Some(l) = line(buf)? else { return Ok(Decoded::NeedMore) };
            // `1a;name=value`: extensions are ignored.
            let digits = l.split(|b| *b == b';').next().unwrap_or(&[]);
            let digits =
                std::str::from_utf8(digits).map_err(|_| "a chunk size is not hex")?.trim_end_matches([' ', '\t']);
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("a chunk size is not hex");
            }
            let size = u64::from_str_radix(digits, 16).map_err(|_| "a chunk size is not hex")?;
            Ok(Decoded::Moved(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let n = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(n).freeze();
            let next = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
            Ok(Decoded::Data(data, next))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Decoded::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err("a chunk's data is not followed by CRLF");
            }
            buf.advance(2);
            Ok(Decoded::Moved(Chunk::Size))
        }
        Chunk::Trailers => match line(buf)? {
            None => Ok(Decoded::NeedMore),
            Some(l) if l.is_empty() => Ok(Decoded::End),
            Some(_) => Ok(Decoded::Moved(Chunk::Trailers)),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<(http::response::Parts, Framing, bool)>, ExchangeError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_head(&mut buf, head_request)
    }

    fn framing(text: &str) -> Result<Framing, String> {
        match parse(text, false) {
            Ok(Some((_, f, _))) => Ok(f),
            Ok(None) => Err("partial".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn response_heads_are_framed_strictly() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), Ok(Framing::Length(5)));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Framing::Chunked(Chunk::Size))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), Ok(Framing::Close));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Ok(Framing::Close));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"), Ok(Framing::Length(0)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"), Err("partial".into()));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "{bad:?} was accepted");
        }
        // A HEAD answer has no body whatever its Content-Length says.
        let (_, f, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap().unwrap();
        assert_eq!(f, Framing::Length(0));
    }

    #[test]
    fn fields_are_classified_like_the_hop_by_hop_list() {
        for name in crate::forward::HOP_BY_HOP_NAMES {
            assert!(Field::of(name).hop_by_hop(), "{name}");
            assert!(Field::of(&name.to_ascii_uppercase()).hop_by_hop(), "{name}");
        }
        for name in ["content-length", "content-type", "x-connection", "tee", "date"] {
            assert!(!Field::of(name).hop_by_hop(), "{name}");
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let keep = |t: &str| parse(t, false).unwrap().unwrap().2;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn the_head_is_consumed_and_the_body_left() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nX-A: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"[..],
        );
        let (parts, _, keep) = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(parts.status, StatusCode::CREATED);
        assert!(keep);
        // Hop-by-hop fields, and those `Connection` names, are not part of the forwarded head.
        let names: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-a", "content-length"]);
        assert_eq!(&buf[..], b"ok");
    }

    /// Decodes a whole chunked body fed in pieces of `step` bytes.
    fn dechunk(body: &[u8], step: usize) -> Result<Vec<u8>, &'static str> {
        let mut buf = BytesMut::new();
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunk(&mut buf, state)? {
                Decoded::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Decoded::Moved(next) => state = next,
                Decoded::End => return Ok(out),
                Decoded::NeedMore => {
                    if fed >= body.len() {
                        return Err("incomplete");
                    }
                    let end = (fed + step).min(body.len());
                    buf.extend_from_slice(&body[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_bad_ones_fail() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(dechunk(body, step).as_deref(), Ok(&b"hello, world"[..]), "step {step}");
        }
        assert_eq!(dechunk(b"0\r\n\r\n", 1).as_deref(), Ok(&b""[..]));
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"-1\r\n", b"fffffffffffffffff\r\n", b"5\r\nhel"] {
            assert!(dechunk(bad, 4).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
