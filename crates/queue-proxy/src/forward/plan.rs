//! Where a request goes: the route its (canonical) path and method match, the side it goes to
//! (pinned, shadow primary, phase, or a canary by cohort), the upstream on that side and the
//! path it gets there, and whether a copy goes to the other side (shadow). Reads the table in
//! force and, for user and tenant cohorts, the caller's identity; answers nothing itself.

use http::header::HeaderMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::ProxyState;
use crate::table::{Cohort, Reason, Side, Table, Upstream, bucket, in_percent};

/// Where one request goes.
pub(super) struct Plan<'t> {
    pub(super) route: &'t str,
    /// The route's position in the table; `None` for the default route.
    pub(super) index: Option<usize>,
    pub(super) side: Side,
    pub(super) reason: Reason,
    pub(super) upstream: &'t Upstream,
    /// The path upstream; `None`: the client's path, unchanged.
    pub(super) path: Option<String>,
    pub(super) shadow: Option<ShadowPlan<'t>>,
}

/// Where a shadowed request's copy goes.
pub(super) struct ShadowPlan<'t> {
    pub(super) side: Side,
    pub(super) upstream: &'t Upstream,
    pub(super) path: String,
    pub(super) ignore: Arc<Vec<String>>,
    pub(super) max_body: usize,
}

/// Why a request has nowhere to go.
pub(super) enum NoPlan<'t> {
    /// The path differs from a routed path only in letter case.
    LetterCase,
    /// The route's upstream on `side` is not in the table.
    NoUpstream { route: &'t str, side: Side },
    /// No route matches and the table has no `default_legacy`.
    NoRoute,
}

/// Decides where the request goes. `rewritten`: the canonical `path` differs from the client's,
/// so the legacy side gets it too (the Queue side's path is always rewritten from it).
pub(super) async fn plan<'t>(
    state: &ProxyState,
    table: &'t Table,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    rewritten: bool,
    client: IpAddr,
) -> Result<Plan<'t>, NoPlan<'t>> {
    let found = table.find(method, path);
    if letter_case_variant(table, method, path, found.as_ref().map(|m| m.index)) {
        return Err(NoPlan::LetterCase);
    }
    let mut plan = match found {
        Some(m) => {
            let route = m.route;
            let (side, reason) = match table.static_side(route) {
                Some(s) => s,
                None => {
                    let canary = route.canary.as_ref().map(|c| (c.percent, c.cohort)).unwrap_or((0.0, Cohort::Client));
                    let key = cohort_key(state, headers, canary.1, client).await;
                    let on_queue = in_percent(bucket(&table.canary_salt, &key), canary.0);
                    (if on_queue { Side::Queue } else { Side::Legacy }, Reason::Canary)
                }
            };
            let target = |s: Side| match s {
                Side::Legacy => (table.upstream(Side::Legacy, &route.legacy), None),
                Side::Queue => (table.upstream(Side::Queue, &route.queue_service), Some(table.queue_path(&m, path))),
            };
            let (Some(upstream), target_path) = target(side) else {
                return Err(NoPlan::NoUpstream { route: &route.name, side });
            };
            let shadow = route.shadow.as_ref().and_then(|s| {
                let sampled = s.percent >= 100.0 || in_percent(sample_bucket(), s.percent);
                if !sampled || !s.methods.iter().any(|m| m == method) {
                    return None;
                }
                let (up, p) = target(side.other());
                Some(ShadowPlan {
                    side: side.other(),
                    upstream: up?,
                    path: p.unwrap_or_else(|| path.to_string()),
                    ignore: Arc::new(s.ignore.clone()),
                    max_body: s.max_body_bytes,
                })
            });
            Plan { route: &route.name, index: Some(m.index), side, reason, upstream, path: target_path, shadow }
        }
        None => match table.default_legacy.as_deref().and_then(|d| table.upstream(Side::Legacy, d)) {
            Some(upstream) => Plan {
                route: "default",
                index: None,
                side: Side::Legacy,
                reason: Reason::Default,
                upstream,
                path: None,
                shadow: None,
            },
            None => return Err(NoPlan::NoRoute),
        },
    };
    if plan.path.is_none() && rewritten {
        plan.path = Some(path.to_string());
    }
    Ok(plan)
}

/// Whether `path` (with upper-case letters) matches another route once lower-cased than it
/// matches as it is: an upstream that ignores letter case (as some legacy servers do) would
/// serve it as that other route, so the proxy cannot decide it safely.
fn letter_case_variant(table: &Table, method: &str, path: &str, found: Option<usize>) -> bool {
    if !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    table.find(method, &lower).is_some_and(|m| Some(m.index) != found)
}

/// The key a canary cohort hashes: the validated user (or tenant), else the tenant header,
/// else the client address (an IPv6 client by its /64, which one host controls).
async fn cohort_key(state: &ProxyState, headers: &HeaderMap, cohort: Cohort, client: IpAddr) -> String {
    if cohort != Cohort::Client {
        let identity = match (&state.identity, session_token(headers, &state.cookie)) {
            (Some(ic), Some(token)) => ic.identify(&state.platform, &token).await,
            _ => None,
        };
        if cohort == Cohort::User
            && let Some(u) = identity.as_ref().and_then(|i| i.user_id.as_ref())
        {
            return format!("user:{u}");
        }
        let tenant = identity
            .and_then(|i| i.tenant_id)
            .or_else(|| headers.get(state.tenant_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string));
        if let Some(t) = tenant.filter(|t| !t.is_empty()) {
            return format!("tenant:{t}");
        }
    }
    format!("client:{}", queue_platform::net::limit_key(client))
}

/// The caller's session token: the session cookie, else `Authorization: Bearer`.
fn session_token(headers: &HeaderMap, cookie: &str) -> Option<String> {
    let from_cookie = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(cookie).and_then(|r| r.strip_prefix('=')).map(str::to_string));
    from_cookie
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        })
        .filter(|t| !t.is_empty() && t.len() <= 4096)
}

/// A uniform bucket from 0 to 9999 for shadow sampling (no system call per request).
fn sample_bucket() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static RNG: Cell<u64> = Cell::new((uuid::Uuid::new_v4().as_u128() as u64) | 1);
    }
    RNG.with(|r| {
        // xorshift64*
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 % 10_000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_buckets_spread_over_the_range() {
        let below_ten_percent = (0..100_000).filter(|_| sample_bucket() < 1_000).count();
        assert!((9_000..11_000).contains(&below_ten_percent), "{below_ten_percent}");
    }
}
