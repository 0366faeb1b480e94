//! A keep-alive connection to a plain-http upstream: the socket, what has been read from it
//! and not yet used, and the room the next request head is written into. The pool (pool.rs)
//! keeps idle ones; an exchange (upstream.rs) writes to and reads from one.

use bytes::BytesMut;
use std::future::Future;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// How much a read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;

/// A keep-alive connection to an upstream, with what has been read and not yet used.
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
    /// The request head being written (kept: its room is reused by the next request).
    pub(crate) out: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self { io, buf: BytesMut::new(), out: Vec::new() }
    }

    /// Whether an idle connection may be used: the upstream has neither closed it nor sent
    /// anything unasked. Costs no system call unless the socket became readable while idle.
    pub(crate) fn still_usable(&mut self) -> bool {
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
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }

    pub(crate) async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}
