//! Users: one per (tenant, normalised email).

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_platform::ApiError;
use queue_platform::db::prepared;
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, Event};
use super::fields;
use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::users;

/// An email address that has been checked and normalised (trimmed, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks `raw` against [`fields::EMAIL`] (the rule the OpenAPI document states), then
    /// normalises it: surrounding whitespace dropped, lower case.
    pub fn parse(raw: &str) -> std::result::Result<Self, ApiError> {
        fields::EMAIL.check(raw)?;
        Ok(Self(raw.trim().to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn check_tenant(t: &str) -> std::result::Result<(), ApiError> {
    fields::TENANT_ID.check(t)
}

#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
#[schema(example = json!({"id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "tenant_id": "acme", "email": "ada@example.com", "email_verified_at": "2026-12-07T14:58:12Z", "display_name": "Ada Lovelace", "status": "active", "created_at": "2026-12-07T14:58:12Z", "updated_at": "2026-12-07T14:58:12Z", "legacy_id": null}))]
pub struct User {
    pub id: Uuid,
    pub tenant_id: String,
    pub email: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub display_name: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Raptor's customer id, for a user imported from Raptor (issue 19); else null.
    pub legacy_id: Option<String>,
}

pub struct NewUser<'a> {
    pub tenant_id: &'a str,
    pub email: &'a EmailAddress,
    pub display_name: Option<&'a str>,
    pub verified_at: Option<DateTime<Utc>>,
}

pub async fn find_by_email(conn: &mut Conn, tenant: &str, email: &EmailAddress) -> Result<Option<User>> {
    Ok(users::table
        .filter(users::tenant_id.eq(tenant))
        .filter(users::email.eq(email.as_str()))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn get(conn: &mut Conn, id: Uuid) -> Result<Option<User>> {
    Ok(users::table.find(id).select(User::as_select()).first(conn).await.optional()?)
}

/// Creates the user unless (tenant, email) exists; returns it and whether it is new.
#[tracing::instrument(skip_all)]
pub async fn create_or_get(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    actor: queue_audit_client::Party,
    new: NewUser<'_>,
) -> Result<(User, bool)> {
    let id = Uuid::new_v4();
    let inserted = prepared(
        diesel::insert_into(users::table)
            .values((
                users::id.eq(id),
                users::tenant_id.eq(new.tenant_id),
                users::email.eq(new.email.as_str()),
                users::email_verified_at.eq(new.verified_at),
                users::display_name.eq(new.display_name),
                users::status.eq("active"),
                users::created_at.eq(now),
                users::updated_at.eq(now),
            ))
            .on_conflict((users::tenant_id, users::email))
            .do_nothing()
            .returning(User::as_returning()),
    )
    .get_result(conn)
    .await
    .optional()?;
    match inserted {
        Some(user) => {
            audit::record(
                conn,
                now,
                info,
                Event {
                    tenant_id: &user.tenant_id,
                    actor,
                    action: "auth.user.created",
                    target: audit::user(user.id),
                    payload: serde_json::json!({"verified": user.email_verified_at.is_some()}),
                },
            )
            .await?;
            Ok((user, true))
        }
        None => {
            let user = find_by_email(conn, new.tenant_id, new.email)
                .await?
                .ok_or_else(|| ApiError::Conflict("the user changed concurrently; retry".into()))?;
            Ok((user, false))
        }
    }
}

/// Every user with this address, in any tenant, oldest first.
pub async fn with_address(conn: &mut Conn, email: &EmailAddress) -> Result<Vec<User>> {
    Ok(users::table
        .filter(users::email.eq(email.as_str()))
        .order((users::created_at, users::id))
        .select(User::as_select())
        .load(conn)
        .await?)
}

/// Marks the address verified (first time only).
pub async fn mark_verified(conn: &mut Conn, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    prepared(
        diesel::update(users::table.find(id).filter(users::email_verified_at.is_null()))
            .set((users::email_verified_at.eq(now), users::updated_at.eq(now))),
    )
    .execute(conn)
    .await?;
    Ok(())
}
