//! What a worker thread's requests reach: the proxy's state, the worker's own pool of upstream
//! connections and its response deadlines (listener.rs makes one per worker thread; ADR 0007).

use std::sync::Arc;

use crate::ProxyState;
use crate::deadline::Deadlines;
use crate::pool::Pool;

/// One worker thread's context, shared by its connections.
pub(crate) struct Worker {
    pub(crate) state: Arc<ProxyState>,
    /// Keep-alive connections to plain-http upstreams (and the platform app), this worker's own.
    pub(crate) pool: Arc<Pool>,
    /// `http://127.0.0.1:port`: queue-platform's app, for the platform endpoints.
    pub(crate) internal: http::uri::Authority,
    /// The response deadlines of this worker's requests (one timer between them).
    pub(crate) deadlines: Deadlines,
}
