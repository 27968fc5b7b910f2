//! PostgreSQL: relays claim rows with `FOR UPDATE SKIP LOCKED` inside a claim transaction
//! (held while the batch is published), exclusive relays also take a transaction-scoped
//! advisory lock so batches are published one after the other in sequence order.
//! `NOTIFY` on enqueue wakes the relays when the transaction commits.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use sqlx::postgres::{PgListener, PgQueryResult};
use sqlx::{Pool, Postgres};
use tidings_core::Result;
use uuid::Uuid;

use crate::backend::{sealed::Driver, Claim, Names, Scope};
use crate::sql::Dialect;

/// The insert, plus a `NOTIFY` on the channel `$8` that PostgreSQL delivers on commit only.
fn notify_insert(insert: &str) -> String {
    format!("WITH ins AS ({insert} RETURNING seq) SELECT pg_notify($8, '') FROM ins")
}

#[allow(private_interfaces)]
impl Driver for Postgres {
    const DIALECT: Dialect = Dialect {
        placeholder: '$',
        seq_column: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        integer: "BIGINT",
        uuid: "UUID",
        bytes: "BYTEA",
        timestamp: "TIMESTAMPTZ",
        timestamp_default: " DEFAULT now()",
        now: "now()",
        age: "make_interval(secs => $1)",
        oldest_age_ms: "CAST(EXTRACT(EPOCH FROM (now() - MIN(created_at))) * 1000 AS BIGINT)",
        seq_in: "= ANY($1)",
        claim_lock: " FOR UPDATE SKIP LOCKED",
        notify_insert: Some(notify_insert),
    };

    type Id = Uuid;
    type Seqs = Vec<i64>;
    /// Seconds.
    type Age = f64;

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn parse_id(stored: Uuid) -> Result<Uuid> {
        Ok(stored)
    }

    fn seqs(seqs: &[i64]) -> Vec<i64> {
        seqs.to_vec()
    }

    fn age(age: Duration) -> f64 {
        age.as_secs_f64()
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn begin_migration<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<sqlx::Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in PostgreSQL; the
            // advisory lock makes migrating processes take turns.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(names.lock_key("migrate"))
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        })
    }

    fn begin_claim<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        claim: &Claim<'a>,
    ) -> BoxFuture<'a, Result<Option<Scope<'a, Self>>, sqlx::Error>> {
        let (exclusive, service) = (claim.exclusive, claim.service);
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            if exclusive {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(names.lock_key(service))
                    .fetch_one(&mut *tx)
                    .await?;
                if !got {
                    return Ok(None);
                }
            }
            Ok(Some(Scope::Transaction(tx)))
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
