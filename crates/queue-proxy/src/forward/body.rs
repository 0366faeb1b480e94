//! The bodies of a forwarded exchange: the client's request body, read whole (within its
//! limit) before the request takes an upstream slot, and the response body on its way to the
//! client — the proxy's own answer, a platform endpoint's, or an upstream's relayed as it
//! arrives ([`Relay`]: it holds the upstream slot and the client's slot until it is done,
//! watches the upstream's pauses, and copies the body for the shadow comparison).

use futures_util::{Stream, StreamExt};
use http::header::HeaderMap;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::clients::ClientSlot;
use crate::error::ForwardError;
use crate::shadow::Outcome;
use crate::upstream::UpBody;

/// A body as a stream of data chunks (reqwest takes and gives them this way).
pub(super) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The data frames of a body as a stream (trailers are not forwarded).
pub(super) fn data_stream<B>(body: B) -> ByteStream
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), body)),
            }
        }
    }))
}

/// The request's whole body (`None` when it has none), at most `limit` bytes. A declared
/// `Content-Length` over the limit is refused before anything is read.
pub(super) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Option<Bytes>, ForwardError> {
    if body.is_end_stream() {
        return Ok(None);
    }
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ForwardError::client_too_large(limit));
    }
    let mut stream = data_stream(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ForwardError::client_unreadable())?;
        len += chunk.len();
        if len > limit {
            return Err(ForwardError::client_too_large(limit));
        }
        chunks.push(chunk);
    }
    Ok(Some(match chunks.len() {
        // One frame (the usual small body): no copy.
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = Vec::with_capacity(len);
            for c in &chunks {
                whole.extend_from_slice(c);
            }
            Bytes::from(whole)
        }
    }))
}

/// Copies the primary's body for the shadow comparison as it streams past (up to the cap).
pub(super) struct Tee {
    tx: Option<oneshot::Sender<Outcome>>,
    buf: Vec<u8>,
    cap: usize,
    over: bool,
    status: u16,
    /// Bytes still to come, when the response has a `Content-Length`.
    remaining: Option<u64>,
}

impl Tee {
    /// A copy of at most `cap` bytes of a primary answer with `status`, for `tx`; `remaining`
    /// is its `Content-Length`, when it has one.
    pub(super) fn new(tx: oneshot::Sender<Outcome>, cap: usize, status: u16, remaining: Option<u64>) -> Self {
        Self { tx: Some(tx), buf: Vec::new(), cap, over: false, status, remaining }
    }

    /// Hands the copy to the shadow comparison (once).
    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let body = (!self.over).then(|| Bytes::from(std::mem::take(&mut self.buf)));
            let _ = tx.send(Outcome { status: self.status, body });
        }
    }
}

/// A response body on its way to the client: a proxy error's, a platform endpoint's, or an
/// upstream's (relayed, with its permit, read timeout and shadow tee).
pub(crate) enum RespBody {
    Full(Option<Bytes>),
    Plain(UpBody),
    Relay(Relay),
}

impl hyper::body::Body for RespBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RespBody::Relay(r) => r.poll_data(cx).map(|c| c.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Plain(b) => b.is_end_stream(),
            RespBody::Relay(r) => match &r.inner {
                UpstreamBody::Direct(b) => b.is_end_stream() && r.tee.as_ref().is_none_or(|t| t.tx.is_none()),
                UpstreamBody::Reqwest(_) => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Plain(b) => b.size_hint(),
            RespBody::Relay(r) => match &r.inner {
                UpstreamBody::Direct(b) => b.size_hint(),
                UpstreamBody::Reqwest(_) => SizeHint::default(),
            },
        }
    }
}

/// An upstream's response body: from the hyper client (plain http upstreams), or from reqwest
/// (https upstreams, which need its TLS set-up).
pub(super) enum UpstreamBody {
    Direct(UpBody),
    Reqwest(ByteStream),
}

/// The upstream body on its way to the client; holds the upstream's in-flight permit until
/// the body is done (or the client goes away). A pause longer than `read_timeout` while
/// reading it ends the body with an error (the client's connection is aborted).
pub(crate) struct Relay {
    inner: UpstreamBody,
    tee: Option<Tee>,
    read_timeout: Duration,
    /// Armed only while the upstream keeps us waiting; reused across pauses.
    pause: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
    _permit: OwnedSemaphorePermit,
    /// The client's place in its per-client cap, given back with the permit.
    _client: ClientSlot,
}

impl Relay {
    /// Relays `inner`, holding the upstream's `permit` and the client's slot until it is done.
    pub(super) fn new(
        inner: UpstreamBody,
        tee: Option<Tee>,
        read_timeout: Duration,
        permit: OwnedSemaphorePermit,
        client: ClientSlot,
    ) -> Self {
        Self { inner, tee, read_timeout, pause: None, _permit: permit, _client: client }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        match &mut self.inner {
            UpstreamBody::Direct(body) => loop {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                        // Trailers are not forwarded.
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
            UpstreamBody::Reqwest(s) => s.as_mut().poll_next(cx),
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let polled = self.poll_inner(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((armed, _)) = self.pause.as_mut() {
                    *armed = false;
                }
                if let Some(t) = self.tee.as_mut() {
                    if !t.over {
                        if t.buf.len() + chunk.len() > t.cap {
                            t.over = true;
                            t.buf = Vec::new();
                        } else {
                            t.buf.extend_from_slice(chunk);
                        }
                    }
                    if let Some(r) = t.remaining.as_mut() {
                        *r = r.saturating_sub(chunk.len() as u64);
                        if *r == 0 {
                            t.finish();
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(t) = self.tee.as_mut() {
                    t.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {}
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.read_timeout;
                let (armed, sleep) =
                    self.pause.get_or_insert_with(|| (false, Box::pin(tokio::time::sleep_until(deadline))));
                if !*armed {
                    sleep.as_mut().reset(deadline);
                    *armed = true;
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the upstream paused longer than the read timeout",
                    );
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        polled
    }
}
