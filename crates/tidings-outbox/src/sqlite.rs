//! SQLite: one relay per database file (see the crate docs), sequence = `AUTOINCREMENT`
//! rowid, timestamps in Unix milliseconds.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::{Pool, Row, Sqlite, SqliteConnection};
use tidings_core::{Bus, Error, Result};
use uuid::Uuid;

use crate::backend::{
    check_version, db_error, millis, publish_rows, sealed::Sealed, unix_ms, BatchOutcome, Claim,
    Names, NewRow, Pending, SCHEMA_VERSION, WRITE_COLUMNS,
};

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

fn schema_sql(n: &Names) -> Vec<String> {
    let (o, i, s) = (&n.outbox, &n.inbox, &n.schema);
    vec![
        format!("CREATE TABLE IF NOT EXISTS {s} (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {o} (
                seq          INTEGER PRIMARY KEY AUTOINCREMENT,
                service      TEXT NOT NULL,
                topic        TEXT NOT NULL,
                id           TEXT NOT NULL,
                event_type   TEXT NOT NULL,
                version      INTEGER NOT NULL,
                meta         BLOB NOT NULL,
                payload      BLOB NOT NULL,
                created_at   INTEGER NOT NULL,
                published_at INTEGER,
                parked_at    INTEGER,
                last_error   TEXT
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {o}_pending ON {o} (service, seq) WHERE published_at IS NULL AND parked_at IS NULL"),
        format!("CREATE INDEX IF NOT EXISTS {o}_published ON {o} (published_at) WHERE published_at IS NOT NULL"),
        format!(
            "CREATE TABLE IF NOT EXISTS {i} (
                scope      TEXT NOT NULL,
                event_id   TEXT NOT NULL,
                event_type TEXT NOT NULL,
                handled_at INTEGER NOT NULL,
                PRIMARY KEY (scope, event_id)
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {i}_handled ON {i} (handled_at)"),
    ]
}

#[allow(private_interfaces)] // Sealed is not nameable outside the crate
impl Sealed for Sqlite {
    fn migrate<'a>(pool: &'a Pool<Self>, names: &'a Names) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ctx = "creating the outbox tables in SQLite";
            // IMMEDIATE takes the write lock first, so two processes migrating at once
            // run one after the other.
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| db_error(ctx, e))?;
            for stmt in schema_sql(names) {
                sqlx::query(&stmt)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(ctx, e))?;
            }
            let found: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT version FROM {} WHERE component = 'outbox'",
                names.schema
            ))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(ctx, e))?;
            check_version(found, names)?;
            if found.is_none() {
                sqlx::query(&format!(
                    "INSERT INTO {} (component, version) VALUES ('outbox', ?)",
                    names.schema
                ))
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(ctx, e))?;
            }
            tx.commit().await.map_err(|e| db_error(ctx, e))
        })
    }

    fn insert<'a>(
        conn: &'a mut SqliteConnection,
        names: &'a Names,
        rows: Vec<NewRow>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO {} (service, topic, {WRITE_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                names.outbox
            );
            let now = now_ms();
            for row in rows {
                sqlx::query(&sql)
                    .bind(row.service)
                    .bind(row.topic)
                    .bind(row.id.to_string())
                    .bind(row.event_type)
                    .bind(row.version)
                    .bind(row.meta)
                    .bind(row.payload)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_error("writing an event into the outbox", e))?;
            }
            Ok(())
        })
    }

    fn record<'a>(
        conn: &'a mut SqliteConnection,
        names: &'a Names,
        scope: &'a str,
        id: Uuid,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let done = sqlx::query(&format!(
                "INSERT INTO {} (scope, event_id, event_type, handled_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                names.inbox
            ))
            .bind(scope)
            .bind(id.to_string())
            .bind(event_type)
            .bind(now_ms())
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("recording the event in the inbox", e))?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn relay_batch<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        claim: Claim<'a>,
        bus: &'a Bus,
    ) -> BoxFuture<'a, Result<BatchOutcome>> {
        Box::pin(async move {
            // One relay per database: read, publish, then mark in one statement. A crash
            // between publishing and marking publishes the rows again (the inbox absorbs
            // the duplicates).
            let rows = sqlx::query(&format!(
                "SELECT seq, topic, meta, payload FROM {} WHERE service = ? AND published_at IS NULL AND parked_at IS NULL ORDER BY seq LIMIT ?",
                names.outbox
            ))
            .bind(claim.service)
            .bind(claim.limit as i64)
            .fetch_all(pool)
            .await
            .map_err(|e| db_error("reading pending outbox rows", e))?;
            let rows = rows.into_iter().map(pending).collect::<Vec<_>>();
            let mut outcome = BatchOutcome {
                claimed: rows.len(),
                ..BatchOutcome::default()
            };
            if rows.is_empty() {
                return Ok(outcome);
            }
            let report = publish_rows(bus, &rows).await;
            if !report.published.is_empty() {
                let seqs =
                    serde_json::to_string(&report.published).expect("a list of integers encodes");
                let sql = if claim.delete {
                    format!(
                        "DELETE FROM {} WHERE seq IN (SELECT value FROM json_each(?))",
                        names.outbox
                    )
                } else {
                    format!(
                        "UPDATE {} SET published_at = ? WHERE seq IN (SELECT value FROM json_each(?))",
                        names.outbox
                    )
                };
                let mut q = sqlx::query(&sql);
                if !claim.delete {
                    q = q.bind(now_ms());
                }
                q.bind(seqs)
                    .execute(pool)
                    .await
                    .map_err(|e| db_error("marking outbox rows published", e))?;
            }
            for (seq, error) in &report.parked {
                tracing::error!(seq, %error, "parking an outbox row that cannot be published");
                sqlx::query(&format!(
                    "UPDATE {} SET parked_at = ?, last_error = ? WHERE seq = ?",
                    names.outbox
                ))
                .bind(now_ms())
                .bind(error)
                .bind(seq)
                .execute(pool)
                .await
                .map_err(|e| db_error("parking an outbox row", e))?;
            }
            outcome.published = report.published.len();
            outcome.parked = report.parked.len();
            outcome.error = report.error;
            Ok(outcome)
        })
    }

    fn purge_published<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let r = sqlx::query(&format!(
                "DELETE FROM {} WHERE published_at IS NOT NULL AND published_at <= ?",
                names.outbox
            ))
            .bind(now_ms().saturating_sub(millis(retention)))
            .execute(pool)
            .await
            .map_err(|e| db_error("deleting published outbox rows", e))?;
            Ok(r.rows_affected())
        })
    }

    fn purge_inbox<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let r = sqlx::query(&format!(
                "DELETE FROM {} WHERE handled_at <= ?",
                names.inbox
            ))
            .bind(now_ms().saturating_sub(millis(retention)))
            .execute(pool)
            .await
            .map_err(|e| db_error("deleting old inbox records", e))?;
            Ok(r.rows_affected())
        })
    }

    fn counts<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(u64, u64, u64)>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT
                    COALESCE(SUM(published_at IS NULL AND parked_at IS NULL), 0),
                    COALESCE(SUM(published_at IS NOT NULL), 0),
                    COALESCE(SUM(parked_at IS NOT NULL), 0)
                 FROM {} WHERE ?1 IS NULL OR service = ?1",
                names.outbox
            ))
            .bind(service)
            .fetch_one(pool)
            .await
            .map_err(|e| db_error("counting outbox rows", e))?;
            let get = |i: usize| row.get::<i64, _>(i) as u64;
            Ok((get(0), get(1), get(2)))
        })
    }

    fn parked<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::ParkedRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT seq, id, event_type, COALESCE(last_error, '') FROM {} WHERE service = ? AND parked_at IS NOT NULL ORDER BY seq LIMIT ?",
                names.outbox
            ))
            .bind(service)
            .bind(limit as i64)
            .fetch_all(pool)
            .await
            .map_err(|e| db_error("listing parked outbox rows", e))?;
            rows.into_iter()
                .map(|r| {
                    let id: String = r.get(1);
                    let id = Uuid::parse_str(&id).map_err(|e| {
                        Error::backend(format!("outbox row has a bad id {id:?}"), e)
                    })?;
                    Ok(crate::ParkedRow {
                        seq: r.get(0),
                        id,
                        event_type: r.get(2),
                        error: r.get(3),
                    })
                })
                .collect()
        })
    }

    fn requeue_parked<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: &'a str,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let r = sqlx::query(&format!(
                "UPDATE {} SET parked_at = NULL, last_error = NULL WHERE service = ? AND parked_at IS NOT NULL",
                names.outbox
            ))
            .bind(service)
            .execute(pool)
            .await
            .map_err(|e| db_error("requeueing parked outbox rows", e))?;
            Ok(r.rows_affected())
        })
    }

    fn commits<'a>(
        _pool: &'a Pool<Self>,
        _names: &'a Names,
    ) -> BoxFuture<'a, Option<BoxStream<'static, ()>>> {
        Box::pin(async { None })
    }
}

/// A claimed row.
fn pending(r: sqlx::sqlite::SqliteRow) -> Pending {
    let payload: Vec<u8> = r.get(3);
    Pending {
        seq: r.get(0),
        topic: r.get(1),
        meta: r.get(2),
        payload: payload.into(),
    }
}
