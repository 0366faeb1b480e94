//! Coalesced session validation (docs/auth-service.md, "Validation throughput"): concurrent
//! validations share one query.
//!
//! `sessions.validation_workers` tasks each loop: wait for the first pending validation, take
//! whatever else is already queued (up to `sessions.validation_batch_max`), answer them all
//! with one read ([`sessions::validate_hashes`]) and at most one conditional write, and reply
//! to each through its oneshot. Nothing waits on a timer: under light load a validation goes
//! straight to a free task; under load batches form while the tasks are busy. The read of a
//! batch starts after its last validation arrived, so a revocation committed before a
//! validation was sent is always seen. Only token hashes enter the queue.

use chrono::{DateTime, Utc};
use queue_platform::ApiError;
use queue_platform::db::{Db, DbError};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::config::SessionsConfig;
use crate::domain::clock::Clock;
use crate::domain::sessions::{self, Session};
use crate::domain::{self, Conn};

type Answer = Result<Option<Session>, ApiError>;

struct Pending {
    hash: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// The handle the handlers use; the tasks stop once it is dropped (or are aborted with the
/// server's other background tasks).
pub struct Validator {
    tx: mpsc::Sender<Pending>,
}

fn gone() -> ApiError {
    ApiError::Unavailable("session validation unavailable".into())
}

impl Validator {
    /// Starts the tasks on the current runtime.
    pub fn spawn(db: Db, clock: Arc<dyn Clock>, cfg: SessionsConfig) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let workers = cfg.validation_workers.max(1);
        let max = cfg.validation_batch_max.max(1);
        let (tx, rx) = mpsc::channel(max * workers * 4);
        let rx = Arc::new(Mutex::new(rx));
        let cfg = Arc::new(cfg);
        let tasks =
            (0..workers).map(|_| tokio::spawn(work(rx.clone(), db.clone(), clock.clone(), cfg.clone(), max))).collect();
        (Self { tx }, tasks)
    }

    /// The live session whose token hashes to `hash` (see [`sessions::validate`]).
    pub async fn validate(&self, hash: Vec<u8>) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { hash, reply }).await.map_err(|_| gone())?;
        // A dropped reply (the task stopped mid-batch) is an error, never a "valid".
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

async fn work(
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    db: Db,
    clock: Arc<dyn Clock>,
    cfg: Arc<SessionsConfig>,
    max: usize,
) {
    let mut batch = Vec::with_capacity(max);
    loop {
        {
            // One task at a time waits for the queue; it takes the first validation and
            // everything queued behind it, then lets the next task wait.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, max).await == 0 {
                return;
            }
        }
        // `now` after the batch was taken: no expiry is judged from before a request arrived.
        answer(&db, &cfg, clock.now(), &mut batch).await;
    }
}

/// Why a whole batch failed; each waiting validation gets the error the handler gave before
/// coalescing: 503 when no connection can be had, 500 when the query fails.
enum Failure {
    Unavailable,
    Query(String),
}

impl Failure {
    fn to_api(&self) -> ApiError {
        match self {
            Self::Unavailable => ApiError::Unavailable("database unavailable".into()),
            Self::Query(m) => ApiError::internal(anyhow::anyhow!("session validation failed: {m}")),
        }
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                Self::Unavailable
            }
            other => Self::Query(other.to_string()),
        }
    }
}

impl From<domain::Error> for Failure {
    fn from(e: domain::Error) -> Self {
        match e {
            domain::Error::Db(d) => Self::Query(d.to_string()),
            domain::Error::Api(ApiError::Unavailable(_)) => Self::Unavailable,
            domain::Error::Api(other) => Self::Query(other.to_string()),
        }
    }
}

async fn query(
    conn: &mut Conn,
    cfg: &SessionsConfig,
    now: DateTime<Utc>,
    hashes: &[Vec<u8>],
) -> Result<Vec<Option<Session>>, Failure> {
    Ok(sessions::validate_hashes(conn, cfg, now, hashes).await?)
}

async fn answer(db: &Db, cfg: &SessionsConfig, now: DateTime<Utc>, batch: &mut Vec<Pending>) {
    let hashes: Vec<Vec<u8>> = batch.iter_mut().map(|p| std::mem::take(&mut p.hash)).collect();
    let result = match db.conn().await {
        Ok(mut conn) => query(&mut conn, cfg, now, &hashes).await,
        Err(e) => Err(Failure::from(e)),
    };
    match result {
        Ok(found) if found.len() == batch.len() => {
            for (p, s) in batch.drain(..).zip(found) {
                let _ = p.reply.send(Ok(s));
            }
        }
        Ok(_) => {
            for p in batch.drain(..) {
                let _ =
                    p.reply.send(Err(ApiError::internal(anyhow::anyhow!("session validation: answers miscounted"))));
            }
        }
        Err(f) => {
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(f.to_api()));
            }
        }
    }
}
