//! What the auth handlers share.

use queue_platform::ApiError;
use queue_platform::db::{Db, PgConn};
use std::sync::Arc;
use webauthn_rs::prelude::Webauthn;

use crate::config::AuthConfig;
use crate::domain::clock::Clock;
use crate::domain::crypto::Pepper;
use crate::domain::mailer::Composer;

pub struct AuthState {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub config: AuthConfig,
    pub pepper: Pepper,
    pub webauthn: Webauthn,
    pub mail: Composer,
    /// Wakes the audit relay after a commit.
    pub audit_wake: Arc<tokio::sync::Notify>,
    /// Wakes the write-back relay after a commit.
    pub writeback_wake: Arc<tokio::sync::Notify>,
    pub cookie_secure: bool,
    /// Coalesced session validation for `POST /internal/v1/sessions/validate`.
    pub validator: crate::validator::Validator,
}

impl AuthState {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub async fn conn(&self) -> Result<PgConn, ApiError> {
        Ok(self.db.conn().await?)
    }

    /// New events are in the outbox (and maybe mail in the intents, write-back rows): deliver soon.
    pub fn committed(&self) {
        self.audit_wake.notify_one();
        self.writeback_wake.notify_one();
    }

    /// The `Set-Cookie` value for a session token (or, with `None`, one that clears it).
    pub fn cookie(&self, token: Option<&str>, max_age_secs: i64) -> String {
        let secure = if self.cookie_secure { "; Secure" } else { "" };
        match token {
            Some(t) => format!("{}={t}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}", crate::COOKIE),
            None => format!("{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}", crate::COOKIE),
        }
    }
}
