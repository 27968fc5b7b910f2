//! SQLite: one relay per database file (see the crate docs), so the relay reads, publishes
//! and marks straight on the pool, without a claim transaction; sequence = `AUTOINCREMENT`
//! rowid, timestamps in Unix milliseconds, ids as text, lists of sequence numbers as JSON.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Pool, Sqlite};
use tidings_core::{Error, Result};
use uuid::Uuid;

use crate::backend::{sealed::Driver, Claim, Names, Scope};
use crate::sql::Dialect;

/// Milliseconds since the Unix epoch, from SQLite's clock (`julianday` counts whole
/// milliseconds; rounding removes the floating-point error of the conversion).
const NOW_MS: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

#[allow(private_interfaces)]
impl Driver for Sqlite {
    const DIALECT: Dialect = Dialect {
        placeholder: '?',
        seq_column: "INTEGER PRIMARY KEY AUTOINCREMENT",
        integer: "INTEGER",
        uuid: "TEXT",
        bytes: "BLOB",
        timestamp: "INTEGER",
        timestamp_default: "",
        now: NOW_MS,
        age: "$1",
        // NOW_MS minus the oldest row's time (both Unix milliseconds).
        oldest_age_ms:
            "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) - MIN(created_at)",
        seq_in: "IN (SELECT value FROM json_each($1))",
        claim_lock: "",
        notify_insert: None,
    };

    type Id = String;
    type Seqs = String;
    /// Milliseconds.
    type Age = i64;

    fn id(id: Uuid) -> String {
        id.to_string()
    }

    fn parse_id(stored: String) -> Result<Uuid> {
        Uuid::parse_str(&stored)
            .map_err(|e| Error::backend(format!("outbox row has a bad id {stored:?}"), e))
    }

    fn seqs(seqs: &[i64]) -> String {
        serde_json::to_string(seqs).expect("a list of integers encodes")
    }

    fn age(age: Duration) -> i64 {
        i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn begin_migration<'a>(
        pool: &'a Pool<Self>,
        _names: &'a Names,
    ) -> BoxFuture<'a, Result<sqlx::Transaction<'static, Self>, sqlx::Error>> {
        // IMMEDIATE takes the write lock first, so two processes migrating at once run one
        // after the other.
        Box::pin(pool.begin_with("BEGIN IMMEDIATE"))
    }

    fn begin_claim<'a>(
        pool: &'a Pool<Self>,
        _names: &'a Names,
        _claim: &Claim<'a>,
    ) -> BoxFuture<'a, Result<Option<Scope<'a, Self>>, sqlx::Error>> {
        // One relay per database: read, publish, then mark in one statement. A transaction
        // held while publishing would keep a connection (and, once marking, the write
        // lock) from the application for as long as the broker takes.
        Box::pin(async move { Ok(Some(Scope::Pool(pool))) })
    }

    fn commits<'a>(
        _pool: &'a Pool<Self>,
        _names: &'a Names,
    ) -> BoxFuture<'a, Option<BoxStream<'static, ()>>> {
        Box::pin(async { None })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::NOW_MS;

    #[tokio::test]
    async fn the_clock_is_unix_milliseconds() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now: i64 = sqlx::query_scalar(&format!("SELECT {NOW_MS}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = Duration::from_millis(now as u64);
        // SQLite's clock counts whole milliseconds.
        assert!(
            before - Duration::from_millis(1) <= now && now <= after,
            "{now:?}"
        );
    }
}
