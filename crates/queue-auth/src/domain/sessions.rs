//! Sessions v2 (`queue_sessions`): a 256-bit random token of which only the SHA-256 is stored;
//! an idle timeout that use slides (never past the absolute lifetime); `last_seen` written at
//! most once per interval, by a conditional UPDATE so concurrent validations write once.

use chrono::{DateTime, Duration, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl, SelectableHelper};
use diesel_async::RunQueryDsl;
use queue_platform::db::prepared;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{self, Event};
use super::crypto;
use super::{Conn, RequestInfo, Result};
use crate::config::SessionsConfig;
use crate::db::schema::auth::{queue_sessions, users};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Everything a signed-in user may do.
    Full,
    /// After email verification: may only register a passkey.
    Enrollment,
    /// After redeeming a backup code: may only register a passkey.
    Recovery,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Enrollment => "enrollment",
            Self::Recovery => "recovery",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "full" => Self::Full,
            "enrollment" => Self::Enrollment,
            _ => Self::Recovery,
        }
    }
}

#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = queue_sessions)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    tenant_id: String,
    kind: String,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    ip: Option<String>,
    user_agent: Option<String>,
    verified_at: Option<DateTime<Utc>>,
}

/// A live session as the service sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "tenant_id": "acme", "kind": "full", "created_at": "2026-12-07T15:00:00Z", "last_seen_at": "2026-12-07T15:02:41Z", "idle_expires_at": "2026-12-07T15:32:41Z", "absolute_expires_at": "2026-12-21T15:00:00Z", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "verified_at": "2026-12-07T15:00:00Z"}))]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub tenant_id: String,
    pub kind: Kind,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the user last proved presence with a passkey in this session (the login, or a
    /// re-authentication); `None` for enrollment and recovery sessions.
    pub verified_at: Option<DateTime<Utc>>,
}

impl From<Row> for Session {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            tenant_id: r.tenant_id,
            kind: Kind::parse(&r.kind),
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            idle_expires_at: r.idle_expires_at,
            absolute_expires_at: r.absolute_expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
            verified_at: r.verified_at,
        }
    }
}

/// A new session and its token (shown to the client once, never stored).
pub struct Minted {
    pub session: Session,
    pub token: Zeroizing<String>,
}

pub fn token_hash(token: &str) -> Vec<u8> {
    crypto::sha256(token.as_bytes())
}

/// Creates a session of `kind` for the user. A full session comes from a passkey assertion made
/// just now, so it starts verified (see [`require_recent_verification`]).
#[tracing::instrument(skip_all)]
pub async fn create(
    conn: &mut Conn,
    cfg: &SessionsConfig,
    now: DateTime<Utc>,
    info: &RequestInfo,
    user_id: Uuid,
    tenant_id: &str,
    kind: Kind,
) -> Result<Minted> {
    let token = crypto::new_token();
    let lifetime = match kind {
        Kind::Full => cfg.absolute_lifetime_secs,
        Kind::Enrollment | Kind::Recovery => cfg.restricted_lifetime_secs.min(cfg.absolute_lifetime_secs),
    };
    let absolute = now + Duration::seconds(lifetime);
    let idle = (now + Duration::seconds(cfg.idle_timeout_secs)).min(absolute);
    let id = Uuid::new_v4();
    let row = prepared(
        diesel::insert_into(queue_sessions::table)
            .values((
                queue_sessions::id.eq(id),
                queue_sessions::token_hash.eq(token_hash(&token)),
                queue_sessions::user_id.eq(user_id),
                queue_sessions::tenant_id.eq(tenant_id),
                queue_sessions::kind.eq(kind.as_str()),
                queue_sessions::created_at.eq(now),
                queue_sessions::last_seen_at.eq(now),
                queue_sessions::idle_expires_at.eq(idle),
                queue_sessions::absolute_expires_at.eq(absolute),
                queue_sessions::ip.eq(&info.ip),
                queue_sessions::user_agent
                    .eq(info.user_agent.as_ref().map(|u| u.chars().take(512).collect::<String>())),
                queue_sessions::verified_at.eq((kind == Kind::Full).then_some(now)),
            ))
            .returning(Row::as_returning()),
    )
    .get_result(conn)
    .await?;
    audit::record(
        conn,
        now,
        info,
        Event {
            tenant_id,
            actor: audit::user(user_id),
            action: "auth.session.created",
            target: queue_audit_client::Party::new("session", id.to_string()),
            payload: serde_json::json!({"kind": kind.as_str()}),
        },
    )
    .await?;
    Ok(Minted { session: row.into(), token })
}

/// The session a token names, if it is live now; slides the idle timeout (writing at most once
/// per `last_seen_interval_secs`). The user must be active.
pub async fn validate(
    conn: &mut Conn,
    cfg: &SessionsConfig,
    now: DateTime<Utc>,
    token: &str,
) -> Result<Option<Session>> {
    // A token of another length cannot match, so skip the query.
    if token.len() != super::crypto::TOKEN_LEN {
        return Ok(None);
    }
    let found = validate_hashes(conn, cfg, now, &[token_hash(token)]).await?;
    Ok(found.into_iter().next().flatten())
}

#[derive(diesel::QueryableByName)]
struct Slid {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// [`validate`] for many token hashes at once (coalesced validation, `crate::validator`): one
/// read for all of them and at most one conditional write sliding the idle timeouts that are
/// due. The answer at `i` is the session of `hashes[i]`, if live; a hash may appear more than
/// once.
pub async fn validate_hashes(
    conn: &mut Conn,
    cfg: &SessionsConfig,
    now: DateTime<Utc>,
    hashes: &[Vec<u8>],
) -> Result<Vec<Option<Session>>> {
    let mut unique = hashes.to_vec();
    unique.sort_unstable();
    unique.dedup();
    // The tenant reported is the user's (their provisioned membership), read with the session:
    // a session never carries a tenant of its own choosing.
    let rows: Vec<(Vec<u8>, Row, String)> = queue_sessions::table
        .inner_join(users::table)
        .filter(queue_sessions::token_hash.eq_any(&unique))
        .filter(users::status.eq("active"))
        .select((queue_sessions::token_hash, Row::as_select(), users::tenant_id))
        .load(conn)
        .await?;
    let mut live: HashMap<Vec<u8>, Session> = rows
        .into_iter()
        .filter(|(_, r, _)| r.revoked_at.is_none() && now < r.idle_expires_at && now < r.absolute_expires_at)
        .map(|(h, r, tenant)| (h, Session { tenant_id: tenant, ..Session::from(r) }))
        .collect();
    let interval = Duration::seconds(cfg.last_seen_interval_secs);
    let due: Vec<Uuid> = live.values().filter(|s| now - s.last_seen_at >= interval).map(|s| s.id).collect();
    if !due.is_empty() {
        use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
        // Conditional: of many concurrent validations, one writes; the others see 0 rows.
        let slid: Vec<Slid> = prepared(
            diesel::sql_query(
                "UPDATE auth.queue_sessions SET last_seen_at = $1, idle_expires_at = LEAST($2, absolute_expires_at) \
                 WHERE id = ANY($3) AND last_seen_at <= $4 AND revoked_at IS NULL RETURNING id",
            )
            .bind::<Timestamptz, _>(now)
            .bind::<Timestamptz, _>(now + Duration::seconds(cfg.idle_timeout_secs))
            .bind::<Array<SqlUuid>, _>(&due)
            .bind::<Timestamptz, _>(now - interval),
        )
        .load(conn)
        .await?;
        let slid: HashSet<Uuid> = slid.into_iter().map(|s| s.id).collect();
        for s in live.values_mut().filter(|s| slid.contains(&s.id)) {
            s.last_seen_at = now;
            s.idle_expires_at = (now + Duration::seconds(cfg.idle_timeout_secs)).min(s.absolute_expires_at);
        }
    }
    Ok(hashes.iter().map(|h| live.get(h).cloned()).collect())
}

/// Records a fresh user verification (a passkey assertion) on the session: step-up.
pub async fn mark_verified(conn: &mut Conn, session_id: Uuid, now: DateTime<Utc>) -> Result<()> {
    prepared(diesel::update(queue_sessions::table.find(session_id)).set(queue_sessions::verified_at.eq(now)))
        .execute(conn)
        .await?;
    Ok(())
}

impl Session {
    /// Everything but registering a passkey needs a full session.
    pub fn require_full(&self) -> std::result::Result<&Session, queue_platform::ApiError> {
        if self.kind == Kind::Full {
            Ok(self)
        } else {
            Err(queue_platform::ApiError::Forbidden(format!(
                "a {} session may only register a passkey; sign in with a passkey first",
                self.kind.as_str()
            )))
        }
    }
}

/// Step-up: what makes an account yours (a new passkey, new backup codes) needs, from a full
/// session, a passkey assertion within the last `window_secs` (the login, or
/// `POST /api/v1/auth/webauthn/reauth/…`), so a stolen cookie cannot quietly add a way in.
/// Enrollment and recovery sessions pass: registering their first or replacement passkey is
/// what they are for (and they can do nothing else).
pub fn require_recent_verification(s: &Session, now: DateTime<Utc>, window_secs: i64) -> Result<()> {
    if s.kind != Kind::Full {
        return Ok(());
    }
    match s.verified_at {
        Some(t) if now - t <= Duration::seconds(window_secs) => Ok(()),
        _ => Err(queue_platform::ApiError::StepUpRequired(format!(
            "confirm it is you: verify with a passkey (POST /api/v1/auth/webauthn/reauth/start) within {} minutes \
             before this",
            window_secs / 60
        ))
        .into()),
    }
}

/// The user's live sessions, newest first.
pub async fn list(conn: &mut Conn, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<Session>> {
    let rows: Vec<Row> = queue_sessions::table
        .filter(queue_sessions::user_id.eq(user_id))
        .filter(queue_sessions::revoked_at.is_null())
        .filter(queue_sessions::idle_expires_at.gt(now))
        .filter(queue_sessions::absolute_expires_at.gt(now))
        .order(queue_sessions::created_at.desc())
        .select(Row::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Session::from).collect())
}

pub enum Which {
    One(Uuid),
    AllBut(Uuid),
    All,
}

/// Revokes the user's sessions (only theirs); returns how many; one audit event per call.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    user_id: Uuid,
    tenant_id: &str,
    which: Which,
    reason: &'static str,
) -> Result<usize> {
    let mine = queue_sessions::user_id.eq(user_id).and(queue_sessions::revoked_at.is_null());
    let set = (queue_sessions::revoked_at.eq(now), queue_sessions::revoked_reason.eq(reason));
    let returning = (queue_sessions::id, queue_sessions::legacy_id);
    let (revoked, target): (Vec<(Uuid, Option<String>)>, String) = match which {
        Which::One(id) => (
            prepared(
                diesel::update(queue_sessions::table.filter(mine).filter(queue_sessions::id.eq(id)))
                    .set(set)
                    .returning(returning),
            )
            .load(conn)
            .await?,
            id.to_string(),
        ),
        Which::AllBut(keep) => (
            prepared(
                diesel::update(queue_sessions::table.filter(mine).filter(queue_sessions::id.ne(keep)))
                    .set(set)
                    .returning(returning),
            )
            .load(conn)
            .await?,
            format!("all-but:{keep}"),
        ),
        Which::All => (
            prepared(diesel::update(queue_sessions::table.filter(mine)).set(set).returning(returning))
                .load(conn)
                .await?,
            "all".to_string(),
        ),
    };
    // Raptor's sessions end with their copies here (write-back): signing out at Queue signs out there.
    for (id, legacy_id) in &revoked {
        if let Some(legacy_id) = legacy_id {
            super::writeback::session_revoked(conn, *id, legacy_id, now).await?;
        }
    }
    let n = revoked.len();
    if n > 0 {
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id,
                actor: audit::user(user_id),
                action: "auth.session.revoked",
                target: queue_audit_client::Party::new("session", target),
                payload: serde_json::json!({"count": n, "reason": reason}),
            },
        )
        .await?;
    }
    Ok(n)
}
