//! `rbac_audit_outbox`: the compensating events of pre-written changes, held back until their
//! change commits (then deleted with it) or fails (then due at once). The relay
//! (`queue_audit_client::OutboxRelay`) delivers what is due.

use diesel::dsl::now;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::rbac_audit_outbox as o;

/// The table the relay delivers from.
pub const TABLE: &str = "rbac.rbac_audit_outbox";

/// Holds a compensating event, due only after `hold_secs` (committed on its own, before the
/// change's audit event is written: if the change never commits, it is delivered).
pub async fn hold(conn: &mut Conn, id: Uuid, event: &serde_json::Value, hold_secs: u64) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Jsonb, Uuid as SqlUuid};
    // Hand-written: the hold is counted on the database's clock (`now() + interval`), which the
    // relay compares with; the DSL types `now` as a timestamp without interval arithmetic into
    // a timestamptz column.
    diesel::sql_query(
        "INSERT INTO rbac.rbac_audit_outbox (id, event, next_attempt_at) \
         VALUES ($1, $2, now() + $3 * interval '1 second')",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Jsonb, _>(event)
    .bind::<BigInt, _>(i64::try_from(hold_secs).unwrap_or(i64::MAX))
    .execute(conn)
    .await
    .map(drop)
}

/// [`hold`] for the changes of an import batch: every compensation held with one statement.
pub async fn hold_many(conn: &mut Conn, events: &[(Uuid, serde_json::Value)], hold_secs: u64) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Uuid as SqlUuid};
    let ids: Vec<Uuid> = events.iter().map(|(id, _)| *id).collect();
    let bodies: Vec<&serde_json::Value> = events.iter().map(|(_, e)| e).collect();
    diesel::sql_query(
        "INSERT INTO rbac.rbac_audit_outbox (id, event, next_attempt_at) \
         SELECT id, event, now() + $3 * interval '1 second' FROM unnest($1::uuid[], $2::jsonb[]) AS u(id, event)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Jsonb>, _>(bodies)
    .bind::<BigInt, _>(i64::try_from(hold_secs).unwrap_or(i64::MAX))
    .execute(conn)
    .await
    .map(drop)
}

/// [`claim`] for many: how many of `ids` were still held (all of them, or the batch must not apply).
pub async fn claim_many(conn: &mut Conn, ids: &[Uuid]) -> QueryResult<usize> {
    diesel::delete(o::table.filter(o::id.eq_any(ids)).filter(o::delivered_at.is_null()).filter(o::failed_at.is_null()))
        .execute(conn)
        .await
}

/// [`release`] for many.
pub async fn release_many(conn: &mut Conn, ids: &[Uuid]) -> QueryResult<()> {
    diesel::update(o::table.filter(o::id.eq_any(ids)).filter(o::delivered_at.is_null()))
        .set(o::next_attempt_at.eq(now))
        .execute(conn)
        .await
        .map(drop)
}

/// [`drop_held`] for many.
pub async fn drop_many(conn: &mut Conn, ids: &[Uuid]) -> QueryResult<()> {
    diesel::delete(o::table.filter(o::id.eq_any(ids)).filter(o::delivered_at.is_null())).execute(conn).await.map(drop)
}

/// In the change's transaction: takes the held compensation out, so it commits (or not) with
/// the change. False if it is gone or was delivered already: the audit log says the change was
/// aborted, so it must not be applied. Waits while the relay is delivering it (row lock).
pub async fn claim(conn: &mut Conn, id: Uuid) -> QueryResult<bool> {
    let n =
        diesel::delete(o::table.filter(o::id.eq(id)).filter(o::delivered_at.is_null()).filter(o::failed_at.is_null()))
            .execute(conn)
            .await?;
    Ok(n == 1)
}

/// The change did not happen: deliver its compensation now.
pub async fn release(conn: &mut Conn, id: Uuid) -> QueryResult<()> {
    diesel::update(o::table.filter(o::id.eq(id)).filter(o::delivered_at.is_null()))
        .set(o::next_attempt_at.eq(now))
        .execute(conn)
        .await
        .map(drop)
}

/// The change's audit event was certainly not written (the audit service refused it): nothing
/// to compensate.
pub async fn drop_held(conn: &mut Conn, id: Uuid) -> QueryResult<()> {
    diesel::delete(o::table.filter(o::id.eq(id)).filter(o::delivered_at.is_null())).execute(conn).await.map(drop)
}
