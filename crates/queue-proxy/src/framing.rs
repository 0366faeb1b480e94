//! HTTP/1.1 response framing (RFC 9112), strict: a response head parsed with httparse into an
//! `http` head, how its body is delimited, whether its connection may be kept, and the decoder
//! of chunked bodies. A response whose length is ambiguous (`Transfer-Encoding` beside
//! `Content-Length`, differing `Content-Length`s, a coding other than `chunked` last, a
//! malformed chunk) is refused, so that one bad answer cannot shift the next one on the same
//! connection. No I/O here: upstream.rs feeds the bytes it reads.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use crate::error::ForwardError;

/// Response headers at most (httparse's array lives on the stack).
const MAX_HEADERS: usize = 100;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection (which is then not reused).
    Close,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (trailers are not forwarded).
    Trailers,
}

/// Parses a response head from the front of `buf` (consuming it) if it is complete: the
/// head, the body's framing, and whether the connection may be kept.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(http::response::Parts, Framing, bool)>, ForwardError> {
    let bad = |what: &str| ForwardError::protocol(format!("invalid response from the upstream: {what}"));
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

/// One step of a chunked body's decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
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

pub(crate) fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> Result<Decoded, &'static str> {
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

    fn parse(text: &str, head_request: bool) -> Result<Option<(http::response::Parts, Framing, bool)>, ForwardError> {
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
        for name in crate::headers::HOP_BY_HOP_NAMES {
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
