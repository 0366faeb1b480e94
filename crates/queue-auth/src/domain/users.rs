//! Users: one per (tenant, normalised email).

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_platform::ApiError;
use queue_platform::db::prepared;
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, Event};
use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::users;

/// An email address that has been checked and normalised (trimmed, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> std::result::Result<Self, ApiError> {
        let e = raw.trim().to_lowercase();
        let bad = |m: &str| ApiError::invalid("email", m);
        if e.is_empty() || e.len() > 254 {
            return Err(bad("must be 1 to 254 characters"));
        }
        if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = e.rsplit_once('@') else { return Err(bad("must contain @")) };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(bad("the part before @ is not valid"));
        }
        if domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(bad("the domain is not valid"));
        }
        Ok(Self(e))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn check_tenant(t: &str) -> std::result::Result<(), ApiError> {
    if t.is_empty() || t.len() > 128 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        return Err(ApiError::invalid("tenant_id", "1-128 of: letters, digits, . _ : -"));
    }
    Ok(())
}

#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
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
