//! PostgreSQL: relays claim rows with `FOR UPDATE SKIP LOCKED` inside a claim transaction
//! (held while the batch is published), exclusive relays also take a transaction-scoped
//! advisory lock so batches are published one after the other in sequence order.
//! `NOTIFY` on enqueue wakes the relays when the transaction commits.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Pool, Postgres, Row};
use tidings_core::{Bus, Result};
use uuid::Uuid;

use crate::backend::{
    check_version, db_error, publish_rows, sealed::Sealed, BatchOutcome, Claim, Names, NewRow,
    Pending, SCHEMA_VERSION, WRITE_COLUMNS,
};

fn schema_sql(n: &Names) -> Vec<String> {
    let (o, i, s) = (&n.outbox, &n.inbox, &n.schema);
    vec![
        format!("CREATE TABLE IF NOT EXISTS {s} (component TEXT PRIMARY KEY, version BIGINT NOT NULL)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {o} (
                seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                service      TEXT NOT NULL,
                topic        TEXT NOT NULL,
                id           UUID NOT NULL,
                event_type   TEXT NOT NULL,
                version      BIGINT NOT NULL,
                meta         BYTEA NOT NULL,
                payload      BYTEA NOT NULL,
                created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
                published_at TIMESTAMPTZ,
                parked_at    TIMESTAMPTZ,
                last_error   TEXT
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {o}_pending ON {o} (service, seq) WHERE published_at IS NULL AND parked_at IS NULL"),
        format!("CREATE INDEX IF NOT EXISTS {o}_published ON {o} (published_at) WHERE published_at IS NOT NULL"),
        format!(
            "CREATE TABLE IF NOT EXISTS {i} (
                scope      TEXT NOT NULL,
                event_id   UUID NOT NULL,
                event_type TEXT NOT NULL,
                handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (scope, event_id)
            )"
        ),
        format!("CREATE INDEX IF NOT EXISTS {i}_handled ON {i} (handled_at)"),
    ]
}

fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[allow(private_interfaces)] // Sealed is not nameable outside the crate
impl Sealed for Postgres {
    fn migrate<'a>(pool: &'a Pool<Self>, names: &'a Names) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ctx = "creating the outbox tables in PostgreSQL";
            let mut tx = pool.begin().await.map_err(|e| db_error(ctx, e))?;
            // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in PostgreSQL; the
            // advisory lock makes migrating processes take turns.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(names.lock_key("migrate"))
                .execute(&mut *tx)
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
                    "INSERT INTO {} (component, version) VALUES ('outbox', $1)",
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
        conn: &'a mut PgConnection,
        names: &'a Names,
        rows: Vec<NewRow>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let columns =
                format!("(service, topic, {WRITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
            let plain = format!("INSERT INTO {} {columns}", names.outbox);
            // The last row also queues a NOTIFY, which PostgreSQL delivers on commit only.
            let notify = format!(
                "WITH ins AS (INSERT INTO {} {columns} RETURNING seq) SELECT pg_notify($8, '') FROM ins",
                names.outbox
            );
            let count = rows.len();
            for (i, row) in rows.into_iter().enumerate() {
                let last = i + 1 == count;
                let mut q = sqlx::query(if last { &notify } else { &plain })
                    .bind(row.service)
                    .bind(row.topic)
                    .bind(row.id)
                    .bind(row.event_type)
                    .bind(row.version)
                    .bind(row.meta)
                    .bind(row.payload);
                if last {
                    q = q.bind(&names.channel);
                }
                q.execute(&mut *conn)
                    .await
                    .map_err(|e| db_error("writing an event into the outbox", e))?;
            }
            Ok(())
        })
    }

    fn record<'a>(
        conn: &'a mut PgConnection,
        names: &'a Names,
        scope: &'a str,
        id: Uuid,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            // A concurrent delivery of the same event waits here on the unique key until the
            // first one commits (then finds the record) or rolls back (then records it).
            let done = sqlx::query(&format!(
                "INSERT INTO {} (scope, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                names.inbox
            ))
            .bind(scope)
            .bind(id)
            .bind(event_type)
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
            let mut tx = pool
                .begin()
                .await
                .map_err(|e| db_error("starting the relay's claim transaction", e))?;
            if claim.exclusive {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(names.lock_key(claim.service))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| db_error("taking the relay lock", e))?;
                if !got {
                    return Ok(BatchOutcome {
                        standby: true,
                        ..BatchOutcome::default()
                    });
                }
            }
            let rows = sqlx::query(&format!(
                "SELECT seq, topic, meta, payload FROM {} WHERE service = $1 AND published_at IS NULL AND parked_at IS NULL ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                names.outbox
            ))
            .bind(claim.service)
            .bind(claim.limit as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error("claiming pending outbox rows", e))?;
            let rows = rows
                .into_iter()
                .map(|r| {
                    let payload: Vec<u8> = r.get(3);
                    Pending {
                        seq: r.get(0),
                        topic: r.get(1),
                        meta: r.get(2),
                        payload: payload.into(),
                    }
                })
                .collect::<Vec<_>>();
            let mut outcome = BatchOutcome {
                claimed: rows.len(),
                ..BatchOutcome::default()
            };
            if rows.is_empty() {
                return Ok(outcome);
            }
            let report = publish_rows(bus, &rows).await;
            if !report.published.is_empty() {
                let sql = if claim.delete {
                    format!("DELETE FROM {} WHERE seq = ANY($1)", names.outbox)
                } else {
                    format!(
                        "UPDATE {} SET published_at = now() WHERE seq = ANY($1)",
                        names.outbox
                    )
                };
                sqlx::query(&sql)
                    .bind(&report.published)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("marking outbox rows published", e))?;
            }
            for (seq, error) in &report.parked {
                tracing::error!(seq, %error, "parking an outbox row that cannot be published");
                sqlx::query(&format!(
                    "UPDATE {} SET parked_at = now(), last_error = $2 WHERE seq = $1",
                    names.outbox
                ))
                .bind(seq)
                .bind(error)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("parking an outbox row", e))?;
            }
            tx.commit()
                .await
                .map_err(|e| db_error("committing the relay's marks", e))?;
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
                "DELETE FROM {} WHERE published_at IS NOT NULL AND published_at <= now() - make_interval(secs => $1)",
                names.outbox
            ))
            .bind(interval_secs(retention))
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
                "DELETE FROM {} WHERE handled_at <= now() - make_interval(secs => $1)",
                names.inbox
            ))
            .bind(interval_secs(retention))
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
                    COUNT(*) FILTER (WHERE published_at IS NULL AND parked_at IS NULL),
                    COUNT(*) FILTER (WHERE published_at IS NOT NULL),
                    COUNT(*) FILTER (WHERE parked_at IS NOT NULL)
                 FROM {} WHERE $1::text IS NULL OR service = $1",
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
                "SELECT seq, id, event_type, COALESCE(last_error, '') FROM {} WHERE service = $1 AND parked_at IS NOT NULL ORDER BY seq LIMIT $2",
                names.outbox
            ))
            .bind(service)
            .bind(limit as i64)
            .fetch_all(pool)
            .await
            .map_err(|e| db_error("listing parked outbox rows", e))?;
            Ok(rows
                .into_iter()
                .map(|r| crate::ParkedRow {
                    seq: r.get(0),
                    id: r.get(1),
                    event_type: r.get(2),
                    error: r.get(3),
                })
                .collect())
        })
    }

    fn requeue_parked<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: &'a str,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let r = sqlx::query(&format!(
                "UPDATE {} SET parked_at = NULL, last_error = NULL WHERE service = $1 AND parked_at IS NOT NULL",
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
        pool: &'a Pool<Self>,
        names: &'a Names,
    ) -> BoxFuture<'a, Option<BoxStream<'static, ()>>> {
        Box::pin(async move {
            let mut listener = match PgListener::connect_with(pool).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for outbox commits; the relay polls instead");
                    return None;
                }
            };
            if let Err(error) = listener.listen(&names.channel).await {
                tracing::warn!(%error, "cannot LISTEN for outbox commits; the relay polls instead");
                return None;
            }
            // The listener reconnects by itself; errors in between only cost a wake-up.
            let stream: BoxStream<'static, ()> = listener.into_stream().map(|_| ()).boxed();
            Some(stream)
        })
    }
}
