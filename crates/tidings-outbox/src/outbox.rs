//! The outbox: integration events written in the application's own transaction.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tidings_core::domain::Converters;
use tidings_core::{Bus, Envelope, Error, PublishOptions, Publishable, Result};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::backend::{Backend, Names};
use crate::inbox::Inbox;
use crate::row::NewRow;

/// The default prefix of the outbox tables: `tidings_outbox`, `tidings_inbox`,
/// `tidings_schema`.
pub const DEFAULT_TABLE_PREFIX: &str = "tidings_";

/// A transactional outbox (and its inbox) in one database.
///
/// Cheap to clone; clones share the pool and the relay's wake-up signal. Create it with
/// [`Outbox::new`] (or [`Outbox::sqlite`], [`Outbox::postgres`]), which creates the tables
/// on first use; write events with [`enqueue`](Outbox::enqueue) in your own transaction;
/// build the bus with [`.with_relay(outbox, config)`](crate::BusBuilderExt::with_relay) to
/// publish them.
pub struct Outbox<DB: Backend> {
    inner: Arc<Inner<DB>>,
}

struct Inner<DB: Backend> {
    pool: sqlx::Pool<DB>,
    names: Names,
    wake: Notify,
}

impl<DB: Backend> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox {
            inner: self.inner.clone(),
        }
    }
}

impl<DB: Backend> fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("database", &DB::NAME)
            .field("outbox_table", &self.inner.names.outbox)
            .field("inbox_table", &self.inner.names.inbox)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "sqlite")]
impl Outbox<sqlx::Sqlite> {
    /// An outbox in a SQLite database, with the default table prefix; creates the tables
    /// if needed. Shorthand for `Outbox::new(pool)`.
    pub async fn sqlite(pool: sqlx::SqlitePool) -> Result<Self> {
        Self::new(pool).await
    }
}

#[cfg(feature = "postgres")]
impl Outbox<sqlx::Postgres> {
    /// An outbox in a PostgreSQL database, with the default table prefix; creates the
    /// tables if needed. Shorthand for `Outbox::new(pool)`.
    pub async fn postgres(pool: sqlx::PgPool) -> Result<Self> {
        Self::new(pool).await
    }
}

impl<DB: Backend> Outbox<DB> {
    /// An outbox in the database of `pool`, with the default table prefix; creates the
    /// tables (or checks their version) before returning.
    pub async fn new(pool: sqlx::Pool<DB>) -> Result<Self> {
        Self::builder(pool).build().await
    }

    /// Configure an outbox (table prefix) before creating it.
    pub fn builder(pool: sqlx::Pool<DB>) -> OutboxBuilder<DB> {
        OutboxBuilder {
            pool,
            prefix: DEFAULT_TABLE_PREFIX.to_string(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.inner.pool
    }

    /// The name of the outbox table.
    pub fn table(&self) -> &str {
        &self.inner.names.outbox
    }

    /// The name of the inbox table.
    pub fn inbox_table(&self) -> &str {
        &self.inner.names.inbox
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Write `event` into the outbox inside the caller's transaction, as the envelope
    /// `bus` would publish (its service as the source, its codec), and return the
    /// envelope id. Nothing is published if the transaction rolls back; after it commits,
    /// the relay of the same service ([`with_relay`](crate::BusBuilderExt::with_relay))
    /// publishes it.
    ///
    /// `conn` is usually `&mut tx` for a `sqlx::Transaction`. Fails with
    /// `ErrorKind::NotDeclared` if the bus does not publish the event's topic.
    pub async fn enqueue<P: Publishable>(
        &self,
        conn: &mut DB::Connection,
        bus: &Bus,
        event: P,
    ) -> Result<Uuid> {
        self.enqueue_with(conn, bus, event, PublishOptions::default())
            .await
    }

    /// [`enqueue`](Self::enqueue) with options (ordering key, headers, flow ids; in a
    /// handler, `cx.follow_up()`).
    pub async fn enqueue_with<P: Publishable>(
        &self,
        conn: &mut DB::Connection,
        bus: &Bus,
        event: P,
        options: PublishOptions,
    ) -> Result<Uuid> {
        let topic = bus.topic_name::<P::Topic>()?;
        let envelope = bus.envelope(&event, options)?;
        let id = envelope.id;
        DB::insert(
            conn,
            &self.inner.names,
            vec![NewRow::new(topic, &envelope)?],
        )
        .await?;
        self.wake();
        Ok(id)
    }

    /// Write the integration events `converters` make of the domain event `event` inside
    /// the caller's transaction, as `bus` would publish them, and return their ids: the
    /// domain change and the events other contexts get commit together or not at all. A
    /// converter returning `None` writes nothing. `options` carry the flow ids (in a
    /// handler, `cx.follow_up()`).
    ///
    ///
    /// The Library example's persistent Lending (`examples/library/persistent.rs`) does it
    /// for `lending.book-borrowed` and `lending.book-returned`.
    pub async fn enqueue_converted<E: 'static>(
        &self,
        conn: &mut DB::Connection,
        bus: &Bus,
        converters: &Converters<E>,
        event: &E,
        options: PublishOptions,
    ) -> Result<Vec<Uuid>> {
        let converted = converters.envelopes(bus, event, &options)?;
        let ids = converted.iter().map(|(_, e)| e.id).collect();
        let rows = converted
            .iter()
            .map(|(topic, envelope)| NewRow::new(topic, envelope))
            .collect::<Result<Vec<_>>>()?;
        if !rows.is_empty() {
            DB::insert(conn, &self.inner.names, rows).await?;
            self.wake();
        }
        Ok(ids)
    }

    /// Write several events of one topic, in order; returns their ids.
    pub async fn enqueue_batch<P, I>(
        &self,
        conn: &mut DB::Connection,
        bus: &Bus,
        events: I,
    ) -> Result<Vec<Uuid>>
    where
        P: Publishable,
        I: IntoIterator<Item = P>,
    {
        let topic = bus.topic_name::<P::Topic>()?;
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for event in events {
            let envelope = bus.envelope(&event, PublishOptions::default())?;
            ids.push(envelope.id);
            rows.push(NewRow::new(topic, &envelope)?);
        }
        if !rows.is_empty() {
            DB::insert(conn, &self.inner.names, rows).await?;
            self.wake();
        }
        Ok(ids)
    }

    /// Write envelopes built elsewhere, for the broker topic `topic` (a name from
    /// `Bus::topic_name`). They are published by the relay of the service named in their
    /// `source`.
    pub async fn enqueue_envelopes(
        &self,
        conn: &mut DB::Connection,
        topic: &str,
        envelopes: &[Envelope],
    ) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::config("enqueue_envelopes needs a broker topic name"));
        }
        let rows = envelopes
            .iter()
            .map(|e| NewRow::new(topic, e))
            .collect::<Result<Vec<_>>>()?;
        if !rows.is_empty() {
            DB::insert(conn, &self.inner.names, rows).await?;
            self.wake();
        }
        Ok(())
    }

    /// Tell the relays in this process that rows may have been committed. `enqueue` does
    /// it already; the relay then looks again for a short while, so calling this after
    /// `commit` only matters for rows written by other means.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub(crate) fn wake_signal(&self) -> &Notify {
        &self.inner.wake
    }

    /// The idempotent inbox of this database, which writes the events its handlers
    /// publish into this outbox.
    pub fn inbox(&self) -> Inbox<DB> {
        Inbox::new(self.clone())
    }

    /// How many rows of `service` (every service when `None`) are pending, published (kept
    /// for the retention period) and parked, and how long the oldest pending row has
    /// waited: the relay's backlog, for a health endpoint or an alert.
    ///
    /// ```no_run
    /// # async fn probe(outbox: tidings_outbox::SqliteOutbox) -> tidings_core::Result<()> {
    /// let counts = outbox.counts(Some("lending")).await?;
    /// let stuck = counts.oldest_pending.is_some_and(|age| age.as_secs() > 60);
    /// # Ok(()) }
    /// ```
    pub async fn counts(&self, service: Option<&str>) -> Result<OutboxCounts> {
        DB::counts(&self.inner.pool, &self.inner.names, service).await
    }

    /// Rows of `service` the relay parked because the transport refused them for a reason
    /// retrying cannot fix (too large, topic unknown), oldest first.
    pub async fn parked(&self, service: &str, limit: usize) -> Result<Vec<ParkedRow>> {
        DB::parked(&self.inner.pool, &self.inner.names, service, limit).await
    }

    /// Make the parked rows of `service` pending again (after fixing what refused them);
    /// returns how many.
    pub async fn requeue_parked(&self, service: &str) -> Result<u64> {
        let n = DB::requeue_parked(&self.inner.pool, &self.inner.names, service).await?;
        self.wake();
        Ok(n)
    }

    /// Delete rows published more than `retention` ago (the relay does this on its own
    /// schedule); returns how many.
    pub async fn purge_published(&self, retention: Duration) -> Result<u64> {
        DB::purge_published(&self.inner.pool, &self.inner.names, retention).await
    }
}

/// Row counts of an outbox, from [`Outbox::counts`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Committed and not yet published.
    pub pending: u64,
    /// Published, kept until the retention period has passed.
    pub published: u64,
    /// Refused by the transport for good; see [`Outbox::parked`].
    pub parked: u64,
    /// How long the oldest pending row has waited since it was enqueued; `None` when
    /// nothing is pending. Growing while `pending` stays up means the relay is stuck (broker
    /// down, relay not running).
    pub oldest_pending: Option<Duration>,
}

/// A row the relay could not publish, from [`Outbox::parked`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    /// Its position in the outbox.
    pub seq: i64,
    /// The envelope id.
    pub id: Uuid,
    /// The event's wire name.
    pub event_type: String,
    /// Why the transport refused it.
    pub error: String,
}

/// Builds an [`Outbox`]: `Outbox::builder(pool).table_prefix("library_").build().await`.
pub struct OutboxBuilder<DB: Backend> {
    pool: sqlx::Pool<DB>,
    prefix: String,
}

impl<DB: Backend> fmt::Debug for OutboxBuilder<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxBuilder")
            .field("database", &DB::NAME)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<DB: Backend> OutboxBuilder<DB> {
    /// Prefix of the table names (default `tidings_`): ASCII letters, digits and `_`,
    /// starting with a letter, at most 40 characters.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Create the tables if needed (safe from several processes at once) and return the
    /// outbox. Fails with `ErrorKind::Config` for a bad prefix or tables written by a newer
    /// version of this crate, and with `Unavailable` when the database cannot be reached.
    pub async fn build(self) -> Result<Outbox<DB>> {
        let p = &self.prefix;
        let valid = !p.is_empty()
            && p.len() <= 40
            && p.as_bytes()[0].is_ascii_alphabetic()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(Error::config(format!(
                "outbox table prefix {p:?} must start with a letter and hold only ASCII letters, digits and '_' (at most 40)"
            )));
        }
        let names = Names::new(p, &DB::DIALECT);
        DB::migrate(&self.pool, &names).await?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                pool: self.pool,
                names,
                wake: Notify::new(),
            }),
        })
    }
}
