//! Mails that tell a user a way into their account was added or used: a new passkey, a new set
//! of backup codes, a recovery with a backup code. A stolen cookie or code must not become a
//! quiet takeover: the owner hears of it at the address they verified.
//!
//! Each notice is a mail intent queued in the transaction of the change itself, so it is sent
//! if and only if the change commits (the relay in `mailer` delivers it). The bodies hold no
//! secret: what happened, when, from where, and what to do if it was not them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::mailer::Composer;
use super::users::User;
use super::{Conn, RequestInfo, Result};

/// What happened to the account.
pub enum Notice<'a> {
    PasskeyAdded { name: &'a str },
    BackupCodesGenerated,
    RecoveredWithBackupCode { remaining: i64 },
}

impl Notice<'_> {
    fn subject(&self) -> &'static str {
        match self {
            Self::PasskeyAdded { .. } => "A passkey was added to your Queue account",
            Self::BackupCodesGenerated => "New backup codes for your Queue account",
            Self::RecoveredWithBackupCode { .. } => "A backup code was used to recover your Queue account",
        }
    }

    fn what(&self) -> String {
        match self {
            Self::PasskeyAdded { name } => format!("A new passkey named \"{name}\" was added to your account."),
            Self::BackupCodesGenerated => {
                "A new set of backup codes was generated for your account; the previous codes no longer work."
                    .to_string()
            }
            Self::RecoveredWithBackupCode { remaining } => format!(
                "A backup code was used to recover your account; every other session was signed out. \
                 {remaining} unused codes remain."
            ),
        }
    }
}

/// Queues the notice to the user's address in the caller's transaction.
pub async fn queue(
    conn: &mut Conn,
    mail: &Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    user: &User,
    notice: Notice<'_>,
) -> Result<()> {
    let from = info.ip.as_deref().unwrap_or("an unknown address");
    let body = format!(
        "{}\n\nWhen: {} UTC\nFrom: {from}\n\nIf this was you, there is nothing to do.\n\
         If it was not, sign in at /auth/account, remove any passkey you do not recognise, \
         sign out every other session and generate new backup codes.\n",
        notice.what(),
        now.format("%Y-%m-%d %H:%M"),
    );
    mail.queue(conn, Uuid::new_v4(), &user.email, notice.subject(), &body).await
}
