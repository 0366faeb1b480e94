//! Nobody is signed out when a route moves (issue 19, item 2): a request to a route on Queue
//! that carries Raptor's session cookie (`identity.legacy_session_cookie`, `raptor_session`) and
//! no Queue session is signed in at Queue. `queuectl legacy import` brought Raptor's live
//! sessions into auth under the SHA-256 of the cookie's value, so the same value is a Queue
//! session token: the proxy asks auth whether it is a live one (identity.rs: the validation call
//! and cache of the canary cohorts), and when it is, forwards the request with
//! `queue_session=<the same value>` instead of Raptor's cookie, and the answer sets
//! `queue_session` in the browser with the session's absolute expiry (never later).
//!
//! The proxy grants nothing itself: the service the request reaches validates the session as it
//! does any other, so a session revoked since auth's cached answer is refused there. A value
//! auth does not know, or no answer from auth, changes nothing but the removal of Raptor's
//! cookie (it never reaches Queue's services): the request goes on without a Queue session.
//! Legacy routes never come here (Raptor keeps its cookie).

use chrono::{DateTime, Utc};
use http::header::{HeaderMap, HeaderValue};

use crate::ProxyState;
use crate::headers;
use crate::table::Side;

/// A Raptor session auth knows as a live Queue session.
pub(crate) struct Carried {
    token: String,
    expires: DateTime<Utc>,
}

/// For a request going to Queue: the Raptor session to carry over, if any (auth asked, within
/// the identity cache's bounds). Counted as carried or refused (by reason) when the request had
/// Raptor's cookie and no live Queue session.
///
/// A request with an `Authorization` header chose its credential: nothing is carried. A Queue
/// session cookie of its own wins while auth knows it as live; one auth refuses (revoked or
/// expired: the browser kept an old carried-over cookie after signing out at Raptor and signed
/// in there again) gives way to a live Raptor session, which replaces it.
pub(crate) async fn check(state: &ProxyState, h: &HeaderMap) -> Option<Carried> {
    let legacy = state.legacy_cookie.as_str();
    let identity = state.identity.as_ref()?;
    if legacy.is_empty() || h.contains_key(http::header::AUTHORIZATION) {
        return None;
    }
    let value = headers::cookie_value(h, legacy)?;
    let own = headers::cookie_value(h, &state.cookie);
    if own == Some(value) {
        // The session carried over before, under both names.
        return None;
    }
    let refused = |reason: &str| {
        state.metrics.legacy_sessions_refused.with_label_values(&[reason]).inc();
        None
    };
    // auth's session tokens and Raptor's (`secrets.token_urlsafe(32)`) are 43 base64url
    // characters; anything else cannot be a session and costs auth no call.
    if !headers::looks_like_session_token(value) {
        return if own.is_some() { None } else { refused("malformed") };
    }
    if let Some(own) = own {
        let stale = headers::looks_like_session_token(own)
            && matches!(identity.live_session(&state.platform, own).await, Ok(None));
        if !stale {
            return None;
        }
    }
    match identity.live_session(&state.platform, value).await {
        Ok(Some(id)) => {
            let expires = id.absolute_expires_at?;
            state.metrics.legacy_sessions_carried.inc();
            Some(Carried { token: value.to_string(), expires })
        }
        Ok(None) => refused("unknown"),
        Err(_) => {
            // auth's failure itself is logged (a warning) by identity.rs; this is per request, and a
            // flood of made-up values while auth is busy must not flood the log.
            tracing::debug!("a Raptor session was not carried over: auth could not validate it now");
            refused("unavailable")
        }
    }
}

/// The request's cookies on their way to Queue: Raptor's removed, and the carried session (if
/// any) as Queue's session cookie, in place of a stale one the request had.
pub(crate) fn to_queue(state: &ProxyState, h: &mut HeaderMap, carried: Option<&Carried>) {
    if state.legacy_cookie.is_empty() {
        return;
    }
    match carried {
        Some(c) => headers::rewrite_cookies(
            h,
            &[state.legacy_cookie.as_str(), state.cookie.as_str()],
            Some((state.cookie.as_str(), c.token.as_str())),
        ),
        None => headers::rewrite_cookies(h, &[state.legacy_cookie.as_str()], None),
    }
}

/// Whether the request carries one session under both names (Raptor's session, carried over).
pub(crate) fn shared_session(state: &ProxyState, h: &HeaderMap) -> bool {
    !state.legacy_cookie.is_empty()
        && headers::cookie_value(h, &state.legacy_cookie)
            .is_some_and(|v| headers::cookie_value(h, &state.cookie) == Some(v))
}

/// The answer to a request that carried one session under both names: when the side that
/// answered clears its own cookie (a sign-out), the browser's other cookie, the same session
/// under the other name, is cleared with it. (The session itself ends on both sides: auth
/// writes a sign-out at Queue back to Raptor, and the sync brings a sign-out at Raptor.)
pub(crate) fn mirror_sign_out(state: &ProxyState, answered_by: Side, h: &mut HeaderMap) {
    let (cleared, other) = match answered_by {
        Side::Legacy => (state.legacy_cookie.as_str(), state.cookie.as_str()),
        Side::Queue => (state.cookie.as_str(), state.legacy_cookie.as_str()),
    };
    let clears =
        h.get_all(http::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| clears_cookie(v, cleared));
    if !clears {
        return;
    }
    let secure = if state.cookie_secure { "; Secure" } else { "" };
    let removal =
        format!("{other}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{secure}");
    if let Ok(v) = HeaderValue::from_str(&removal) {
        h.append(http::header::SET_COOKIE, v);
    }
}

/// Whether a `Set-Cookie` value removes cookie `name`: an empty value, or `Max-Age` of 0 or less.
fn clears_cookie(set_cookie: &str, name: &str) -> bool {
    let mut parts = set_cookie.split(';');
    let Some((n, value)) = parts.next().and_then(|p| p.split_once('=')) else {
        return false;
    };
    if n.trim() != name {
        return false;
    }
    value.trim().is_empty()
        || parts.filter_map(|a| a.split_once('=')).any(|(k, v)| {
            k.trim().eq_ignore_ascii_case("max-age") && v.trim().parse::<i64>().is_ok_and(|secs| secs <= 0)
        })
}

/// The answer to a carried request: `Set-Cookie` of Queue's session with the session's absolute
/// expiry, unless the upstream's answer sets that cookie itself (a sign-in or sign-out wins).
/// The answer is not to be stored by any cache (it carries a session token).
pub(crate) fn answer(state: &ProxyState, h: &mut HeaderMap, carried: &Carried, now: DateTime<Utc>) {
    let sets_it = h
        .get_all(http::header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split_once('=').is_some_and(|(name, _)| name.trim() == state.cookie)));
    if sets_it {
        return;
    }
    let Ok(v) = HeaderValue::from_str(&set_cookie(&state.cookie, carried, state.cookie_secure, now)) else {
        return;
    };
    h.append(http::header::SET_COOKIE, v);
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The `Set-Cookie` value, with auth's attributes (`Path=/; HttpOnly; SameSite=Lax`, `Secure`
/// when the public scheme is https) and both `Max-Age` (as auth sets it) and `Expires`, each
/// rounded down to the second so neither is later than the session's absolute expiry.
fn set_cookie(name: &str, c: &Carried, secure: bool, now: DateTime<Utc>) -> String {
    let max_age = (c.expires - now).num_seconds().max(0);
    let expires = c.expires.format("%a, %d %b %Y %H:%M:%S GMT");
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}; Expires={expires}{secure}", c.token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_cookie_ends_with_the_session_never_later() {
        let now: DateTime<Utc> = "2026-12-07T18:00:00Z".parse().unwrap();
        let expires: DateTime<Utc> = "2026-12-21T17:59:59.900Z".parse().unwrap();
        let c = Carried { token: "t".repeat(43), expires };
        let v = set_cookie("queue_session", &c, false, now);
        assert_eq!(
            v,
            format!(
                "queue_session={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=1209599; \
                 Expires=Mon, 21 Dec 2026 17:59:59 GMT",
                "t".repeat(43)
            )
        );
        assert!(set_cookie("queue_session", &c, true, now).ends_with("; Secure"));
        let past = Carried { token: "t".into(), expires: now - chrono::Duration::seconds(5) };
        assert!(set_cookie("queue_session", &past, false, now).contains("Max-Age=0;"));
    }

    #[test]
    fn a_sign_out_is_told_by_an_emptied_or_expired_cookie() {
        // Flask's delete_cookie and auth's sign-out.
        assert!(clears_cookie(
            "raptor_session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",
            "raptor_session"
        ));
        assert!(clears_cookie("queue_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0", "queue_session"));
        assert!(clears_cookie("queue_session=x; max-age=-1", "queue_session"));
        assert!(!clears_cookie("queue_session=abc; Path=/; Max-Age=1209600", "queue_session"), "a sign-in");
        assert!(!clears_cookie("raptor_session_x=; Max-Age=0", "raptor_session"), "another cookie");
        assert!(!clears_cookie("garbage", "raptor_session"));
    }
}
