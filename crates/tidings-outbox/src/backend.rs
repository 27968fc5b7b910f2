//! What differs between the databases, behind one sealed trait: the SQL of the schema, of
//! enqueueing, of the relay's claim and of the inbox record.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tidings_core::{Bus, Envelope, Error, ErrorKind, Result};
use uuid::Uuid;

/// A database the outbox and inbox can live in: [`sqlx::Sqlite`] (feature `sqlite`) or
/// [`sqlx::Postgres`] (feature `postgres`). Sealed: the crate implements it for the
/// databases it ships SQL for.
pub trait Backend: sqlx::Database + sealed::Sealed {}

impl<DB: sqlx::Database + sealed::Sealed> Backend for DB {}

/// The schema version this build of the crate writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Table and channel names derived from the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) outbox: String,
    pub(crate) inbox: String,
    pub(crate) schema: String,
    /// PostgreSQL `NOTIFY` channel the relay listens on.
    pub(crate) channel: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Names {
            outbox: format!("{prefix}outbox"),
            inbox: format!("{prefix}inbox"),
            schema: format!("{prefix}schema"),
            channel: format!("{prefix}outbox"),
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

/// The envelope columns of an outbox row, in table order after `seq` and `topic`.
pub(crate) const ENVELOPE_COLUMNS: &str = "id, event_type, version, time_us, content_type, correlation_id, causation_id, traceparent, tracestate, ordering_key, headers, payload";

/// One event to write into the outbox: the envelope as columns, so the relay rebuilds it
/// without parsing text.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) id: Uuid,
    pub(crate) service: String,
    pub(crate) topic: String,
    pub(crate) event_type: String,
    pub(crate) version: i64,
    pub(crate) time_us: i64,
    pub(crate) content_type: String,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) ordering_key: Option<String>,
    /// Custom headers as a JSON array of `[name, value]` pairs; `None` when there are none.
    pub(crate) headers: Option<String>,
    pub(crate) payload: Vec<u8>,
}

impl NewRow {
    pub(crate) fn new(topic: &str, envelope: &Envelope) -> Result<Self> {
        let headers = if envelope.headers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&envelope.headers).map_err(|e| {
                Error::new(
                    ErrorKind::Encode,
                    "encoding the envelope headers for the outbox",
                )
                .with_source(e)
            })?)
        };
        let time_us = envelope
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(NewRow {
            id: envelope.id,
            service: envelope.source.to_string(),
            topic: topic.to_string(),
            event_type: envelope.event_type.to_string(),
            version: i64::from(envelope.version),
            time_us,
            content_type: envelope.content_type.to_string(),
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            traceparent: envelope.traceparent.clone(),
            tracestate: envelope.tracestate.clone(),
            ordering_key: envelope.ordering_key.clone(),
            headers,
            payload: envelope.payload.to_vec(),
        })
    }
}

/// A pending outbox row, as the relay reads it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: i64,
    pub(crate) topic: String,
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) version: i64,
    pub(crate) time_us: i64,
    pub(crate) content_type: String,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) ordering_key: Option<String>,
    pub(crate) headers: Option<String>,
    pub(crate) payload: Bytes,
    /// Why the row cannot be read back (a malformed id in SQLite); it is parked.
    pub(crate) bad: Option<String>,
}

impl Pending {
    /// Rebuild the envelope exactly as it was enqueued (same id, time and headers), with
    /// `source`, the relay's service, which every row it claims was written with.
    pub(crate) fn envelope(&self, source: &Arc<str>) -> Result<Envelope> {
        if let Some(bad) = &self.bad {
            return Err(Error::new(
                ErrorKind::Decode,
                format!("outbox row {}: {bad}", self.seq),
            ));
        }
        let version = u32::try_from(self.version).map_err(|_| {
            Error::new(
                ErrorKind::Decode,
                format!("outbox row {} has version {}", self.seq, self.version),
            )
        })?;
        let content_type: Cow<'static, str> = match self.content_type.as_str() {
            tidings_core::MSGPACK => Cow::Borrowed(tidings_core::MSGPACK),
            tidings_core::JSON => Cow::Borrowed(tidings_core::JSON),
            other => Cow::Owned(other.to_string()),
        };
        let mut env = Envelope::new(
            self.event_type.clone(),
            version,
            source.clone(),
            content_type,
            self.payload.clone(),
        );
        env.id = self.id;
        env.time = UNIX_EPOCH + Duration::from_micros(u64::try_from(self.time_us).unwrap_or(0));
        env.correlation_id = self.correlation_id;
        env.causation_id = self.causation_id;
        env.traceparent = self.traceparent.clone();
        env.tracestate = self.tracestate.clone();
        env.ordering_key = self.ordering_key.clone();
        if let Some(headers) = &self.headers {
            env.headers = serde_json::from_str(headers).map_err(|e| {
                Error::new(
                    ErrorKind::Decode,
                    format!("outbox row {} has unreadable headers", self.seq),
                )
                .with_source(e)
            })?;
        }
        Ok(env)
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

/// Result of publishing a claimed batch.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) published: Vec<i64>,
    pub(crate) parked: Vec<(i64, String)>,
    pub(crate) error: Option<Error>,
}

/// Whether an error means "try the same thing later" rather than "this row is bad".
fn stops_batch(e: &Error) -> bool {
    e.is_retryable() || e.kind() == ErrorKind::Closed
}

/// Publish claimed rows in order, topic run by topic run, one transport call per run.
/// A run refused for a reason that retrying cannot fix is published row by row to find
/// the rows to park; an unreachable broker or a closed bus stops the batch.
pub(crate) async fn publish_rows(bus: &Bus, rows: &[Pending]) -> Report {
    let mut report = Report::default();
    let source: Arc<str> = Arc::from(bus.service());
    let mut start = 0;
    while start < rows.len() {
        let topic = &rows[start].topic;
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| &r.topic == topic)
                .count();
        let run = &rows[start..end];
        let mut envelopes = Vec::with_capacity(run.len());
        let mut seqs = Vec::with_capacity(run.len());
        for row in run {
            match row.envelope(&source) {
                Ok(env) => {
                    envelopes.push(env);
                    seqs.push(row.seq);
                }
                Err(e) => report.parked.push((row.seq, e.to_string())),
            }
        }
        if !envelopes.is_empty() {
            match bus.publish_envelopes_to(topic, envelopes).await {
                Ok(()) => report.published.extend(seqs),
                Err(e) if stops_batch(&e) => {
                    report.error = Some(e);
                    return report;
                }
                Err(e) if seqs.len() == 1 => report.parked.push((seqs[0], e.to_string())),
                Err(_) => {
                    for row in run.iter().filter(|r| seqs.contains(&r.seq)) {
                        let env = match row.envelope(&source) {
                            Ok(env) => env,
                            Err(e) => {
                                report.parked.push((row.seq, e.to_string()));
                                continue;
                            }
                        };
                        match bus.publish_envelopes_to(topic, vec![env]).await {
                            Ok(()) => report.published.push(row.seq),
                            Err(e) if stops_batch(&e) => {
                                report.error = Some(e);
                                return report;
                            }
                            Err(e) => report.parked.push((row.seq, e.to_string())),
                        }
                    }
                }
            }
        }
        start = end;
    }
    report
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

/// Milliseconds since the Unix epoch (SQLite timestamps).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

    /// The SQL of one database. Not nameable outside the crate, so the crate-private
    /// types in its signatures never leak.
    #[allow(private_interfaces)]
    pub trait Sealed: sqlx::Database {
        /// Create or upgrade the tables; safe to run from several processes at once.
        fn migrate<'a>(pool: &'a sqlx::Pool<Self>, names: &'a Names) -> BoxFuture<'a, Result<()>>;

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
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            claim: Claim<'a>,
            bus: &'a Bus,
        ) -> BoxFuture<'a, Result<BatchOutcome>>;

        /// Delete rows published more than `retention` ago; returns how many.
        fn purge_published<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            retention: Duration,
        ) -> BoxFuture<'a, Result<u64>>;

        /// Delete inbox records older than `retention`; returns how many.
        fn purge_inbox<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            retention: Duration,
        ) -> BoxFuture<'a, Result<u64>>;

        /// Counts of (pending, published, parked) rows of a service (all when `None`).
        fn counts<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            service: Option<&'a str>,
        ) -> BoxFuture<'a, Result<(u64, u64, u64)>>;

        /// Parked rows of a service, oldest first.
        fn parked<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            service: &'a str,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<crate::ParkedRow>>>;

        /// Make parked rows of a service pending again; returns how many.
        fn requeue_parked<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
            service: &'a str,
        ) -> BoxFuture<'a, Result<u64>>;

        /// A stream that yields when rows were committed (PostgreSQL `LISTEN`), if the
        /// database has one.
        fn commits<'a>(
            pool: &'a sqlx::Pool<Self>,
            names: &'a Names,
        ) -> BoxFuture<'a, Option<BoxStream<'static, ()>>>;
    }
}
