//! `rbac_replicas`: each replica's lease and the revision it has applied.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::rbac::rbac_replicas as rep;
use super::{Conn, clock_timestamp};

/// Renews this replica's lease (`lease_ms` from the database's clock now) and records the
/// revision it has applied; also forgets replicas whose lease ended a day ago.
pub async fn renew_lease(conn: &mut Conn, replica: Uuid, applied: i64, lease_ms: u64) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Uuid as SqlUuid};
    // Hand-written: the lease is counted on the database's clock (`clock_timestamp() + interval`),
    // arithmetic the DSL has no operators for, as is the upsert's GREATEST.
    diesel::sql_query(
        "INSERT INTO rbac.rbac_replicas (replica_id, applied_revision, lease_until, renewed_at)
         VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond', clock_timestamp())
         ON CONFLICT (replica_id) DO UPDATE
           SET applied_revision = GREATEST(rbac.rbac_replicas.applied_revision, EXCLUDED.applied_revision),
               lease_until = EXCLUDED.lease_until, renewed_at = EXCLUDED.renewed_at",
    )
    .bind::<SqlUuid, _>(replica)
    .bind::<BigInt, _>(applied)
    .bind::<BigInt, _>(i64::try_from(lease_ms).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    // Hand-written for the same reason (`clock_timestamp() - interval`).
    diesel::sql_query("DELETE FROM rbac.rbac_replicas WHERE lease_until < clock_timestamp() - interval '1 day'")
        .execute(conn)
        .await
        .map(drop)
}

/// Records that this replica has applied every change up to `applied` (never lowering it).
pub async fn record_applied(conn: &mut Conn, replica: Uuid, applied: i64) -> QueryResult<()> {
    diesel::update(rep::table.filter(rep::replica_id.eq(replica)).filter(rep::applied_revision.lt(applied)))
        .set(rep::applied_revision.eq(applied))
        .execute(conn)
        .await
        .map(drop)
}

/// How many replicas hold a live lease but have not applied `revision` yet.
pub async fn behind(conn: &mut Conn, revision: i64) -> QueryResult<i64> {
    rep::table
        .filter(rep::lease_until.gt(clock_timestamp()))
        .filter(rep::applied_revision.lt(revision))
        .count()
        .get_result(conn)
        .await
}
