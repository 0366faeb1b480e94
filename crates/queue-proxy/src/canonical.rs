//! The canonical form of a request path, on which the route table decides (issue 16, item 3).
//!
//! Two parsers that read one path differently are how a request gets past a router: the proxy
//! matches `/api/v1/auth/%73ession` against its table, and the upstream decodes it to
//! `/api/v1/auth/session`. So the proxy decides on the path as an upstream would read it, and
//! forwards exactly that path:
//!
//! - RFC 3986 §6.2.2 normalisation: a percent-encoded unreserved character (`A-Z a-z 0-9 - . _ ~`)
//!   is decoded, and every other escape is written with upper-case hex digits. The case of the
//!   path itself is kept (paths are case-sensitive).
//! - What cannot be decided safely is refused: an encoded `/` (`%2F`), a `\` (raw or `%5C`),
//!   `.` and `..` segments (raw or encoded), `;` (raw, which some servers read as path
//!   parameters, or `%3B`), NUL and other control characters (raw or encoded), empty segments
//!   (`//`, which many servers merge), a malformed escape, and a path that does not start
//!   with `/`.

use std::borrow::Cow;

/// Why a path was refused (the `bad_path` answer's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadPath {
    NotAbsolute,
    BadEscape,
    EncodedSlash,
    Backslash,
    Semicolon,
    Control,
    DotSegment,
    EmptySegment,
}

impl BadPath {
    pub(crate) fn message(self) -> &'static str {
        match self {
            BadPath::NotAbsolute => "the path must start with `/`",
            BadPath::BadEscape => "the path has a `%` that is not followed by two hex digits",
            BadPath::EncodedSlash => "the path has an encoded `/` (`%2F`)",
            BadPath::Backslash => "the path has a `\\` (raw or `%5C`)",
            BadPath::Semicolon => "the path has a `;` (raw or `%3B`); path parameters are not accepted",
            BadPath::Control => "the path has a NUL or another control character",
            BadPath::DotSegment => "the path has `.` or `..` segments (also percent-encoded); send the normalised path",
            BadPath::EmptySegment => "the path has an empty segment (`//`)",
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A raw byte or a decoded escape that makes the path undecidable.
fn refused(b: u8) -> Option<BadPath> {
    match b {
        b'\\' => Some(BadPath::Backslash),
        b';' => Some(BadPath::Semicolon),
        0..=0x1f | 0x7f => Some(BadPath::Control),
        _ => None,
    }
}

/// The canonical form of `path` (borrowed when it already is), or why it is refused.
pub(crate) fn canonical_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(BadPath::NotAbsolute);
    }
    // The usual path has no escapes: checked in place, no allocation.
    let out = if b.contains(&b'%') { Cow::Owned(normalise_escapes(b)?) } else { Cow::Borrowed(path) };
    if let Some(e) = out.bytes().find_map(refused) {
        return Err(e);
    }
    check_segments(&out)?;
    Ok(out)
}

/// Decodes escapes of unreserved characters and upper-cases the hex of the others.
fn normalise_escapes(b: &[u8]) -> Result<String, BadPath> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
            return Err(BadPath::BadEscape);
        };
        let v = hi << 4 | lo;
        if v == b'/' {
            return Err(BadPath::EncodedSlash);
        }
        if let Some(e) = refused(v) {
            return Err(e);
        }
        if unreserved(v) {
            out.push(v);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
        }
        i += 3;
    }
    // Raw bytes are copied whole and only ASCII is decoded: still UTF-8.
    String::from_utf8(out).map_err(|_| BadPath::BadEscape)
}

/// No `.`/`..` segment and no empty segment but a final one (`/a/` is fine, `/a//b` is not).
fn check_segments(path: &str) -> Result<(), BadPath> {
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        match seg {
            "." | ".." => return Err(BadPath::DotSegment),
            "" if segs.peek().is_some() => return Err(BadPath::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        for (raw, canonical) in [
            ("/", "/"),
            ("/a/b/", "/a/b/"),
            ("/api/v1/auth/%73ession", "/api/v1/auth/session"),
            ("/api/v1/auth/sessio%6E", "/api/v1/auth/session"),
            ("/api/v1/auth/sessio%6e", "/api/v1/auth/session"),
            ("/a/%7e%2D%5f%2E%41", "/a/~-_.A"),
            ("/a/%20b%3a%c3%a9", "/a/%20b%3A%C3%A9"),
            ("/a/%25", "/a/%25"),
            ("/API/v1", "/API/v1"),
            ("/a/.b/...", "/a/.b/..."),
        ] {
            assert_eq!(canonical_path(raw).unwrap(), canonical, "{raw}");
        }
        assert!(matches!(canonical_path("/a/b").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn undecidable_paths_are_refused() {
        for (raw, why) in [
            ("*", BadPath::NotAbsolute),
            ("", BadPath::NotAbsolute),
            ("/a/%2fb", BadPath::EncodedSlash),
            ("/a/%2F", BadPath::EncodedSlash),
            ("/a/%5cb", BadPath::Backslash),
            ("/a\\b", BadPath::Backslash),
            ("/a/b;x", BadPath::Semicolon),
            ("/a;x/b", BadPath::Semicolon),
            ("/a/b%3Bx", BadPath::Semicolon),
            ("/a/%00", BadPath::Control),
            ("/a/%0a", BadPath::Control),
            ("/a/%7F", BadPath::Control),
            ("/a/%", BadPath::BadEscape),
            ("/a/%2", BadPath::BadEscape),
            ("/a/%zz", BadPath::BadEscape),
            ("/a/../b", BadPath::DotSegment),
            ("/a/./b", BadPath::DotSegment),
            ("/..", BadPath::DotSegment),
            ("/a/%2e%2E/b", BadPath::DotSegment),
            ("/a/.%2e", BadPath::DotSegment),
            ("/a/%2e", BadPath::DotSegment),
            ("/a//b", BadPath::EmptySegment),
            ("//a", BadPath::EmptySegment),
        ] {
            assert_eq!(canonical_path(raw), Err(why), "{raw}");
        }
    }
}
