//! Passkeys (webauthn-rs): registration needs a session; login by email or usernameless
//! (discoverable); user verification required; the ceremony state lives in PostgreSQL with an
//! expiry and is taken (deleted) by the finish that uses it, so any replica can finish a
//! ceremony once; a counter that does not go up is refused and audited. A user whose passkeys
//! came from Raptor keeps Raptor's WebAuthn user handle (`users.webauthn_user_handle`).

use chrono::{DateTime, Duration, Utc};
use diesel::{ExpressionMethods, NullableExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_platform::ApiError;
use queue_platform::db::prepared;
use serde::Serialize;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn, WebauthnError,
};

use super::audit::{self, Event};
use super::crypto::Pepper;
use super::mailer::Composer;
use super::notify::{self, Notice};
use super::sessions::Session;
use super::users::{self, EmailAddress, User};
use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::{passkeys as pk, users as user_rows, webauthn_ceremonies as wc};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "9c4e2f1a-6b3d-4a8e-b7c5-1d2e3f4a5b6c", "name": "Work laptop", "created_at": "2026-12-07T15:01:10Z", "last_used_at": "2026-12-07T15:20:03Z"}))]
pub struct CredentialInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = pk)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    passkey: serde_json::Value,
    sign_count: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    legacy_id: Option<String>,
}

/// No ceremony by that id for this step (404): finishing one that is unknown, used, expired or
/// another step's is a matter of state, which the request's shape cannot tell.
fn no_ceremony(m: &str) -> super::Error {
    ApiError::NotFound(m.into()).into()
}

fn bad_credential(m: impl Into<String>) -> ApiError {
    ApiError::invalid("credential", m)
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| ApiError::internal(anyhow::anyhow!("stored state unreadable: {e}")).into())
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e).into())
}

pub async fn count(conn: &mut Conn, user_id: Uuid) -> Result<i64> {
    Ok(pk::table.filter(pk::user_id.eq(user_id)).count().get_result(conn).await?)
}

pub async fn list(conn: &mut Conn, user_id: Uuid) -> Result<Vec<CredentialInfo>> {
    let rows: Vec<Row> =
        pk::table.filter(pk::user_id.eq(user_id)).order(pk::created_at).select(Row::as_select()).load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| CredentialInfo { id: r.id, name: r.name, created_at: r.created_at, last_used_at: r.last_used_at })
        .collect())
}

async fn store_ceremony(
    conn: &mut Conn,
    now: DateTime<Utc>,
    ttl: i64,
    kind: &str,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    state: serde_json::Value,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    // Expired ceremonies are swept by one start in 16 (drawn from the new id's random bits): a
    // statement saved on most logins, and what is left expired stays a handful of rows, refused
    // when used (indexed on expires_at).
    if id.as_bytes()[0] & 0x0f == 0 {
        diesel::delete(wc::table.filter(wc::expires_at.lt(now))).execute(conn).await?;
    }
    prepared(diesel::insert_into(wc::table).values((
        wc::id.eq(id),
        wc::kind.eq(kind),
        wc::user_id.eq(user_id),
        wc::session_id.eq(session_id),
        wc::state.eq(state),
        wc::created_at.eq(now),
        wc::expires_at.eq(now + Duration::seconds(ttl)),
    )))
    .execute(conn)
    .await?;
    Ok(id)
}

#[derive(diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = wc)]
struct CeremonyRow {
    kind: String,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    state: serde_json::Value,
    expires_at: DateTime<Utc>,
}

struct Ceremony {
    kind: String,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    state: serde_json::Value,
}

/// Takes the ceremony: deleted on read, so it finishes at most once; expired ones are refused.
async fn take_ceremony(conn: &mut Conn, now: DateTime<Utc>, id: Uuid) -> Result<Ceremony> {
    let row: Option<CeremonyRow> =
        diesel::delete(wc::table.find(id)).returning(CeremonyRow::as_returning()).get_result(conn).await.optional()?;
    match row {
        Some(r) if r.expires_at > now => {
            Ok(Ceremony { kind: r.kind, user_id: r.user_id, session_id: r.session_id, state: r.state })
        }
        // The ceremony is state, not input: an id the schema accepts may name none (404).
        _ => Err(no_ceremony("unknown, used or expired ceremony; start again")),
    }
}

/// Asks the authenticator for a discoverable credential (`residentKey: "preferred"`), which the
/// usernameless login (and the browser's passkey autofill) needs: webauthn-rs's passkey
/// registration says `discouraged`. `preferred`, not `required`: an authenticator that cannot
/// store one (a full security key) still registers, and signs in by email. Only the request
/// changes; webauthn-rs's finish accepts either kind. (webauthn-rs does not re-export the
/// option's type, hence the edit through its JSON form.)
fn discoverable(ccr: CreationChallengeResponse) -> Result<CreationChallengeResponse> {
    let mut v = serde_json::to_value(&ccr).map_err(|e| ApiError::internal(anyhow::anyhow!("options: {e}")))?;
    let sel = &mut v["publicKey"]["authenticatorSelection"];
    if !sel.is_object() {
        *sel = serde_json::json!({"userVerification": "required"});
    }
    sel["residentKey"] = "preferred".into();
    sel["requireResidentKey"] = false.into();
    Ok(serde_json::from_value(v).map_err(|e| ApiError::internal(anyhow::anyhow!("options: {e}")))?)
}

/// The WebAuthn user handle this user's passkeys carry when it is not the user id: the one Raptor
/// gave its customer (imported with their passkeys, `legacy_passkeys`). A passkey registered at
/// Queue carries it too, so an authenticator keeps one account for the site; a usernameless
/// login accepts it as well as the user id.
async fn webauthn_handle(conn: &mut Conn, user_id: Uuid) -> Result<Option<Uuid>> {
    let handle: Option<Option<Vec<u8>>> =
        user_rows::table.find(user_id).select(user_rows::webauthn_user_handle).first(conn).await.optional()?;
    // 16 bytes, as the import requires; another length (none today) is not a handle webauthn-rs
    // can carry, so the user id stands.
    Ok(handle.flatten().and_then(|h| Uuid::from_slice(&h).ok()))
}

#[tracing::instrument(skip_all)]
pub async fn register_start(
    conn: &mut Conn,
    wa: &Webauthn,
    ttl: i64,
    now: DateTime<Utc>,
    session: &Session,
    user: &User,
) -> Result<(Uuid, CreationChallengeResponse)> {
    let existing: Vec<Vec<u8>> = pk::table.filter(pk::user_id.eq(user.id)).select(pk::cred_id).load(conn).await?;
    let exclude = (!existing.is_empty()).then(|| existing.into_iter().collect());
    let display = user.display_name.clone().unwrap_or_else(|| user.email.clone());
    let handle = webauthn_handle(conn, user.id).await?.unwrap_or(user.id);
    let (ccr, state) = wa
        .start_passkey_registration(handle, &user.email, &display, exclude)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot start registration: {e}")))?;
    let ccr = discoverable(ccr)?;
    let id = store_ceremony(conn, now, ttl, "register", Some(user.id), Some(session.id), to_json(&state)?).await?;
    Ok((id, ccr))
}

#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn register_finish(
    conn: &mut Conn,
    wa: &Webauthn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    mail: &Composer,
    session: &Session,
    ceremony_id: Uuid,
    credential: serde_json::Value,
    name: Option<String>,
) -> Result<CredentialInfo> {
    let name = name.unwrap_or_else(|| "Passkey".into());
    super::fields::PASSKEY_NAME.check(&name)?;
    conn.transaction::<_, super::Error, _>(async |conn| {
        let c = take_ceremony(conn, now, ceremony_id).await?;
        if c.kind != "register" || c.user_id != Some(session.user_id) || c.session_id != Some(session.id) {
            return Err(no_ceremony("not a registration started by this session"));
        }
        // Read after the ceremony, as in `login_finish`.
        let credential: RegisterPublicKeyCredential = serde_json::from_value(credential)
            .map_err(|e| bad_credential(format!("not a registration response: {e}")))?;
        let state: PasskeyRegistration = json(c.state)?;
        let passkey = wa
            .finish_passkey_registration(&credential, &state)
            .map_err(|e| bad_credential(format!("registration refused: {e}")))?;
        let id = Uuid::new_v4();
        let cred_id: Vec<u8> = AsRef::<[u8]>::as_ref(passkey.cred_id()).to_vec();
        let inserted = prepared(
            diesel::insert_into(pk::table)
                .values((
                    pk::id.eq(id),
                    pk::user_id.eq(session.user_id),
                    pk::cred_id.eq(&cred_id),
                    pk::passkey.eq(to_json(&passkey)?),
                    pk::sign_count.eq(0i64),
                    pk::name.eq(name.trim()),
                    pk::created_at.eq(now),
                ))
                .on_conflict(pk::cred_id)
                .do_nothing(),
        )
        .execute(conn)
        .await?;
        if inserted == 0 {
            return Err(ApiError::Conflict("this passkey is already registered".into()).into());
        }
        let user_handle = webauthn_handle(conn, session.user_id).await?.unwrap_or(session.user_id);
        super::writeback::passkey_registered(
            conn,
            super::writeback::NewPasskey {
                id,
                user_id: session.user_id,
                cred_id: &cred_id,
                passkey: &passkey,
                user_handle,
                name: name.trim(),
                created_at: now,
            },
        )
        .await?;
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &session.tenant_id,
                actor: audit::user(session.user_id),
                action: "auth.passkey.added",
                target: queue_audit_client::Party::new("passkey", id.to_string()),
                payload: serde_json::json!({"name": name.trim(), "session_kind": session.kind.as_str()}),
            },
        )
        .await?;
        let user = users::get(conn, session.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the session's user is gone".into()))?;
        notify::queue(conn, mail, now, info, &user, Notice::PasskeyAdded { name: name.trim() }).await?;
        Ok(CredentialInfo { id, name: name.trim().to_string(), created_at: now, last_used_at: None })
    })
    .await
}

/// Starts a login. With an email: the user's passkeys are allowed; an unknown address (or one
/// without passkeys) gets a challenge of the same shape naming a stable decoy credential, so
/// the answer does not reveal whether the address exists. Without: a discoverable challenge.
#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn login_start(
    conn: &mut Conn,
    wa: &Webauthn,
    pepper: &Pepper,
    ttl: i64,
    now: DateTime<Utc>,
    tenant: &str,
    email: Option<&EmailAddress>,
) -> Result<(Uuid, serde_json::Value)> {
    let Some(email) = email else {
        let (rcr, state) = wa
            .start_discoverable_authentication()
            .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot start authentication: {e}")))?;
        let id = store_ceremony(conn, now, ttl, "discoverable", None, None, to_json(&state)?).await?;
        return Ok((id, to_json(&rcr)?));
    };
    // The user and their passkeys in one statement (a row per passkey, or one with none).
    let rows: Vec<(User, Option<serde_json::Value>)> = user_rows::table
        .left_join(pk::table)
        .filter(user_rows::tenant_id.eq(tenant))
        .filter(user_rows::email.eq(email.as_str()))
        .select((User::as_select(), pk::passkey.nullable()))
        .load(conn)
        .await?;
    let user = rows.as_slice().first().map(|(u, _)| u.clone()).filter(|u| u.status == "active");
    let passkeys: Vec<Passkey> = match &user {
        Some(_) => rows.into_iter().filter_map(|(_, p)| p).map(json).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    if let (Some(u), false) = (&user, passkeys.is_empty()) {
        let (rcr, state) = wa
            .start_passkey_authentication(&passkeys)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot start authentication: {e}")))?;
        let id = store_ceremony(conn, now, ttl, "login", Some(u.id), None, to_json(&state)?).await?;
        return Ok((id, to_json(&rcr)?));
    }
    // The decoy: a discoverable challenge dressed as a by-email one.
    let (rcr, state) = wa
        .start_discoverable_authentication()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot start authentication: {e}")))?;
    let decoy = pepper.mac("decoy-credential", format!("{tenant}\0{}", email.as_str()).as_bytes());
    let mut options = to_json(&rcr)?;
    // Shaped like a by-email challenge: no conditional mediation, no discoverable extensions.
    if let Some(o) = options.as_object_mut() {
        o.remove("mediation");
    }
    if let Some(o) = options["publicKey"].as_object_mut() {
        o.remove("extensions");
    }
    use base64::Engine;
    options["publicKey"]["allowCredentials"] = serde_json::json!([{
        "type": "public-key",
        "id": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&decoy[..16]),
    }]);
    let id = store_ceremony(conn, now, ttl, "decoy", None, None, to_json(&state)?).await?;
    Ok((id, options))
}

/// Starts a re-authentication (step-up) for a signed-in session: a challenge for the session
/// user's own passkeys, bound to this session (only this session can finish it).
#[tracing::instrument(skip_all)]
pub async fn reauth_start(
    conn: &mut Conn,
    wa: &Webauthn,
    ttl: i64,
    now: DateTime<Utc>,
    session: &Session,
) -> Result<(Uuid, serde_json::Value)> {
    let stored: Vec<serde_json::Value> =
        pk::table.filter(pk::user_id.eq(session.user_id)).select(pk::passkey).load(conn).await?;
    let passkeys: Vec<Passkey> = stored.into_iter().map(json).collect::<Result<_>>()?;
    if passkeys.is_empty() {
        return Err(ApiError::Conflict("this account has no passkey to verify with".into()).into());
    }
    let (rcr, state) = wa
        .start_passkey_authentication(&passkeys)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot start authentication: {e}")))?;
    let id =
        store_ceremony(conn, now, ttl, "reauth", Some(session.user_id), Some(session.id), to_json(&state)?).await?;
    Ok((id, to_json(&rcr)?))
}

/// What an assertion is for: signing in (login, usernameless or decoy ceremonies), or
/// re-authenticating the given session (a `reauth` ceremony that session started).
#[derive(Clone, Copy)]
pub enum Purpose {
    Login,
    Reauth { session_id: Uuid },
}

impl Purpose {
    fn fits(self, c: &Ceremony) -> bool {
        match self {
            Self::Login => matches!(c.kind.as_str(), "login" | "discoverable" | "decoy"),
            Self::Reauth { session_id } => c.kind == "reauth" && c.session_id == Some(session_id),
        }
    }
}

/// The outcome of a login finish, for the caller's audit and limits.
pub enum LoginOutcome<T> {
    /// With what `then` made of the login (a session).
    Ok {
        user: User,
        passkey_id: Uuid,
        then: T,
    },
    Failed {
        user_id: Option<Uuid>,
        tenant_id: Option<String>,
        reason: String,
    },
}

/// Verifies an assertion against the ceremony; on success bumps the counter and last use and
/// runs `then` (minting the session) in the same transaction: one commit for the whole login.
#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn login_finish<T: Send>(
    conn: &mut Conn,
    wa: &Webauthn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    purpose: Purpose,
    ceremony_id: Uuid,
    credential: serde_json::Value,
    then: impl for<'c> FnOnce(&'c mut Conn, &'c User) -> futures_util::future::BoxFuture<'c, Result<T>> + Send,
) -> Result<LoginOutcome<T>> {
    conn.transaction::<_, super::Error, _>(async |conn| {
        let c = take_ceremony(conn, now, ceremony_id).await?;
        if !purpose.fits(&c) {
            // Rolls back: the ceremony stays for the finish it belongs to.
            return Err(no_ceremony("not a ceremony for this step"));
        }
        // Read after the ceremony (a refusal rolls back, so the ceremony stays): a finish that
        // names no ceremony is a 404 whatever it carries.
        let credential: PublicKeyCredential = serde_json::from_value(credential)
            .map_err(|e| bad_credential(format!("not an authentication response: {e}")))?;
        let cred_id: Vec<u8> = credential.get_credential_id().to_vec();
        let row: Option<Row> = pk::table
            .filter(pk::cred_id.eq(&cred_id))
            .select(Row::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let fail = |user_id: Option<Uuid>, reason: &str| LoginOutcome::Failed {
            user_id,
            tenant_id: None,
            reason: reason.to_string(),
        };
        let Some(row) = row else { return Ok(fail(c.user_id, "unknown credential")) };
        let mut passkey: Passkey = json(row.passkey.clone())?;
        let result = match c.kind.as_str() {
            "login" | "reauth" => {
                if c.user_id != Some(row.user_id) {
                    return Ok(fail(c.user_id, "credential of another user"));
                }
                let state: PasskeyAuthentication = json(c.state)?;
                wa.finish_passkey_authentication(&credential, &state)
            }
            "discoverable" => {
                let state: DiscoverableAuthentication = json(c.state)?;
                let legacy_handle = webauthn_handle(conn, row.user_id).await?;
                match wa.identify_discoverable_authentication(&credential) {
                    Ok((handle, _)) if handle == row.user_id || Some(handle) == legacy_handle =>
                    {
                        #[allow(deprecated)]
                        wa.finish_discoverable_authentication(&credential, state, &[DiscoverableKey::from(&passkey)])
                    }
                    Ok(_) => return Ok(fail(Some(row.user_id), "user handle does not match the credential")),
                    Err(e) => Err(e),
                }
            }
            _ => return Ok(fail(None, "decoy ceremony")),
        };
        let result = match result {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return Ok(fail(Some(row.user_id), "counter_regressed"));
            }
            Err(e) => return Ok(fail(Some(row.user_id), &format!("assertion refused: {e}"))),
        };
        if !result.user_verified() {
            return Ok(fail(Some(row.user_id), "user verification missing"));
        }
        // The stored counter may have moved since the ceremony began (another login).
        let counter = i64::from(result.counter());
        if (counter > 0 || row.sign_count > 0) && counter <= row.sign_count {
            return Ok(fail(Some(row.user_id), "counter_regressed"));
        }
        passkey.update_credential(&result);
        prepared(diesel::update(pk::table.find(row.id)).set((
            pk::passkey.eq(to_json(&passkey)?),
            pk::sign_count.eq(counter),
            pk::last_used_at.eq(now),
        )))
        .execute(conn)
        .await?;
        super::writeback::passkey_used(conn, row.user_id, row.id, row.legacy_id.as_deref(), counter, now).await?;
        let Some(user) = users::get(conn, row.user_id).await?.filter(|u| u.status == "active") else {
            return Ok(fail(Some(row.user_id), "user disabled"));
        };
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &user.tenant_id,
                actor: audit::user(user.id),
                action: "auth.passkey.used",
                target: queue_audit_client::Party::new("passkey", row.id.to_string()),
                payload: serde_json::json!({
                    "counter": counter,
                    "usernameless": c.kind == "discoverable",
                    "reauth": c.kind == "reauth",
                }),
            },
        )
        .await?;
        let then = then(conn, &user).await?;
        Ok(LoginOutcome::Ok { user, passkey_id: row.id, then })
    })
    .await
}

#[tracing::instrument(skip_all)]
pub async fn rename(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    s: &Session,
    id: Uuid,
    name: &str,
) -> Result<CredentialInfo> {
    super::fields::PASSKEY_NAME.check(name)?;
    conn.transaction::<_, super::Error, _>(async |conn| {
        let row: Option<Row> = prepared(
            diesel::update(pk::table.find(id).filter(pk::user_id.eq(s.user_id)))
                .set(pk::name.eq(name.trim()))
                .returning(Row::as_returning()),
        )
        .get_result(conn)
        .await
        .optional()?;
        let row = row.ok_or_else(|| ApiError::NotFound("no such passkey".into()))?;
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &s.tenant_id,
                actor: audit::user(s.user_id),
                action: "auth.passkey.renamed",
                target: queue_audit_client::Party::new("passkey", id.to_string()),
                payload: serde_json::json!({"name": name.trim()}),
            },
        )
        .await?;
        Ok(CredentialInfo { id: row.id, name: row.name, created_at: row.created_at, last_used_at: row.last_used_at })
    })
    .await
}

/// Removes a passkey, never the last one (the last way in); other sessions are revoked, since
/// losing a credential is when a stolen session matters.
#[tracing::instrument(skip_all)]
pub async fn remove(conn: &mut Conn, now: DateTime<Utc>, info: &RequestInfo, s: &Session, id: Uuid) -> Result<usize> {
    conn.transaction::<_, super::Error, _>(async |conn| {
        // Lock the user's passkeys so two concurrent deletes cannot remove the last two.
        let ids: Vec<Uuid> = pk::table.filter(pk::user_id.eq(s.user_id)).select(pk::id).for_update().load(conn).await?;
        if !ids.contains(&id) {
            return Err(ApiError::NotFound("no such passkey".into()).into());
        }
        if ids.len() <= 1 {
            return Err(ApiError::Conflict("this is your only passkey: add another before removing it".into()).into());
        }
        let legacy_id: Option<String> =
            diesel::delete(pk::table.find(id)).returning(pk::legacy_id).get_result(conn).await?;
        super::writeback::passkey_removed(conn, s.user_id, id, legacy_id.as_deref()).await?;
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &s.tenant_id,
                actor: audit::user(s.user_id),
                action: "auth.passkey.removed",
                target: queue_audit_client::Party::new("passkey", id.to_string()),
                payload: serde_json::json!({}),
            },
        )
        .await?;
        super::sessions::revoke(
            conn,
            now,
            info,
            s.user_id,
            &s.tenant_id,
            super::sessions::Which::AllBut(s.id),
            "credential_removed",
        )
        .await
    })
    .await
}
