//! What the legacy importers share: who is importing and when, a record's refusal, the legacy-id
//! rule, and finding the Queue user a record names by Raptor's customer id.

use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_audit_client::Party;
use queue_platform::ApiError;

use super::super::audit::{self, Event};
use super::super::users::User;
use super::super::{Conn, RequestInfo};
use crate::config::SessionsConfig;
use crate::db::schema::auth::users;

/// One import call's context: the importer (the audit actor), its request, the time.
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    pub info: &'a RequestInfo,
    /// `{"type": "service", "id": <the importer's issuer>}`.
    pub actor: Party,
    pub sessions: &'a SessionsConfig,
}

/// Why one record is not applied: its savepoint is rolled back and the batch goes on
/// (`Refused`), or the batch fails (`Db`: nothing of it is written).
#[derive(Debug)]
pub enum RecordError {
    Refused(String),
    Db(DieselError),
}

impl From<DieselError> for RecordError {
    fn from(e: DieselError) -> Self {
        match e {
            // Another row already holds it (a concurrent import, or a clash at Raptor's side):
            // this record is refused, the batch goes on, and sending it again settles it.
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => Self::Refused(format!(
                "conflicts with an existing row ({}); send it again",
                info.constraint_name().unwrap_or("a unique key")
            )),
            other => Self::Db(other),
        }
    }
}

impl From<super::super::Error> for RecordError {
    fn from(e: super::super::Error) -> Self {
        match e {
            super::super::Error::Db(d) => d.into(),
            super::super::Error::Api(a) => a.into(),
        }
    }
}

/// A field rule's refusal (`fields::Rule::check`, `EmailAddress::parse`) as the record's reason:
/// the field and what it must be.
impl From<ApiError> for RecordError {
    fn from(e: ApiError) -> Self {
        Self::Refused(match e {
            ApiError::Unprocessable { field, message } => format!("{field}: {message}"),
            ApiError::BadRequest(m)
            | ApiError::Conflict(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Unauthorized(m) => m,
            other => other.to_string(),
        })
    }
}

pub type RecordResult<T> = Result<T, RecordError>;

pub fn refuse<T>(reason: impl Into<String>) -> RecordResult<T> {
    Err(RecordError::Refused(reason.into()))
}

/// Whether `id` is a legacy id: Raptor's bigserial as decimal text, 1 to 19 digits, no sign, no
/// leading zero (`^[1-9][0-9]{0,18}$`).
pub fn is_legacy_id(id: &str) -> bool {
    (1..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0')
}

/// [`is_legacy_id`], refusing the record otherwise.
pub fn check_legacy_id(field: &str, id: &str) -> RecordResult<()> {
    if is_legacy_id(id) { Ok(()) } else { refuse(format!("{field} must be Raptor's row id as decimal digits")) }
}

/// The Queue user imported from Raptor's customer `legacy_id`, locked for this transaction.
pub async fn user_by_legacy_id(conn: &mut Conn, legacy_id: &str) -> RecordResult<Option<User>> {
    Ok(users::table
        .filter(users::legacy_id.eq(legacy_id))
        .select(User::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// [`user_by_legacy_id`] for a record that needs the user: refused when not imported (yet).
pub async fn owner(conn: &mut Conn, user_legacy_id: &str) -> RecordResult<User> {
    check_legacy_id("user_legacy_id", user_legacy_id)?;
    match user_by_legacy_id(conn, user_legacy_id).await? {
        Some(u) => Ok(u),
        None => refuse(format!("no Queue user has legacy id {user_legacy_id} (import the users first)")),
    }
}

/// The names of the fields that differ, for `updated`'s reason.
pub fn changed(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    fields.iter().filter(|(_, differs)| *differs).map(|(name, _)| *name).collect()
}

/// The audit event of a created or updated record of `user`'s: the record's legacy id and the
/// user's id added to `payload` (ids and times only, never a token, hash or key), in the user's
/// tenant, by the importer, about `target`.
pub async fn record_event(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    legacy_id: &str,
    user: &User,
    target: Party,
    action: &'static str,
    mut payload: serde_json::Value,
) -> RecordResult<()> {
    if let Some(p) = payload.as_object_mut() {
        p.insert("legacy_id".into(), legacy_id.into());
        p.insert("user_id".into(), user.id.to_string().into());
    }
    let event = Event { tenant_id: &user.tenant_id, actor: ctx.actor.clone(), action, target, payload };
    audit::record(conn, ctx.now, ctx.info, event).await?;
    Ok(())
}
