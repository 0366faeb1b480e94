//! Keep-alive connections to plain-http upstreams, one pool per worker thread (docs/proxy.md,
//! "Forwarding"; ADR 0007).
//!
//! A connection (conn.rs) is a plain `TcpStream` with its read buffer; the HTTP/1.1 exchange on
//! it is upstream.rs, which takes connections from here and gives them back. Taking a
//! connection is a lookup in the worker's own list (no lock contention: one thread uses it),
//! the most recently used first; a request that finds none opens a new one. A connection comes
//! back when its response body has been read to the end (and the response allowed keep-alive);
//! one dropped before that is closed. A kept connection that became readable while idle (the
//! upstream closed it, or sent something unasked) is dropped when met, as are those idle
//! longer than `pool_idle_timeout_secs`; at most `pool_max_idle_per_host` are kept per
//! upstream.
//!
//! This replaced hyper-util's general-purpose pooled client and then hyper's client
//! connections: with them, each request crossed to a connection task through channels, and
//! the client side cost about 19k of the proxy's ~39k instructions per request.

use http::uri::Authority;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::error::ForwardError;

/// A pooled connection, and since when it has been idle.
struct Idle {
    conn: Conn,
    since: Instant,
}

pub(crate) struct Pool {
    /// Per upstream authority, its connections (most recently used last). A list, not a map:
    /// there are few upstreams, and comparing a short authority costs less than hashing it.
    idle: Mutex<Vec<(Authority, Vec<Idle>)>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), connect_timeout, idle_timeout, max_idle }
    }

    /// The most recently used idle connection to `authority` that is still usable; drops the
    /// closed and expired ones met on the way.
    pub(crate) fn checkout(&self, authority: &Authority) -> Option<Conn> {
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
    pub(crate) fn checkin(&self, authority: &Authority, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if list_of(&mut idle, authority).is_none() {
            idle.push((authority.clone(), Vec::new()));
        }
        let Some(list) = list_of(&mut idle, authority) else { return };
        if list.len() < self.max_idle {
            list.push(Idle { conn, since: Instant::now() });
        }
    }

    /// A new connection to `authority`, within the connect timeout.
    pub(crate) async fn connect(&self, authority: &Authority) -> Result<Conn, ForwardError> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect((host, port))).await {
                Err(_) => return Err(ForwardError::connect_timeout()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(ForwardError::connect_timeout()),
                Ok(Err(_)) => return Err(ForwardError::connect_refused()),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }

    /// Drops the connections idle longer than the idle timeout (and those the upstream closed).
    pub(crate) fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (_, list) in idle.iter_mut() {
            list.retain_mut(|e| now.duration_since(e.since) <= self.idle_timeout && e.conn.still_usable());
        }
        idle.retain(|(_, l)| !l.is_empty());
    }

    /// Connections held for `authority`.
    #[cfg(test)]
    pub(crate) fn held(&self, authority: &Authority) -> usize {
        list_of(&mut self.idle.lock().unwrap_or_else(|p| p.into_inner()), authority).map_or(0, |l| l.len())
    }

    /// Sweeps every `every` until the worker's runtime ends.
    pub(crate) async fn sweeper(self: Arc<Self>, every: Duration) {
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
