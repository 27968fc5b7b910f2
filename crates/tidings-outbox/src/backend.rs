//! What differs between the databases, behind one sealed trait: the SQL of the schema, of
//! enqueueing, of the relay's claim and of the inbox record.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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

/// The columns an outbox row is written with, after `service` and `topic`: `id`,
/// `event_type` and `version` for people and tools reading the table, `meta` (the rest of
/// the envelope's attributes, MessagePack) and `payload` for the relay. The relay reads
/// only `seq, topic, meta, payload`: with sqlx's SQLite driver every column read costs
/// about a microsecond per row, so one compact column beats ten typed ones.
pub(crate) const WRITE_COLUMNS: &str = "id, event_type, version, meta, payload";

/// The envelope attributes an outbox row carries besides its payload.
#[derive(Debug, Serialize, Deserialize)]
struct Meta<'a> {
    id: Uuid,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    version: u32,
    time_us: i64,
    #[serde(borrow)]
    content_type: Cow<'a, str>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tracestate: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ordering_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// One event to write into the outbox.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) id: Uuid,
    pub(crate) service: String,
    pub(crate) topic: String,
    pub(crate) event_type: String,
    pub(crate) version: i64,
    pub(crate) meta: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

impl NewRow {
    pub(crate) fn new(topic: &str, envelope: &Envelope) -> Result<Self> {
        let time_us = envelope
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let meta = Meta {
            id: envelope.id,
            event_type: Cow::Borrowed(&envelope.event_type),
            version: envelope.version,
            time_us,
            content_type: Cow::Borrowed(&envelope.content_type),
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            traceparent: envelope.traceparent.as_deref().map(Cow::Borrowed),
            tracestate: envelope.tracestate.as_deref().map(Cow::Borrowed),
            ordering_key: envelope.ordering_key.as_deref().map(Cow::Borrowed),
            headers: envelope
                .headers
                .iter()
                .map(|(n, v)| (Cow::Borrowed(n.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
        };
        let meta = rmp_serde::to_vec(&meta).map_err(|e| {
            Error::new(
                ErrorKind::Encode,
                "encoding the envelope attributes for the outbox",
            )
            .with_source(e)
        })?;
        Ok(NewRow {
            id: envelope.id,
            service: envelope.source.to_string(),
            topic: topic.to_string(),
            event_type: envelope.event_type.to_string(),
            version: i64::from(envelope.version),
            meta,
            payload: envelope.payload.to_vec(),
        })
    }
}

/// A pending outbox row, as the relay reads it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: i64,
    pub(crate) topic: String,
    pub(crate) meta: Vec<u8>,
    pub(crate) payload: Bytes,
}

impl Pending {
    /// Rebuild the envelope exactly as it was enqueued (same id, time and headers), with
    /// `source`, the relay's service, which every row it claims was written with.
    pub(crate) fn envelope(&self, source: &Arc<str>) -> Result<Envelope> {
        let meta: Meta<'_> = rmp_serde::from_slice(&self.meta).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("outbox row {} has unreadable attributes", self.seq),
            )
            .with_source(e)
        })?;
        let content_type: Cow<'static, str> = match meta.content_type.as_ref() {
            tidings_core::MSGPACK => Cow::Borrowed(tidings_core::MSGPACK),
            tidings_core::JSON => Cow::Borrowed(tidings_core::JSON),
            other => Cow::Owned(other.to_string()),
        };
        let mut env = Envelope::new(
            meta.event_type.into_owned(),
            meta.version,
            source.clone(),
            content_type,
            self.payload.clone(),
        );
        env.id = meta.id;
        env.time = UNIX_EPOCH + Duration::from_micros(u64::try_from(meta.time_us).unwrap_or(0));
        env.correlation_id = meta.correlation_id;
        env.causation_id = meta.causation_id;
        env.traceparent = meta.traceparent.map(Cow::into_owned);
        env.tracestate = meta.tracestate.map(Cow::into_owned);
        env.ordering_key = meta.ordering_key.map(Cow::into_owned);
        env.headers = meta
            .headers
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_gives_back_the_envelope_it_was_written_from() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            3,
            "lending",
            tidings_core::JSON,
            &b"{\"a\":1}"[..],
        );
        env.correlation_id = Some(Uuid::new_v4());
        env.causation_id = Some(Uuid::new_v4());
        env.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        env.tracestate = Some("vendor=1".into());
        env.ordering_key = Some("book-1".into());
        env.set_header("tenant", "north");
        env.set_header("empty", "");
        let row = NewRow::new("ns.lending", &env).unwrap();
        assert_eq!(
            (row.id, row.event_type.as_str(), row.version),
            (env.id, "lending.book-borrowed", 3)
        );
        let pending = Pending {
            seq: 1,
            topic: row.topic,
            meta: row.meta,
            payload: row.payload.into(),
        };
        let back = pending.envelope(&Arc::from("lending")).unwrap();
        // Time is kept to the microsecond.
        let drift = env.time.duration_since(back.time).unwrap_or_default();
        assert!(drift < Duration::from_micros(1));
        let mut back = back;
        back.time = env.time;
        assert_eq!(back, env);
    }

    #[test]
    fn an_unreadable_row_is_a_decode_error_naming_it() {
        let pending = Pending {
            seq: 42,
            topic: "t".into(),
            meta: vec![0xc1],
            payload: Bytes::new(),
        };
        let err = pending.envelope(&Arc::from("s")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.message().contains("row 42"), "{err}");
    }
}
