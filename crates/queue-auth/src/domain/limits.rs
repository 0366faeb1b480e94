//! Abuse limits kept in PostgreSQL, so every replica counts together.
//!
//! A subject (an IP, or an account named by tenant and normalised email, known or not) has a
//! window of `hits` and `failures`. After `delay_after_failures` failures each attempt must
//! wait a delay that doubles per failure; after `lockout_after_failures` the subject is locked
//! for `lockout_secs`. Refusals are 429 with `Retry-After`. Unknown accounts are counted exactly
//! like known ones, so the limits reveal nothing about which addresses exist.

use chrono::{DateTime, Duration, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_platform::ApiError;
use queue_platform::db::prepared;

use super::audit::{self, Event};
use super::{Conn, RequestInfo, Result};
use crate::config::LimitsConfig;
use crate::db::schema::auth::abuse_counters as c;

#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = c)]
struct Counter {
    window_start: DateTime<Utc>,
    hits: i32,
    failures: i32,
    last_failure: Option<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

/// (failures before the delay, failures before lockout) for a bucket: IP buckets end in `_ip`.
fn thresholds(cfg: &LimitsConfig, bucket: &str) -> (i32, i32) {
    if bucket.ends_with("_ip") {
        (cfg.ip_delay_after_failures, cfg.ip_lockout_after_failures)
    } else {
        (cfg.delay_after_failures, cfg.lockout_after_failures)
    }
}

fn retry_after(now: DateTime<Utc>, until: DateTime<Utc>) -> ApiError {
    let secs = (until - now).num_seconds().max(1) as u64;
    ApiError::TooManyRequests { retry_after_secs: secs }
}

/// `(bucket, subject)` is one of these two.
type IsSubject<'a> = diesel::dsl::And<diesel::dsl::Eq<c::bucket, &'a str>, diesel::dsl::Eq<c::subject, &'a str>>;
fn either<'a>(first: (&'a str, &'a str), second: (&'a str, &'a str)) -> diesel::dsl::Or<IsSubject<'a>, IsSubject<'a>> {
    use diesel::BoolExpressionMethods;
    let is = |(bucket, subject): (&'a str, &'a str)| c::bucket.eq(bucket).and(c::subject.eq(subject));
    is(first).or(is(second))
}

async fn load(conn: &mut Conn, bucket: &str, subject: &str) -> Result<Option<Counter>> {
    Ok(c::table.find((bucket, subject)).select(Counter::as_select()).first(conn).await.optional()?)
}

/// `CASE WHEN window_start <= stale THEN <fresh> ELSE <column op> END` for an upsert.
fn reset_or(
    keep: &str,
    fresh: &str,
    stale: DateTime<Utc>,
) -> diesel::expression::SqlLiteral<diesel::sql_types::Integer, impl diesel::query_builder::QueryFragment<diesel::pg::Pg>>
{
    diesel::dsl::sql::<diesel::sql_types::Integer>("CASE WHEN auth.abuse_counters.window_start <= ")
        .bind::<diesel::sql_types::Timestamptz, _>(stale)
        .sql(&format!(" THEN {fresh} ELSE auth.abuse_counters.{keep} END"))
}

fn reset_or_ts(
    stale: DateTime<Utc>,
) -> diesel::expression::SqlLiteral<
    diesel::sql_types::Timestamptz,
    impl diesel::query_builder::QueryFragment<diesel::pg::Pg>,
> {
    diesel::dsl::sql::<diesel::sql_types::Timestamptz>("CASE WHEN auth.abuse_counters.window_start <= ")
        .bind::<diesel::sql_types::Timestamptz, _>(stale)
        .sql(" THEN excluded.window_start ELSE auth.abuse_counters.window_start END")
}

/// Refuses (429) a subject that is locked out or inside its progressive delay.
pub async fn check(conn: &mut Conn, cfg: &LimitsConfig, now: DateTime<Utc>, bucket: &str, subject: &str) -> Result<()> {
    let k = load(conn, bucket, subject).await?;
    admit(cfg, now, bucket, k.as_ref())
}

/// [`check`] for two subjects with one statement (a login start checks its address and its
/// account); refused if either is.
pub async fn check_both(
    conn: &mut Conn,
    cfg: &LimitsConfig,
    now: DateTime<Utc>,
    first: (&str, &str),
    second: (&str, &str),
) -> Result<()> {
    let rows: Vec<(String, String, Counter)> =
        c::table.filter(either(first, second)).select((c::bucket, c::subject, Counter::as_select())).load(conn).await?;
    for (bucket, subject) in [first, second] {
        let k = rows.iter().find(|(b, s, _)| b == bucket && s == subject).map(|(_, _, k)| k);
        admit(cfg, now, bucket, k)?;
    }
    Ok(())
}

/// Whether a subject with counter `k` may try now: `429` with `Retry-After` while it is locked
/// or its delay after failures has not passed.
fn admit(cfg: &LimitsConfig, now: DateTime<Utc>, bucket: &str, k: Option<&Counter>) -> Result<()> {
    let Some(k) = k else { return Ok(()) };
    if let Some(until) = k.locked_until
        && until > now
    {
        return Err(retry_after(now, until).into());
    }
    if now - k.window_start >= Duration::seconds(cfg.window_secs) {
        return Ok(());
    }
    let (delay_after, _) = thresholds(cfg, bucket);
    if k.failures >= delay_after
        && let Some(last) = k.last_failure
    {
        let steps = (k.failures - delay_after).clamp(0, 20) as u32;
        let delay = (cfg.delay_base_secs.saturating_mul(1i64 << steps)).min(cfg.delay_max_secs);
        let until = last + Duration::seconds(delay);
        if until > now {
            return Err(retry_after(now, until).into());
        }
    }
    Ok(())
}

/// Counts one attempt; refuses (429) beyond `cap` attempts in `window` (used for sends per day
/// and attempts per IP).
pub async fn hit(
    conn: &mut Conn,
    now: DateTime<Utc>,
    bucket: &str,
    subject: &str,
    cap: i32,
    window: Duration,
) -> Result<()> {
    let stale = now - window;
    // Resets the window when it has passed, else adds one; atomically.
    let k: Counter = prepared(
        diesel::insert_into(c::table)
            .values((c::bucket.eq(bucket), c::subject.eq(subject), c::window_start.eq(now), c::hits.eq(1)))
            .on_conflict((c::bucket, c::subject))
            .do_update()
            .set((c::hits.eq(reset_or("hits + 1", "1", stale)), c::window_start.eq(reset_or_ts(stale))))
            .returning(Counter::as_returning()),
    )
    .get_result(conn)
    .await?;
    if k.hits > cap {
        return Err(retry_after(now, k.window_start + window).into());
    }
    Ok(())
}

/// Records a failure; locks the subject (and audits the lockout) when it reaches the limit.
/// Runs on its own (not in the failed request's transaction), so it sticks.
#[tracing::instrument(skip_all)]
pub async fn failure(
    conn: &mut Conn,
    cfg: &LimitsConfig,
    now: DateTime<Utc>,
    info: &RequestInfo,
    tenant_id: &str,
    bucket: &str,
    subject: &str,
) -> Result<()> {
    let stale = now - Duration::seconds(cfg.window_secs);
    let k: Counter = prepared(
        diesel::insert_into(c::table)
            .values((
                c::bucket.eq(bucket),
                c::subject.eq(subject),
                c::window_start.eq(now),
                c::failures.eq(1),
                c::last_failure.eq(now),
            ))
            .on_conflict((c::bucket, c::subject))
            .do_update()
            .set((
                c::failures.eq(reset_or("failures + 1", "1", stale)),
                c::window_start.eq(reset_or_ts(stale)),
                c::last_failure.eq(now),
            ))
            .returning(Counter::as_returning()),
    )
    .get_result(conn)
    .await?;
    if k.failures >= thresholds(cfg, bucket).1 && k.locked_until.is_none_or(|u| u <= now) {
        let until = now + Duration::seconds(cfg.lockout_secs);
        prepared(diesel::update(c::table.find((bucket, subject))).set((
            c::locked_until.eq(until),
            c::failures.eq(0),
            c::window_start.eq(now),
        )))
        .execute(conn)
        .await?;
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id,
                actor: audit::anonymous(),
                action: "auth.lockout",
                target: queue_audit_client::Party::new(bucket.to_string(), subject.to_string()),
                payload: serde_json::json!({"failures": k.failures, "locked_until": until}),
            },
        )
        .await?;
    }
    Ok(())
}

/// [`success`] for two subjects at once (one statement): a login clears its address and its
/// account together.
pub async fn success_both(conn: &mut Conn, first: (&str, &str), second: (&str, &str)) -> Result<()> {
    prepared(
        diesel::update(c::table.filter(either(first, second)).filter(c::failures.gt(0)))
            .set((c::failures.eq(0), c::last_failure.eq(None::<DateTime<Utc>>))),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A success clears the subject's failures.
pub async fn success(conn: &mut Conn, bucket: &str, subject: &str) -> Result<()> {
    // Conditional: the common case (no failures) writes nothing.
    prepared(
        diesel::update(c::table.find((bucket, subject)).filter(c::failures.gt(0)))
            .set((c::failures.eq(0), c::last_failure.eq(None::<DateTime<Utc>>))),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The address subject: the normalised email alone. Email verification (mail caps, cooldown,
/// confirmation failures) keys on it, so nothing else a request says opens another counter.
pub fn address(email: &str) -> String {
    email.to_string()
}

/// The account subject: tenant and normalised email (whether or not such a user exists).
pub fn account(tenant: &str, email: &str) -> String {
    format!("{tenant}/{email}")
}
