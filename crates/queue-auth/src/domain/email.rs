//! Email verification: an 8-digit code and a link token, stored only as HMACs under the pepper,
//! valid 15 minutes and 5 attempts, consumed atomically (the row is locked, then marked).

use chrono::{DateTime, Duration, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_platform::ApiError;
use queue_platform::db::prepared;
use uuid::Uuid;

use super::audit::{self, Event};
use super::crypto::{self, Pepper};
use super::users::{self, EmailAddress, User};
use super::{Conn, RequestInfo, Result, limits, mailer};
use crate::config::{EmailConfig, LimitsConfig};
use crate::db::schema::auth::email_verifications as ev;

const CODE: &str = "email-code";
const LINK: &str = "email-link";

fn code_mac(pepper: &Pepper, tenant: &str, email: &str, code: &str) -> Vec<u8> {
    pepper.mac(CODE, format!("{tenant}\0{email}\0{code}").as_bytes())
}

/// The one refusal for every failed confirmation: wrong code, expired, used up, unknown address.
pub fn refused() -> ApiError {
    // 401, like a wrong backup code: the proof does not verify. Which of the reasons it is
    // (wrong, expired, used up, unknown address) is not said, and a well-formed code cannot be
    // told from a right one by its shape, so this is no 422.
    ApiError::Unauthorized("the code or link is invalid or has expired".into())
}

/// Starts a verification: checks cooldown and daily caps (keyed by the address alone), stores
/// the hashes and the message intent (and its audit event) in one transaction. Known and
/// unknown addresses take the same path. `tenant` is the default tenant: sign-up names none.
#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn send(
    conn: &mut Conn,
    cfg: &EmailConfig,
    pepper: &Pepper,
    mail: &mailer::Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    tenant: &str,
    email: &EmailAddress,
) -> Result<()> {
    // The cooldown and the daily cap are the address's, whatever else the request says.
    let latest: Option<DateTime<Utc>> =
        ev::table.filter(ev::email.eq(email.as_str())).select(diesel::dsl::max(ev::created_at)).first(conn).await?;
    if let Some(t) = latest {
        let ready = t + Duration::seconds(cfg.resend_cooldown_secs);
        if ready > now {
            return Err(
                ApiError::TooManyRequests { retry_after_secs: (ready - now).num_seconds().max(1) as u64 }.into()
            );
        }
    }
    let day = Duration::days(1);
    if let Some(ip) = &info.ip_key() {
        limits::hit(conn, now, "email_send_ip", ip, cfg.daily_cap_per_ip, day).await?;
    }
    limits::hit(conn, now, "email_send_account", &limits::address(email.as_str()), cfg.daily_cap_per_address, day)
        .await?;
    let code = crypto::numeric_code();
    let link = crypto::new_token();
    let id = Uuid::new_v4();
    conn.transaction::<_, super::Error, _>(async |conn| {
        prepared(diesel::insert_into(ev::table).values((
            ev::id.eq(id),
            ev::tenant_id.eq(tenant),
            ev::email.eq(email.as_str()),
            ev::code_hash.eq(code_mac(pepper, tenant, email.as_str(), &code)),
            ev::link_hash.eq(pepper.mac(LINK, link.as_bytes())),
            ev::created_at.eq(now),
            ev::expires_at.eq(now + Duration::seconds(cfg.code_ttl_secs)),
            ev::ip.eq(&info.ip),
        )))
        .execute(conn)
        .await?;
        let minutes = cfg.code_ttl_secs / 60;
        let mut url = cfg.link_base_url.clone();
        url.query_pairs_mut().append_pair("token", &link);
        let body = format!(
            "Your Queue verification code is {}\n\nOr open this link: {url}\n\nIt expires in {minutes} minutes. \
             If you did not ask for it, ignore this message.\n",
            code.as_str()
        );
        mail.queue(conn, id, email.as_str(), "Your Queue verification code", &body).await?;
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: tenant,
                actor: audit::anonymous(),
                action: "auth.email.verification_sent",
                target: queue_audit_client::Party::new("email", email.as_str()),
                payload: serde_json::json!({"verification_id": id}),
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// What the client presents: the code with its address, or the link token.
pub enum Proof<'a> {
    Code { email: &'a EmailAddress, code: &'a str },
    Link { token: &'a str },
}

#[derive(diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = ev)]
struct Pending {
    id: Uuid,
    tenant_id: String,
    email: String,
    code_hash: Vec<u8>,
    attempts: i32,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
}

enum Outcome {
    Confirmed(Confirmed),
    WrongCode(String),
    Refused,
}

pub struct Confirmed {
    pub user: User,
    pub created: bool,
    /// Whether the user already has a passkey (then no enrollment session is given).
    pub has_passkey: bool,
}

/// Checks the proof; on success consumes the verification, finds the address's user (or creates
/// one in `default_tenant`: [`user_for_verified_address`]) and marks the address verified,
/// all in one transaction. Every failure answers [`refused`]. The tenant a verification row
/// names never decides a membership.
#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn confirm(
    conn: &mut Conn,
    cfg: &EmailConfig,
    limits_cfg: &LimitsConfig,
    pepper: &Pepper,
    now: DateTime<Utc>,
    info: &RequestInfo,
    default_tenant: &str,
    proof: Proof<'_>,
) -> Result<Confirmed> {
    let tenant = default_tenant;
    if let Some(ip) = &info.ip_key() {
        limits::check(conn, limits_cfg, now, "email_confirm_ip", ip).await?;
    }
    if let Proof::Code { email, .. } = &proof {
        limits::check(conn, limits_cfg, now, "email_confirm_account", &limits::address(email.as_str())).await?;
    }
    let outcome = conn
        .transaction::<_, super::Error, _>(async |conn| {
            let pending: Option<Pending> = match &proof {
                Proof::Code { email, .. } => ev::table
                    .filter(ev::consumed_at.is_null())
                    .filter(ev::email.eq(email.as_str()))
                    .order(ev::created_at.desc())
                    .select(Pending::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?,
                Proof::Link { token } => ev::table
                    .filter(ev::consumed_at.is_null())
                    .filter(ev::link_hash.eq(pepper.mac(LINK, token.as_bytes())))
                    .select(Pending::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?,
            };
            let Some(p) = pending else { return Ok(Outcome::Refused) };
            if p.consumed_at.is_some() || p.expires_at <= now || p.attempts >= cfg.max_attempts {
                return Ok(Outcome::Refused);
            }
            let ok = match &proof {
                Proof::Code { code, .. } => {
                    let attempt = code_mac(pepper, &p.tenant_id, &p.email, code);
                    crypto::ct_eq(&attempt, &p.code_hash)
                }
                Proof::Link { .. } => true,
            };
            if !ok {
                prepared(diesel::update(ev::table.find(p.id)).set(ev::attempts.eq(ev::attempts + 1)))
                    .execute(conn)
                    .await?;
                return Ok(Outcome::WrongCode(p.email));
            }
            prepared(
                diesel::update(ev::table.find(p.id)).set((ev::consumed_at.eq(now), ev::attempts.eq(ev::attempts + 1))),
            )
            .execute(conn)
            .await?;
            let email = EmailAddress::parse(&p.email)?;
            let (user, created) = user_for_verified_address(conn, now, info, default_tenant, &email).await?;
            if user.status != "active" {
                return Ok(Outcome::Refused);
            }
            users::mark_verified(conn, user.id, now).await?;
            audit::record(
                conn,
                now,
                info,
                Event {
                    tenant_id: &user.tenant_id,
                    actor: audit::user(user.id),
                    action: "auth.email.verified",
                    target: audit::user(user.id),
                    payload: serde_json::json!({"verification_id": p.id, "created": created}),
                },
            )
            .await?;
            let has_passkey = super::passkeys::count(conn, user.id).await? > 0;
            Ok(Outcome::Confirmed(Confirmed { user, created, has_passkey }))
        })
        .await?;
    match outcome {
        Outcome::Confirmed(c) => {
            limits::success(conn, "email_confirm_account", &limits::address(&c.user.email)).await?;
            Ok(c)
        }
        other => {
            let account = match (&other, &proof) {
                (Outcome::WrongCode(email), _) => Some(limits::address(email)),
                (_, Proof::Code { email, .. }) => Some(limits::address(email.as_str())),
                _ => None,
            };
            if let Some(a) = account {
                limits::failure(conn, limits_cfg, now, info, tenant, "email_confirm_account", &a).await?;
            }
            if let Some(ip) = &info.ip_key() {
                limits::failure(conn, limits_cfg, now, info, tenant, "email_confirm_ip", ip).await?;
            }
            Err(refused().into())
        }
    }
}

/// The user a verified address signs up as (here, not in `users`, because it asks about
/// passkeys, which depend on users). Sign-up names no tenant, so the address alone
/// decides, and a sign-up never creates a membership outside `default_tenant`: an address
/// provisioned into a tenant (Raptor's import, `POST /internal/v1/users`) is that user (of
/// several, the earliest without a passkey yet, else the earliest), and an address nobody has
/// becomes a new user in `default_tenant`. Returns the user and whether it is new.
#[tracing::instrument(skip_all)]
async fn user_for_verified_address(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    default_tenant: &str,
    email: &EmailAddress,
) -> Result<(User, bool)> {
    let found = users::with_address(conn, email).await?;
    if found.len() > 1 {
        for u in &found {
            if super::passkeys::count(conn, u.id).await? == 0 {
                return Ok((u.clone(), false));
            }
        }
    }
    match found.into_iter().next() {
        Some(u) => Ok((u, false)),
        None => {
            let new = users::NewUser { tenant_id: default_tenant, email, display_name: None, verified_at: Some(now) };
            users::create_or_get(conn, now, info, audit::anonymous(), new).await
        }
    }
}
