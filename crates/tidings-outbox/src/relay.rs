//! The relay: publishes committed outbox rows through a bus, in order and in batches. It
//! runs with a bus ([`BusBuilderExt::with_relay`]) or once ([`Outbox::relay_pending`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tidings_core::{Bus, BusBuilder, Companion, Error, ErrorKind, Result, Shutdown};

use crate::backend::{Backend, Claim};
use crate::outbox::Outbox;
use crate::row::Pending;

/// After a wake-up that found nothing (the enqueueing transaction had not committed yet),
/// look again after 1, 2, 4 … 128 ms before falling back to the poll interval.
const EAGER_LOOKS: u32 = 8;

/// Rows a batch by default: see [`RelayConfig::batch_size`].
const DEFAULT_BATCH_SIZE: usize = 4096;

/// How the outbox relay runs: given to [`with_relay`](BusBuilderExt::with_relay) or
/// [`Outbox::relay_pending`].
///
/// ```
/// use std::time::Duration;
/// use tidings_outbox::RelayConfig;
/// let config = RelayConfig::default()
///     .batch_size(500)
///     .poll_interval(Duration::from_millis(250))
///     .retention(Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone)]
pub struct RelayConfig {
    batch_size: usize,
    poll_interval: Duration,
    retention: Duration,
    inbox_retention: Option<Duration>,
    cleanup_interval: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    exclusive: bool,
    listen: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: DEFAULT_BATCH_SIZE,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            inbox_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            cleanup_interval: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            exclusive: true,
            listen: true,
        }
    }
}

impl RelayConfig {
    /// Rows claimed and published per transport call (default 4096, four times the
    /// RabbitMQ transport's default window of unconfirmed messages).
    ///
    /// The relay reads a batch, publishes it and waits for every confirm, then marks it
    /// and reads the next: the broker sits idle for one confirm round trip and the
    /// database work between two batches, so bigger batches move a backlog faster
    /// (relay/raw lapin with confirms pipelined on RabbitMQ, SQLite and PostgreSQL, in
    /// runs of `benches/relay` on a shared 2-core machine: 256 a batch 0.70 and 0.52,
    /// 1024 0.77 and 0.62, 4096 0.79–0.94 and 0.76–0.93). What a bigger batch costs:
    ///
    /// - memory: the relay holds one batch at a time, never more, whatever the backlog
    ///   (a peak of about 4.3 MiB above idle at 4096 small events, 1.7 MiB at 1024, for a
    ///   backlog of 10 000 or 100 000 rows alike);
    /// - latency under load: a row committed while a batch is being published waits for
    ///   that batch (at 10 000 events/s, up to about 0.4 s for 4096); an idle relay
    ///   publishes a single row at once whatever the batch size;
    /// - duplicates: a crash or a broker failure between publishing and marking publishes
    ///   up to one batch again (the inbox absorbs them);
    /// - PostgreSQL: the claim transaction, and with [`exclusive`](Self::exclusive) the
    ///   turn of the other relays, lasts as long as the batch takes to publish.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How often to look for rows when nothing woke the relay (default 1 s). Enqueueing in
    /// this process, and on PostgreSQL any commit, wakes it at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long published rows are kept before they are deleted (default 24 h);
    /// `Duration::ZERO` deletes each row as soon as it is published.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long inbox records are kept (default 7 days): a duplicate delivered later than
    /// this would be handled again. `None` keeps them forever.
    pub fn inbox_retention(mut self, retention: Option<Duration>) -> Self {
        self.inbox_retention = retention;
        self
    }

    /// How often old rows are deleted (default 60 s).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The first and the longest wait while the broker or the database is unreachable
    /// (default 100 ms to 30 s, doubling, with jitter).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// PostgreSQL: whether relays of one service take turns, batch by batch, so events are
    /// published in sequence order (default `true`). With `false` several relays publish
    /// different rows at the same time (`FOR UPDATE SKIP LOCKED`): more throughput, order
    /// kept only within a batch. No row is ever published by two relays at once either
    /// way. SQLite ignores it (run one relay per database).
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// PostgreSQL: whether to `LISTEN` for commits of other processes (default `true`);
    /// without it, the relay finds their rows by polling.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    fn backoff_iter(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Runs an outbox relay with a bus: `.with_relay(outbox, config)` on
/// [`Bus::builder`](tidings_core::Bus::builder).
///
/// ```no_run
/// # #[cfg(feature = "sqlite")] {
/// use tidings_core::{transport::Transport, Bus, Result, Topic};
/// use tidings_outbox::{sqlx::SqlitePool, BusBuilderExt, Outbox, RelayConfig};
///
/// /// The lending service: publishes the events of `T` through the outbox in `pool`.
/// async fn lending<T: Topic>(transport: impl Transport, pool: SqlitePool) -> Result<Bus> {
///     let outbox = Outbox::sqlite(pool).await?;
///     Bus::builder("lending")
///         .transport(transport)
///         .publishes::<T>()
///         .with_relay(outbox, RelayConfig::default()) // started by build(), stopped by shutdown()
///         .build()
///         .await
/// }
/// # }
/// ```
pub trait BusBuilderExt: sealed::Sealed {
    /// Run a relay for this bus's service, started by `build()` and stopped by
    /// `shutdown()` (after the batch in flight is published and marked).
    ///
    /// The relay publishes the committed rows of `outbox` that were enqueued with buses of
    /// the same service, oldest first, one transport call per batch (per run of one
    /// topic), and marks them published. It wakes when this process enqueues (and, on
    /// PostgreSQL, when any process commits), polls otherwise, backs off while the broker
    /// or the database is unreachable, and deletes published rows after the retention
    /// period ([`RelayConfig`]). Rows the transport refuses for a reason retrying cannot
    /// fix (too large, unknown topic) are parked with the error ([`Outbox::parked`]) so
    /// they do not block the rest; [`Outbox::counts`] tells how far it got.
    ///
    /// A crash between publishing and marking publishes those rows again on restart: the
    /// outbox delivers at least once, and the [inbox](crate::Inbox) makes handling
    /// idempotent.
    ///
    /// A process that only relays (no subscriptions of its own) builds a bus with
    /// `.publishes::<T>()` for the topics of the rows and `.with_relay(..)`.
    fn with_relay<DB: Backend>(self, outbox: Outbox<DB>, config: RelayConfig) -> Self;
}

impl BusBuilderExt for BusBuilder {
    fn with_relay<DB: Backend>(self, outbox: Outbox<DB>, config: RelayConfig) -> Self {
        self.with_companion(RelayCompanion { outbox, config })
    }
}

mod sealed {
    /// Only the bus builder gets `with_relay`.
    pub trait Sealed {}
    impl Sealed for tidings_core::BusBuilder {}
}

/// The relay as a companion of its bus.
struct RelayCompanion<DB: Backend> {
    outbox: Outbox<DB>,
    config: RelayConfig,
}

impl<DB: Backend> Companion for RelayCompanion<DB> {
    fn run(self: Box<Self>, bus: Bus, shutdown: Shutdown) -> BoxFuture<'static, ()> {
        let RelayCompanion { outbox, config } = *self;
        Box::pin(run(bus, outbox, config, shutdown))
    }
}

impl<DB: Backend> Outbox<DB> {
    /// Publish every pending row of `bus`'s service now, in batches of
    /// `config.batch_size`, and return how many were published: the relay's work done
    /// once, for tests, tools and command-line programs that run no bus with
    /// [`with_relay`](BusBuilderExt::with_relay). Rows refused for good are parked as the
    /// relay parks them. Fails on the first error (broker unreachable, bus closed).
    pub async fn relay_pending(&self, bus: &Bus, config: &RelayConfig) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let outcome =
                DB::relay_batch(self.pool(), self.names(), claim(bus, config), bus).await?;
            total += outcome.published as u64;
            if let Some(e) = outcome.error {
                return Err(e);
            }
            if outcome.standby {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            if outcome.claimed == 0 {
                return Ok(total);
            }
        }
    }
}

fn claim<'a>(bus: &'a Bus, config: &RelayConfig) -> Claim<'a> {
    Claim {
        service: bus.service(),
        limit: config.batch_size,
        exclusive: config.exclusive,
        delete: config.retention.is_zero(),
    }
}

async fn run<DB: Backend>(bus: Bus, outbox: Outbox<DB>, config: RelayConfig, shutdown: Shutdown) {
    let service = bus.service().to_string();
    let mut commits: Option<BoxStream<'static, ()>> = if config.listen {
        DB::commits(outbox.pool(), outbox.names()).await
    } else {
        None
    };
    let mut backoff = config.backoff_iter();
    let mut eager = 0u32;
    let mut last_cleanup = Instant::now();
    tracing::debug!(%service, table = outbox.table(), "outbox relay started");
    loop {
        if shutdown.is_requested() || bus.is_shut_down() {
            break;
        }
        let outcome =
            DB::relay_batch(outbox.pool(), outbox.names(), claim(&bus, &config), &bus).await;
        let (outcome, error) = match outcome {
            Ok(mut o) => {
                let e = o.error.take();
                (o, e)
            }
            Err(e) => (Default::default(), Some(e)),
        };
        if let Some(error) = error {
            if error.kind() == ErrorKind::Closed {
                tracing::info!(%service, %error, "outbox relay stops: the bus or the pool was closed");
                break;
            }
            let delay = backoff.next().unwrap_or(config.max_backoff);
            tracing::warn!(%service, %error, retry_in = ?delay, "outbox relay cannot publish; backing off");
            tokio::select! {
                _ = shutdown.requested() => break,
                _ = tokio::time::sleep(delay) => continue,
            }
        }
        backoff = config.backoff_iter();
        if outcome.claimed >= config.batch_size {
            // More rows are waiting.
            tokio::task::yield_now().await;
            continue;
        }
        if outcome.claimed > 0 {
            eager = EAGER_LOOKS;
        }
        if last_cleanup.elapsed() >= config.cleanup_interval {
            last_cleanup = Instant::now();
            cleanup(&outbox, &config).await;
        }
        let wait = if outcome.standby || eager == 0 {
            config.poll_interval
        } else {
            eager -= 1;
            Duration::from_millis(1 << (EAGER_LOOKS - 1 - eager)).min(config.poll_interval)
        };
        let mut stream_ended = false;
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = outbox.wake_signal().notified() => eager = EAGER_LOOKS,
            next = async {
                match commits.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => if next.is_none() { stream_ended = true },
            _ = tokio::time::sleep(wait) => {}
        }
        if stream_ended {
            tracing::warn!(%service, "the outbox LISTEN connection ended; the relay polls instead");
            commits = None;
        }
    }
    tracing::debug!(%service, "outbox relay stopped");
}

async fn cleanup<DB: Backend>(outbox: &Outbox<DB>, config: &RelayConfig) {
    if !config.retention.is_zero() {
        match DB::purge_published(outbox.pool(), outbox.names(), config.retention).await {
            Ok(n) if n > 0 => {
                tracing::debug!(deleted = n, "deleted published outbox rows past retention")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete published outbox rows"),
        }
    }
    if let Some(retention) = config.inbox_retention {
        match DB::purge_inbox(outbox.pool(), outbox.names(), retention).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "deleted inbox records past retention"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete old inbox records"),
        }
    }
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
