//! The relay: publishes committed outbox rows through a bus, in order and in batches.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tidings_core::{Bus, Companion, Error, ErrorKind, Result, Shutdown};
use tokio::task::JoinHandle;

use crate::backend::{Backend, Claim};
use crate::outbox::Outbox;
use crate::row::Pending;

/// After a wake-up that found nothing (the enqueueing transaction had not committed yet),
/// look again after 1, 2, 4 … 128 ms before falling back to the poll interval.
const EAGER_LOOKS: u32 = 8;

/// How a [`Relay`] runs.
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
            batch_size: 256,
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
    /// Rows claimed and published per transport call (default 256).
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

/// Publishes the committed rows of an [`Outbox`] through a [`Bus`].
///
/// `Relay::start(bus.clone(), outbox.clone(), RelayConfig::default())` spawns it on the
/// tokio runtime. It publishes the rows enqueued with buses of the same service as `bus`,
/// oldest first, one transport call per batch (per run of one topic), marks them
/// published, backs off while the broker or database is unreachable, and deletes
/// published rows after the retention period. Rows the transport refuses for a reason
/// retrying cannot fix (too large, unknown topic) are parked with the error
/// ([`Outbox::parked`]) so they do not block the rest.
///
/// A crash between publishing and marking publishes those rows again on restart: the
/// outbox delivers at least once, and the [inbox](crate::Inbox) makes handling idempotent.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Spawn a relay for `bus`'s service. It runs until [`RelayHandle::shutdown`], until
    /// the handle is dropped, or until the bus is shut down.
    pub fn start<DB: Backend>(bus: Bus, outbox: Outbox<DB>, config: RelayConfig) -> RelayHandle {
        let shutdown = Shutdown::new();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(bus, outbox, config, shutdown.clone(), stats.clone()));
        RelayHandle {
            shutdown,
            task: Some(task),
            stats,
        }
    }

    /// A relay that the bus runs itself: `Bus::builder(..).with_companion(Relay::companion(
    /// outbox, config))` starts it with `build()` and stops it with `shutdown()`.
    pub fn companion<DB: Backend>(outbox: Outbox<DB>, config: RelayConfig) -> RelayCompanion<DB> {
        RelayCompanion { outbox, config }
    }

    /// Publish every pending row of `bus`'s service now, in batches of
    /// `config.batch_size`, and return how many were published; for tests, tools and
    /// command-line programs that run without a background relay. Fails on the first
    /// error (broker unreachable, bus closed).
    pub async fn drain<DB: Backend>(
        bus: &Bus,
        outbox: &Outbox<DB>,
        config: &RelayConfig,
    ) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let outcome =
                DB::relay_batch(outbox.pool(), outbox.names(), claim(bus, config), bus).await?;
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

/// A [`Relay`] run by its bus ([`Relay::companion`]).
#[derive(Debug)]
pub struct RelayCompanion<DB: Backend> {
    outbox: Outbox<DB>,
    config: RelayConfig,
}

impl<DB: Backend> Companion for RelayCompanion<DB> {
    fn run(self: Box<Self>, bus: Bus, shutdown: Shutdown) -> BoxFuture<'static, ()> {
        let RelayCompanion { outbox, config } = *self;
        Box::pin(run(
            bus,
            outbox,
            config,
            shutdown,
            Arc::new(Stats::default()),
        ))
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

#[derive(Debug, Default)]
struct Stats {
    published: AtomicU64,
    parked: AtomicU64,
}

/// A running [`Relay`]. Dropping it stops the relay (after the batch in flight).
pub struct RelayHandle {
    shutdown: Shutdown,
    task: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl RelayHandle {
    /// Stop the relay and wait until the batch in flight is published and marked.
    pub async fn shutdown(mut self) {
        self.shutdown.request();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// How many rows this relay has published so far.
    pub fn published(&self) -> u64 {
        self.stats.published.load(Ordering::Relaxed)
    }

    /// How many rows this relay has parked so far.
    pub fn parked(&self) -> u64 {
        self.stats.parked.load(Ordering::Relaxed)
    }

    /// Whether the relay has stopped (shut down, or its bus was shut down).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown.request();
    }
}

impl fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandle")
            .field("published", &self.published())
            .field("parked", &self.parked())
            .field("finished", &self.is_finished())
            .finish()
    }
}

async fn run<DB: Backend>(
    bus: Bus,
    outbox: Outbox<DB>,
    config: RelayConfig,
    shutdown: Shutdown,
    stats: Arc<Stats>,
) {
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
        stats
            .published
            .fetch_add(outcome.published as u64, Ordering::Relaxed);
        stats
            .parked
            .fetch_add(outcome.parked as u64, Ordering::Relaxed);
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
