//! Raptor's customers as Queue users (`POST /internal/v1/import/users`): the email normalised as
//! Queue keeps it (`lower(btrim)`), verified emails kept verified, inactive customers disabled,
//! Raptor's `created_at` kept. A Queue user of the same (tenant, email) with no legacy id (one
//! Raptor provisioned earlier through `/internal/v1/users`) is linked; one linked to another
//! customer is never taken over.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_platform::db::prepared;
use serde::Deserialize;
use uuid::Uuid;

use super::super::Conn;
use super::super::audit::{self, Event};
use super::super::fields;
use super::super::import_batch::{ImportResult, Outcome};
use super::super::users::{EmailAddress, User, check_tenant};
use super::common::{Ctx, RecordResult, changed, check_legacy_id, refuse, user_by_legacy_id};
use crate::db::schema::auth::users;

/// A row of Raptor's `customers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "42", "tenant_id": "5a3c0e1e-0000-4000-8000-00000000a0c1", "email": " Ada@Acme.test", "email_verified_at": "2025-03-01T09:00:00Z", "display_name": "Ada Admin", "active": true, "created_at": "2025-02-27T16:20:00Z"}))]
pub struct LegacyUser {
    /// `customers.id` as decimal text.
    pub legacy_id: String,
    /// `customers.tenant_id`: the user's tenant at Queue.
    pub tenant_id: String,
    /// As typed at Raptor (mixed case, surrounding spaces): stored normalised.
    pub email: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub display_name: Option<String>,
    /// `customers.is_active`: false imports the user `disabled`.
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// The user as Queue would hold it, checked.
struct Wanted {
    tenant_id: String,
    email: EmailAddress,
    display_name: Option<String>,
    status: &'static str,
    verified_at: Option<DateTime<Utc>>,
}

fn wanted(r: &LegacyUser) -> RecordResult<Wanted> {
    check_legacy_id("legacy_id", &r.legacy_id)?;
    check_tenant(&r.tenant_id)?;
    let email = EmailAddress::parse(&r.email)?;
    if let Some(d) = &r.display_name {
        fields::DISPLAY_NAME.check(d)?;
    }
    Ok(Wanted {
        tenant_id: r.tenant_id.clone(),
        email,
        display_name: r.display_name.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(str::to_string),
        status: if r.active { "active" } else { "disabled" },
        verified_at: r.email_verified_at,
    })
}

/// The user imported from Raptor's customer `legacy_id` (`GET /internal/v1/users?legacy_id=`).
pub async fn find(conn: &mut Conn, legacy_id: &str) -> super::super::Result<Option<User>> {
    Ok(users::table.filter(users::legacy_id.eq(legacy_id)).select(User::as_select()).first(conn).await.optional()?)
}

/// Imports one customer; see the module doc.
pub async fn import_one(conn: &mut Conn, ctx: &Ctx<'_>, r: &LegacyUser) -> RecordResult<ImportResult> {
    let w = wanted(r)?;
    if let Some(existing) = user_by_legacy_id(conn, &r.legacy_id).await? {
        return update(conn, ctx, r, &w, existing, None).await;
    }
    let same_address = users::table
        .filter(users::tenant_id.eq(&w.tenant_id))
        .filter(users::email.eq(w.email.as_str()))
        .select(User::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    match same_address {
        Some(u) if u.legacy_id.is_some() => refuse(format!(
            "the Queue user {} with this address in tenant {} is Raptor customer {}",
            u.id,
            w.tenant_id,
            u.legacy_id.as_deref().unwrap_or_default()
        )),
        Some(u) => update(conn, ctx, r, &w, u, Some("linked to the existing Queue user of this address")).await,
        None => create(conn, ctx, r, &w).await,
    }
}

async fn create(conn: &mut Conn, ctx: &Ctx<'_>, r: &LegacyUser, w: &Wanted) -> RecordResult<ImportResult> {
    let id = Uuid::new_v4();
    let user = prepared(
        diesel::insert_into(users::table)
            .values((
                users::id.eq(id),
                users::tenant_id.eq(&w.tenant_id),
                users::email.eq(w.email.as_str()),
                users::email_verified_at.eq(w.verified_at),
                users::display_name.eq(&w.display_name),
                users::status.eq(w.status),
                users::created_at.eq(r.created_at),
                users::updated_at.eq(ctx.now),
                users::legacy_id.eq(&r.legacy_id),
            ))
            .returning(User::as_returning()),
    )
    .get_result(conn)
    .await?;
    record(conn, ctx, &user, "auth.legacy.user.imported", serde_json::json!({})).await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Created, Some(user.id), None))
}

/// Brings `u` to what Raptor says (and links it when `linked` says so). Queue's own
/// verification stands when Raptor has none: an address is never un-verified.
async fn update(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    r: &LegacyUser,
    w: &Wanted,
    u: User,
    linked: Option<&str>,
) -> RecordResult<ImportResult> {
    if u.tenant_id != w.tenant_id {
        return refuse(format!(
            "Raptor moved this customer from tenant {} to {}: Queue does not move users between tenants",
            u.tenant_id, w.tenant_id
        ));
    }
    let verified_at = w.verified_at.or(u.email_verified_at);
    let diff = changed(&[
        ("email", u.email != w.email.as_str()),
        ("email_verified_at", u.email_verified_at != verified_at),
        ("display_name", u.display_name != w.display_name),
        ("status", u.status != w.status),
    ]);
    if diff.is_empty() && linked.is_none() {
        return Ok(ImportResult::new(&r.legacy_id, Outcome::Unchanged, Some(u.id), None));
    }
    let user = prepared(
        diesel::update(users::table.find(u.id))
            .set((
                users::email.eq(w.email.as_str()),
                users::email_verified_at.eq(verified_at),
                users::display_name.eq(&w.display_name),
                users::status.eq(w.status),
                users::legacy_id.eq(&r.legacy_id),
                users::updated_at.eq(ctx.now),
            ))
            .returning(User::as_returning()),
    )
    .get_result(conn)
    .await?;
    let mut reason = linked.map(str::to_string).into_iter().collect::<Vec<_>>();
    if !diff.is_empty() {
        reason.push(format!("changed: {}", diff.join(", ")));
    }
    let payload = serde_json::json!({"changed": diff, "linked": linked.is_some()});
    record(conn, ctx, &user, "auth.legacy.user.updated", payload).await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Updated, Some(user.id), Some(reason.join("; "))))
}

/// The audit event of a created or updated user: the legacy id and the non-secret facts.
async fn record(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    user: &User,
    action: &'static str,
    mut payload: serde_json::Value,
) -> RecordResult<()> {
    if let Some(p) = payload.as_object_mut() {
        p.insert("legacy_id".into(), user.legacy_id.clone().into());
        p.insert("status".into(), user.status.clone().into());
        p.insert("verified".into(), user.email_verified_at.is_some().into());
        p.insert("created_at".into(), serde_json::to_value(user.created_at).unwrap_or_default());
    }
    let event =
        Event { tenant_id: &user.tenant_id, actor: ctx.actor.clone(), action, target: audit::user(user.id), payload };
    audit::record(conn, ctx.now, ctx.info, event).await?;
    Ok(())
}
