//! Outgoing mail: each message is an intent row written in the same transaction as the reason
//! for it; a relay sends each intent once through the configured mailer.
//!
//! The body holds a secret (the code and link), so it is stored sealed with AES-256-GCM under a
//! key derived from the pepper, and erased once sent.
//!
//! * `dev`: writes each message to `<dev_dir>/<intent id>.txt` (README: "Where mail goes").
//! * `postmark`: `POST <base>/email` with `X-Postmark-Server-Token`; the MessageID is kept.
//!   One message per intent: an intent is claimed before sending; it is retried only when it
//!   certainly was not accepted (connection refused, 5xx, 429); an ambiguous outcome (timeout
//!   after sending) is not retried, since a second send could deliver it twice.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use diesel::sql_types::{Integer, Text, Uuid as SqlUuid};
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use queue_platform::db::Db;
use queue_platform::db::prepared;
use queue_platform::http_client::HttpClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::crypto::{self, Pepper};
use super::{Conn, Result};

use crate::config::MailerConfig;
use crate::db::schema::auth::mail_intents as mi;

/// Seals bodies for the intent table and wakes the relay.
#[derive(Clone)]
pub struct Composer {
    key: Arc<LessSafeKey>,
    wake: Arc<Notify>,
}

impl Composer {
    pub fn new(pepper: &Pepper) -> Self {
        let raw = Zeroizing::new(pepper.mac("mail-body-key", b""));
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("32-byte key"));
        Self { key: Arc::new(key), wake: Arc::new(Notify::new()) }
    }

    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn seal(&self, id: Uuid, body: &str) -> String {
        let nonce_bytes = crypto::random_bytes::<12>();
        let mut buf = body.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(id.as_bytes().as_slice()),
                &mut buf,
            )
            .expect("sealing cannot fail for small inputs");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        STANDARD.encode(out)
    }

    fn open(&self, id: Uuid, sealed: &str) -> Option<Zeroizing<String>> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(id.as_bytes().as_slice()), &mut buf).ok()?;
        Some(Zeroizing::new(String::from_utf8(plain.to_vec()).ok()?))
    }

    /// Adds an intent in the caller's transaction.
    pub async fn queue(&self, conn: &mut Conn, id: Uuid, to: &str, subject: &str, body: &str) -> Result<()> {
        prepared(diesel::insert_into(mi::table).values((
            mi::id.eq(id),
            mi::recipient.eq(to),
            mi::subject.eq(subject),
            mi::text_body.eq(self.seal(id, body)),
        )))
        .execute(conn)
        .await?;
        Ok(())
    }
}

pub struct Message<'a> {
    pub intent: Uuid,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

#[derive(Debug)]
pub enum SendError {
    /// Certainly not accepted: try again later.
    Retry(String),
    /// Not accepted and never will be, or the outcome is unknown: do not send again.
    Final(String),
}

/// Where messages go.
pub enum Mailer {
    Dev { dir: PathBuf, from: String },
    Postmark { http: HttpClient, base: url::Url, token: Zeroizing<String>, from: String, stream: String },
}

impl Mailer {
    pub fn from_config(cfg: &MailerConfig, http: HttpClient) -> anyhow::Result<Self> {
        match cfg.kind.as_str() {
            "postmark" => {
                let path = cfg.postmark_token_file.as_ref().ok_or_else(|| anyhow::anyhow!("no postmark token file"))?;
                let token = Zeroizing::new(std::fs::read_to_string(path)?.trim().to_string());
                Ok(Self::Postmark {
                    http,
                    base: cfg.postmark_base_url.clone(),
                    token,
                    from: cfg.from.clone(),
                    stream: cfg.postmark_message_stream.clone(),
                })
            }
            _ => {
                std::fs::create_dir_all(&cfg.dev_dir)?;
                Ok(Self::Dev { dir: cfg.dev_dir.clone(), from: cfg.from.clone() })
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Dev { .. } => "dev",
            Self::Postmark { .. } => "postmark",
        }
    }

    /// Sends; returns the provider's message id.
    pub async fn send(&self, m: &Message<'_>) -> std::result::Result<String, SendError> {
        match self {
            Self::Dev { dir, from } => {
                let path = dir.join(format!("{}.txt", m.intent));
                let text =
                    format!("From: {from}\nTo: {}\nSubject: {}\nX-Intent: {}\n\n{}", m.to, m.subject, m.intent, m.body);
                let tmp = dir.join(format!(".{}.tmp", m.intent));
                tokio::fs::write(&tmp, text).await.map_err(|e| SendError::Retry(e.to_string()))?;
                tokio::fs::rename(&tmp, &path).await.map_err(|e| SendError::Retry(e.to_string()))?;
                Ok(format!("dev-{}", m.intent))
            }
            Self::Postmark { http, base, token, from, stream } => {
                let url = base.join("/email").map_err(|e| SendError::Final(e.to_string()))?;
                let body = serde_json::json!({
                    "From": from, "To": m.to, "Subject": m.subject, "TextBody": m.body,
                    "MessageStream": stream, "Metadata": {"intent_id": m.intent.to_string()},
                });
                let request = http
                    .post(url.as_str())
                    .header("Accept", "application/json")
                    .header("X-Postmark-Server-Token", token.as_str())
                    .json(&body)
                    .timeout(Duration::from_secs(10));
                let response = match http.send(request).await {
                    Ok(r) => r,
                    Err(e) if e.is_connect() => return Err(SendError::Retry(format!("cannot connect: {e}"))),
                    Err(e) => return Err(SendError::Final(format!("outcome unknown, not resent: {e}"))),
                };
                let status = response.status().as_u16();
                let reply: serde_json::Value = response.json().await.unwrap_or_default();
                let code = reply["ErrorCode"].as_i64().unwrap_or(-1);
                match (status, reply["MessageID"].as_str()) {
                    (200, Some(id)) if code == 0 => Ok(id.to_string()),
                    (429, _) | (500..=599, _) => Err(SendError::Retry(format!("postmark answered {status}"))),
                    _ => Err(SendError::Final(format!(
                        "postmark refused ({status}, ErrorCode {code}): {}",
                        reply["Message"].as_str().unwrap_or("")
                    ))),
                }
            }
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    recipient: String,
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = Text)]
    text_body: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

/// Sends due intents, one at a time, each claimed first so one replica sends it.
pub struct MailRelay {
    pub db: Db,
    pub mailer: Mailer,
    pub composer: Composer,
    pub max_attempts: i32,
}

impl MailRelay {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let wake = self.composer.waker();
        tokio::spawn(async move {
            loop {
                match self.send_one().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "mail relay: database error"),
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            }
        })
    }

    /// Claims and sends one due intent; `false` when none is due.
    pub async fn send_one(&self) -> anyhow::Result<bool> {
        let mut conn = self.db.conn().await?;
        // Prepared once per connection: the outbox is polled every couple of seconds.
        let claimed: Option<Claimed> = prepared(diesel::sql_query(
            "UPDATE auth.mail_intents SET claimed_until = now() + interval '2 minutes', attempts = attempts + 1 \
             WHERE id = (SELECT id FROM auth.mail_intents WHERE sent_at IS NULL AND failed_at IS NULL \
               AND next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now()) \
               ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, recipient, subject, text_body, attempts",
        ))
        .get_result(&mut conn)
        .await
        .map(Some)
        .or_else(|e| if e == diesel::result::Error::NotFound { Ok(None) } else { Err(e) })?;
        let Some(c) = claimed else { return Ok(false) };
        let Some(body) = self.composer.open(c.id, &c.text_body) else {
            self.finish(&mut conn, c.id, None, Some("cannot open the sealed body (pepper changed?)")).await?;
            return Ok(true);
        };
        let msg = Message { intent: c.id, to: &c.recipient, subject: &c.subject, body: &body };
        match self.mailer.send(&msg).await {
            Ok(message_id) => {
                self.finish(&mut conn, c.id, Some(&message_id), None).await?;
                tracing::info!(intent = %c.id, provider = self.mailer.name(), message_id, "mail sent");
            }
            Err(SendError::Retry(e)) if c.attempts < self.max_attempts => {
                let delay = 2i64.saturating_pow(c.attempts.clamp(0, 12) as u32);
                diesel::sql_query(
                    "UPDATE auth.mail_intents SET claimed_until = NULL, last_error = $2, \
                     next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                )
                .bind::<SqlUuid, _>(c.id)
                .bind::<Text, _>(&e)
                .bind::<Integer, _>(delay as i32)
                .execute(&mut conn)
                .await?;
                tracing::warn!(intent = %c.id, error = %e, "mail not sent; will retry");
            }
            Err(SendError::Retry(e) | SendError::Final(e)) => {
                self.finish(&mut conn, c.id, None, Some(&e)).await?;
                tracing::error!(intent = %c.id, error = %e, "mail not sent; giving up");
            }
        }
        Ok(true)
    }

    /// Marks the intent sent (with the provider's id) or failed, and erases the sealed body.
    async fn finish(
        &self,
        conn: &mut Conn,
        id: Uuid,
        message_id: Option<&str>,
        error: Option<&str>,
    ) -> diesel::QueryResult<()> {
        let now: DateTime<Utc> = Utc::now();
        prepared(diesel::update(mi::table.find(id)).set((
            mi::text_body.eq(""),
            mi::claimed_until.eq(None::<DateTime<Utc>>),
            mi::sent_at.eq(message_id.map(|_| now)),
            mi::failed_at.eq(error.map(|_| now)),
            mi::provider.eq(self.mailer.name()),
            mi::provider_message_id.eq(message_id),
            mi::last_error.eq(error),
        )))
        .execute(conn)
        .await?;
        Ok(())
    }
}
