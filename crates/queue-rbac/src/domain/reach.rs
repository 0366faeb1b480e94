//! A user's reach: the permissions they hold at a scope, through their active grants, and
//! until when. Nobody acts beyond their own reach, in scope or in time.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::Error;
use super::checker::Checker;
use super::model::Scope;

/// How long a user's reach lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachUntil {
    Forever,
    Until(DateTime<Utc>),
}

/// Does `user` hold `permission` through a grant whose scope contains `scope`?
#[tracing::instrument(skip_all)]
pub async fn holds(checker: &Arc<Checker>, user: &str, permission: &str, scope: &Scope) -> Result<bool, Error> {
    let revision = checker.sync().await?;
    let grants = checker.grants_of(user, revision).await?;
    let now = Utc::now();
    Ok(grants.iter().any(|g| {
        g.expires_at.is_none_or(|e| e > now) && g.scope.contains(scope) && g.permissions.iter().any(|p| p == permission)
    }))
}

/// A user may only act within their own reach: every permission in `needed` held through an
/// active grant whose scope contains `scope`. Returns when that reach ends: for each permission
/// the latest expiry among the grants that give it there (none: forever), and the earliest of
/// those over all permissions (the user stops holding the whole set then).
#[tracing::instrument(skip_all)]
pub async fn require(
    checker: &Arc<Checker>,
    user: &str,
    scope: &Scope,
    needed: &[String],
) -> Result<ReachUntil, Error> {
    let revision = checker.sync().await?;
    let grants = checker.grants_of(user, revision).await?;
    let now = Utc::now();
    let mut until = ReachUntil::Forever;
    for p in needed {
        let covering = grants.iter().filter(|g| {
            g.expires_at.is_none_or(|e| e > now) && g.scope.contains(scope) && g.permissions.iter().any(|x| x == p)
        });
        let mut held: Option<ReachUntil> = None;
        for g in covering {
            let this = g.expires_at.map_or(ReachUntil::Forever, ReachUntil::Until);
            held = Some(match (held, this) {
                (Some(ReachUntil::Forever), _) | (_, ReachUntil::Forever) => ReachUntil::Forever,
                (Some(ReachUntil::Until(a)), ReachUntil::Until(b)) => ReachUntil::Until(a.max(b)),
                (None, t) => t,
            });
        }
        let Some(held) = held else {
            return Err(Error::Forbidden(format!(
                "you do not hold `{p}` at that scope, so you cannot grant or revoke it there"
            )));
        };
        until = match (until, held) {
            (ReachUntil::Forever, t) | (t, ReachUntil::Forever) => t,
            (ReachUntil::Until(a), ReachUntil::Until(b)) => ReachUntil::Until(a.min(b)),
        };
    }
    Ok(until)
}

/// A granter cannot give more time than they have: a grant made by a user whose own reach ends
/// at E must itself expire by E (and so cannot be without expiry).
pub fn check_expiry_cap(until: ReachUntil, requested: Option<DateTime<Utc>>) -> Result<(), Error> {
    let ReachUntil::Until(cap) = until else { return Ok(()) };
    let cap_text = cap.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    match requested {
        None => Err(Error::Forbidden(format!(
            "your own grant expires at {cap_text}: give an `expires_at` no later than that (a grant without expiry \
             would outlast yours)"
        ))),
        Some(e) if e > cap => Err(Error::Forbidden(format!(
            "`expires_at` is later than your own grant's expiry ({cap_text}): nobody grants for longer than they hold"
        ))),
        Some(_) => Ok(()),
    }
}
