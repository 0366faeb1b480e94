//! One import batch: one transaction, each record in a savepoint of its own (a refused record
//! leaves nothing behind and the batch goes on), one audit event per created or updated record
//! in the same transaction. A dry run is the same work rolled back at the end, so it answers the
//! outcomes a real run would, and writes nothing.

use diesel_async::AsyncConnection;

use super::super::import_batch::ImportResult;
use super::super::{Conn, Error};
use super::backup_codes::{self, LegacyBackupCode};
use super::common::{Ctx, RecordError};
use super::sessions::{self, LegacySession};
use super::users::{self, LegacyUser};

/// The records of one batch, by kind.
pub enum Records {
    Users(Vec<LegacyUser>),
    Sessions(Vec<LegacySession>),
    BackupCodes(Vec<LegacyBackupCode>),
}

impl Records {
    fn len(&self) -> usize {
        match self {
            Self::Users(r) => r.len(),
            Self::Sessions(r) => r.len(),
            Self::BackupCodes(r) => r.len(),
        }
    }

    fn legacy_id(&self, i: usize) -> &str {
        match self {
            Self::Users(r) => &r[i].legacy_id,
            Self::Sessions(r) => &r[i].legacy_id,
            Self::BackupCodes(r) => &r[i].legacy_id,
        }
    }

    async fn import_one(&self, conn: &mut Conn, ctx: &Ctx<'_>, i: usize) -> Result<ImportResult, RecordError> {
        match self {
            Self::Users(r) => users::import_one(conn, ctx, &r[i]).await,
            Self::Sessions(r) => sessions::import_one(conn, ctx, &r[i]).await,
            Self::BackupCodes(r) => backup_codes::import_one(conn, ctx, &r[i]).await,
        }
    }
}

/// Why the batch's transaction ends without a commit.
enum Abort {
    /// A dry run: the outcomes computed.
    DryRun(Vec<ImportResult>),
    Failed(Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Self::Failed(Error::Db(e))
    }
}

/// Imports the batch; the results in the records' order. `Err` only when the batch as a whole
/// cannot be done (the database): then nothing of it is written.
#[tracing::instrument(skip_all, fields(records = records.len(), dry_run))]
pub async fn import(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    records: &Records,
    dry_run: bool,
) -> Result<Vec<ImportResult>, Error> {
    let outcome = conn
        .transaction::<_, Abort, _>(async |conn| {
            let mut results = Vec::with_capacity(records.len());
            for i in 0..records.len() {
                let one =
                    conn.transaction::<_, RecordError, _>(async |conn| records.import_one(conn, ctx, i).await).await;
                results.push(match one {
                    Ok(result) => result,
                    Err(RecordError::Refused(reason)) => ImportResult::refused(records.legacy_id(i), reason),
                    Err(RecordError::Db(e)) => return Err(Abort::Failed(Error::Db(e))),
                });
            }
            if dry_run { Err(Abort::DryRun(results)) } else { Ok(results) }
        })
        .await;
    match outcome {
        Ok(results) => Ok(results),
        Err(Abort::DryRun(results)) => Ok(results.into_iter().map(ImportResult::rolled_back).collect()),
        Err(Abort::Failed(e)) => Err(e),
    }
}
