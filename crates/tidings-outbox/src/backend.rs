//! The databases behind one sealed trait. The operations (migrate, enqueue, claim and
//! mark, park, purge, count, inbox record) are written once, generically over sqlx, with
//! the statements of [`sql`](crate::sql); a database contributes only a [`Driver`]: its
//! SQL [`Dialect`], how it stores ids, lists and ages, and the locks and signals that
//! really differ (`sqlite.rs`, `postgres.rs`).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use tidings_core::{Bus, Error, ErrorKind, Result};
use uuid::Uuid;

use crate::relay::publish_rows;
use crate::row::{NewRow, Pending};
use crate::sql::{Dialect, Statements};

/// A database the outbox and inbox can live in: [`sqlx::Sqlite`] (feature `sqlite`) or
/// [`sqlx::Postgres`] (feature `postgres`). Sealed: the crate implements it for the
/// databases it ships SQL for.
pub trait Backend: sqlx::Database + sealed::Sealed {}

impl<DB: sqlx::Database + sealed::Sealed> Backend for DB {}

/// The schema version this build of the crate writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Table and channel names derived from the configured prefix, and the statements on
/// those tables.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) outbox: String,
    pub(crate) inbox: String,
    pub(crate) schema: String,
    /// PostgreSQL `NOTIFY` channel the relay listens on.
    pub(crate) channel: String,
    /// Every statement, in the database's dialect.
    pub(crate) sql: Statements,
}

impl Names {
    pub(crate) fn new(prefix: &str, dialect: &Dialect) -> Self {
        let outbox = format!("{prefix}outbox");
        let inbox = format!("{prefix}inbox");
        let schema = format!("{prefix}schema");
        Names {
            sql: Statements::new(&outbox, &inbox, &schema, dialect),
            channel: outbox.clone(),
            outbox,
            inbox,
            schema,
        }
    }

    /// A stable 64-bit key for PostgreSQL advisory locks (FNV-1a, the same in every build,
    /// so relays of different versions agree).
    pub(crate) fn lock_key(&self, what: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.outbox.bytes().chain([0]).chain(what.bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash as i64
    }
}

/// What one relay batch did.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// Rows claimed.
    pub(crate) claimed: usize,
    /// Rows published and marked (or deleted).
    pub(crate) published: usize,
    /// Rows parked because they can never be published.
    pub(crate) parked: usize,
    /// Another relay holds the exclusive claim; nothing was read.
    pub(crate) standby: bool,
    /// The error that stopped the batch early (the broker is down, the bus closed).
    pub(crate) error: Option<Error>,
}

/// The relay's settings as the backends need them.
#[derive(Debug, Clone)]
pub(crate) struct Claim<'a> {
    pub(crate) service: &'a str,
    pub(crate) limit: usize,
    pub(crate) exclusive: bool,
    /// Delete published rows at once instead of marking them.
    pub(crate) delete: bool,
}

/// Where the relay claims, marks and parks one batch: straight on the pool, or in a
/// transaction held while the batch is published (committed at the end, rolled back when
/// dropped).
pub(crate) enum Scope<'a, DB: Database> {
    Pool(&'a Pool<DB>),
    Transaction(sqlx::Transaction<'static, DB>),
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

impl<DB> Scope<'_, DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    async fn fetch_all(&mut self, query: Query<'_, DB>) -> Result<Vec<DB::Row>, sqlx::Error> {
        match self {
            Scope::Pool(pool) => query.fetch_all(*pool).await,
            Scope::Transaction(tx) => query.fetch_all(&mut **tx).await,
        }
    }

    async fn execute(&mut self, query: Query<'_, DB>) -> Result<(), sqlx::Error> {
        match self {
            Scope::Pool(pool) => query.execute(*pool).await.map(drop),
            Scope::Transaction(tx) => query.execute(&mut **tx).await.map(drop),
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Scope::Pool(_) => Ok(()),
            Scope::Transaction(tx) => tx.commit().await,
        }
    }
}

/// Map a database error into the tidings error: connection trouble is `Unavailable`
/// (retryable), the rest `Backend`.
pub(crate) fn db_error(context: &str, e: sqlx::Error) -> Error {
    let kind = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::PoolClosed => ErrorKind::Closed,
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some("5") || db.code().as_deref() == Some("517") =>
        {
            // SQLITE_BUSY / SQLITE_BUSY_SNAPSHOT: another writer held the lock too long.
            ErrorKind::Timeout
        }
        _ => ErrorKind::Backend,
    };
    Error::new(kind, context.to_string()).with_source(e)
}

/// Refuse tables written by a newer version of the crate.
pub(crate) fn check_version(found: Option<i64>, names: &Names) -> Result<()> {
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(Error::config(format!(
            "the outbox tables (`{}`) have schema version {v}, newer than version {SCHEMA_VERSION} this tidings-outbox understands: upgrade tidings-outbox",
            names.schema
        ))),
        _ => Ok(()),
    }
}

pub(crate) mod sealed {
    use super::*;

    /// What really differs between two databases, beyond the SQL [`Dialect`]: how values
    /// without a common type are stored, the locks, and the commit signal. Implemented in
    /// `sqlite.rs` and `postgres.rs`.
    #[allow(private_interfaces)]
    pub trait Driver: sqlx::Database {
        /// The SQL fragments of this database.
        const DIALECT: Dialect;

        /// An envelope id as stored in an `id` or `event_id` column.
        type Id: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send;
        /// A list of sequence numbers, bound as one parameter.
        type Seqs: for<'q> Encode<'q, Self> + Type<Self> + Send;
        /// An age, bound as one parameter (see `Dialect::age`).
        type Age: for<'q> Encode<'q, Self> + Type<Self> + Send;

        /// `id` as stored.
        fn id(id: Uuid) -> Self::Id;
        /// A stored id back; fails on a value that is no UUID.
        fn parse_id(stored: Self::Id) -> Result<Uuid>;
        /// `seqs` as one parameter.
        fn seqs(seqs: &[i64]) -> Self::Seqs;
        /// `age` as one parameter.
        fn age(age: Duration) -> Self::Age;
        /// How many rows a statement changed.
        fn rows_affected(result: &Self::QueryResult) -> u64;

        /// Begin the transaction that creates the tables, locked so that processes
        /// migrating at the same time take turns.
        fn begin_migration<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
        ) -> BoxFuture<'a, Result<sqlx::Transaction<'static, Self>, sqlx::Error>>;

        /// Where a relay claims its next batch, so that no two relays publish one row at
        /// the same time; `None` when another relay holds the exclusive claim.
        fn begin_claim<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            claim: &Claim<'a>,
        ) -> BoxFuture<'a, Result<Option<Scope<'a, Self>>, sqlx::Error>>;

        /// A stream that yields when rows were committed (PostgreSQL `LISTEN`), if the
        /// database has one.
        fn commits<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
        ) -> BoxFuture<'a, Option<BoxStream<'static, ()>>>;
    }

    /// The operations of the outbox and inbox on one database, written once for every
    /// [`Driver`]. Not nameable outside the crate, so the crate-private types in its
    /// signatures never leak.
    #[allow(private_interfaces)]
    pub trait Sealed: Driver {
        /// Create or upgrade the tables; safe to run from several processes at once.
        fn migrate<'a>(pool: &'a Pool<Self>, names: &'a Names) -> BoxFuture<'a, Result<()>>;

        /// Insert rows in the caller's transaction (and, on PostgreSQL, queue a `NOTIFY`
        /// delivered on commit).
        fn insert<'a>(
            conn: &'a mut Self::Connection,
            names: &'a Names,
            rows: Vec<NewRow>,
        ) -> BoxFuture<'a, Result<()>>;

        /// Record `(scope, id)` in the inbox in the caller's transaction; false when it was
        /// already there (the event was handled before).
        fn record<'a>(
            conn: &'a mut Self::Connection,
            names: &'a Names,
            scope: &'a str,
            id: Uuid,
            event_type: &'a str,
        ) -> BoxFuture<'a, Result<bool>>;

        /// Claim up to `claim.limit` pending rows of a service in order, publish them with
        /// `bus`, and mark them, so that no two relays publish one row at the same time.
        fn relay_batch<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            claim: Claim<'a>,
            bus: &'a Bus,
        ) -> BoxFuture<'a, Result<BatchOutcome>>;

        /// Delete rows published more than `retention` ago; returns how many.
        fn purge_published<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            retention: Duration,
        ) -> BoxFuture<'a, Result<u64>>;

        /// Delete inbox records older than `retention`; returns how many.
        fn purge_inbox<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            retention: Duration,
        ) -> BoxFuture<'a, Result<u64>>;

        /// Counts of (pending, published, parked) rows of a service (all when `None`).
        fn counts<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            service: Option<&'a str>,
        ) -> BoxFuture<'a, Result<crate::OutboxCounts>>;

        /// Parked rows of a service, oldest first.
        fn parked<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            service: &'a str,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<crate::ParkedRow>>>;

        /// Make parked rows of a service pending again; returns how many.
        fn requeue_parked<'a>(
            pool: &'a Pool<Self>,
            names: &'a Names,
            service: &'a str,
        ) -> BoxFuture<'a, Result<u64>>;
    }
}

use sealed::{Driver, Sealed};

#[allow(private_interfaces)]
impl<DB> Sealed for DB
where
    DB: Driver,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'q, 'r> i64: Encode<'q, DB> + Decode<'r, DB> + Type<DB>,
    for<'q, 'r> Vec<u8>: Encode<'q, DB> + Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn migrate<'a>(pool: &'a Pool<Self>, names: &'a Names) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ctx = &format!("creating the outbox tables in {}", DB::NAME);
            let mut tx = DB::begin_migration(pool, names)
                .await
                .map_err(|e| db_error(ctx, e))?;
            for stmt in &names.sql.schema {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(ctx, e))?;
            }
            let found = sqlx::query(&names.sql.schema_version)
                .fetch_optional(&mut *tx)
                .await
                .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose())
                .map_err(|e| db_error(ctx, e))?;
            check_version(found, names)?;
            if found.is_none() {
                sqlx::query(&names.sql.set_schema_version)
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(ctx, e))?;
            }
            tx.commit().await.map_err(|e| db_error(ctx, e))
        })
    }

    fn insert<'a>(
        conn: &'a mut DB::Connection,
        names: &'a Names,
        rows: Vec<NewRow>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let count = rows.len();
            for (i, row) in rows.into_iter().enumerate() {
                // The last row also queues the commit signal, if the database has one.
                let notify = names.sql.insert_notify.as_ref().filter(|_| i + 1 == count);
                let mut q = sqlx::query(notify.unwrap_or(&names.sql.insert))
                    .bind(row.service)
                    .bind(row.topic)
                    .bind(DB::id(row.id))
                    .bind(row.event_type)
                    .bind(row.version)
                    .bind(row.meta)
                    .bind(row.payload);
                if notify.is_some() {
                    q = q.bind(names.channel.as_str());
                }
                q.execute(&mut *conn)
                    .await
                    .map_err(|e| db_error("writing an event into the outbox", e))?;
            }
            Ok(())
        })
    }

    fn record<'a>(
        conn: &'a mut DB::Connection,
        names: &'a Names,
        scope: &'a str,
        id: Uuid,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            // On PostgreSQL a concurrent delivery of the same event waits here on the
            // unique key until the first one commits (then finds the record) or rolls
            // back (then records it).
            let done = sqlx::query(&names.sql.record)
                .bind(scope)
                .bind(DB::id(id))
                .bind(event_type)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("recording the event in the inbox", e))?;
            Ok(DB::rows_affected(&done) == 1)
        })
    }

    fn relay_batch<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        claim: Claim<'a>,
        bus: &'a Bus,
    ) -> BoxFuture<'a, Result<BatchOutcome>> {
        Box::pin(async move {
            let Some(mut scope) = DB::begin_claim(pool, names, &claim)
                .await
                .map_err(|e| db_error("starting the relay's claim", e))?
            else {
                return Ok(BatchOutcome {
                    standby: true,
                    ..BatchOutcome::default()
                });
            };
            let rows = scope
                .fetch_all(
                    sqlx::query(&names.sql.claim)
                        .bind(claim.service)
                        .bind(claim.limit as i64),
                )
                .await
                .map_err(|e| db_error("claiming pending outbox rows", e))?;
            let rows = rows
                .into_iter()
                .map(|r| Pending {
                    seq: r.get(0),
                    topic: r.get(1),
                    meta: r.get(2),
                    payload: Bytes::from(r.get::<Vec<u8>, _>(3)),
                })
                .collect::<Vec<_>>();
            let mut outcome = BatchOutcome {
                claimed: rows.len(),
                ..BatchOutcome::default()
            };
            if rows.is_empty() {
                // End the claim now: a dropped transaction is rolled back only when its
                // connection is next used, and until then it keeps the exclusive lock, so
                // the next look (on another pooled connection) would stand by for a whole
                // poll interval.
                scope
                    .commit()
                    .await
                    .map_err(|e| db_error("ending the relay's empty claim", e))?;
                return Ok(outcome);
            }
            // A crash between publishing and marking publishes the rows again (the inbox
            // absorbs the duplicates).
            let report = publish_rows(bus, &rows).await;
            if !report.published.is_empty() {
                let sql = if claim.delete {
                    &names.sql.delete_published
                } else {
                    &names.sql.mark_published
                };
                scope
                    .execute(sqlx::query(sql).bind(DB::seqs(&report.published)))
                    .await
                    .map_err(|e| db_error("marking outbox rows published", e))?;
            }
            for (seq, error) in &report.parked {
                tracing::error!(seq, %error, "parking an outbox row that cannot be published");
                scope
                    .execute(sqlx::query(&names.sql.park).bind(*seq).bind(error.as_str()))
                    .await
                    .map_err(|e| db_error("parking an outbox row", e))?;
            }
            scope
                .commit()
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
            let r = sqlx::query(&names.sql.purge_published)
                .bind(DB::age(retention))
                .execute(pool)
                .await
                .map_err(|e| db_error("deleting published outbox rows", e))?;
            Ok(DB::rows_affected(&r))
        })
    }

    fn purge_inbox<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let r = sqlx::query(&names.sql.purge_inbox)
                .bind(DB::age(retention))
                .execute(pool)
                .await
                .map_err(|e| db_error("deleting old inbox records", e))?;
            Ok(DB::rows_affected(&r))
        })
    }

    fn counts<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<crate::OutboxCounts>> {
        Box::pin(async move {
            let row = sqlx::query(&names.sql.counts)
                .bind(service)
                .fetch_one(pool)
                .await
                .map_err(|e| db_error("counting outbox rows", e))?;
            let get = |i: usize| row.get::<i64, _>(i) as u64;
            let oldest = row.get::<Option<i64>, _>(3);
            Ok(crate::OutboxCounts {
                pending: get(0),
                published: get(1),
                parked: get(2),
                oldest_pending: oldest.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            })
        })
    }

    fn parked<'a>(
        pool: &'a Pool<Self>,
        names: &'a Names,
        service: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<crate::ParkedRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(&names.sql.parked)
                .bind(service)
                .bind(limit as i64)
                .fetch_all(pool)
                .await
                .map_err(|e| db_error("listing parked outbox rows", e))?;
            rows.into_iter()
                .map(|r| {
                    Ok(crate::ParkedRow {
                        seq: r.get(0),
                        id: DB::parse_id(r.get(1))?,
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
            let r = sqlx::query(&names.sql.requeue_parked)
                .bind(service)
                .execute(pool)
                .await
                .map_err(|e| db_error("requeueing parked outbox rows", e))?;
            Ok(DB::rows_affected(&r))
        })
    }
}
