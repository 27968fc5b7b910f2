//! The outbox relay to RabbitMQ against raw lapin publishing the same events, in one run:
//!
//! ```text
//! for s in rabbitmq postgres; do scripts/services/$s.sh start && eval "$(scripts/services/$s.sh env)"; done
//! cargo bench -p tidings-outbox --all-features --bench relay -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Needs `TIDINGS_RABBITMQ_URL` (without it the bench prints a line and does nothing);
//! PostgreSQL runs when `TIDINGS_POSTGRES_URL` is set, SQLite always (a file in the temp
//! dir, WAL, `synchronous = NORMAL`: durable against a crash of the process, not of the
//! machine). Both sides publish to the same durable topic exchange, bound to one durable
//! sink queue (no consumer, emptied between rounds, untimed): persistent messages the
//! broker confirms once stored, the same work on both sides.
//!
//! - Throughput (group `outbox_relay_rabbitmq`, N events a round, default 10 000,
//!   `TIDINGS_BENCH_EVENTS`):
//!   - `raw_lapin`: the envelopes the bus makes of the N events (built beforehand, as an
//!     application has its events in memory) sent with `basic_publish` on a confirm-mode
//!     channel, 1024 unconfirmed in flight (the transport's default window), the AMQP
//!     properties built per message as the transport builds them (same body, same
//!     headers), timed until the last confirm.
//!   - `relay/sqlite`, `relay/postgres`: the N events enqueued and committed beforehand
//!     (untimed); timed: `Outbox::relay_pending` with `RelayConfig::default()`, the
//!     relay's batch loop (read a batch, publish it with confirms, mark it published)
//!     until the last row is confirmed and marked.
//!   - printed after the group: the median of each side's rounds, and the ratio
//!     relay/raw.
//! - Idle latency (printed): a relay running with its bus (`with_relay`, default
//!   config), idle; one event at a time is enqueued in a transaction, and the time from
//!   the commit returning to a raw lapin consumer (auto-ack) on the sink queue receiving
//!   it is recorded; the relay is woken by the enqueue's in-process notify and, on
//!   PostgreSQL, by `LISTEN`. Samples are `TIDINGS_BENCH_GAP_MS` apart (default 300 ms,
//!   longer than the relay's eager looks after a batch, so every sample starts from a
//!   relay waiting on its wake-up signals). For scale, raw lapin publishing one message
//!   (confirmed) to the same consumer, from the call to the delivery.
//! - Environment knobs, for experiments: `TIDINGS_BENCH_BATCH` (the relay's batch size),
//!   `TIDINGS_BENCH_SAMPLES` (latency samples, default 200), `TIDINGS_BENCH_ONLY`
//!   (`throughput`, `latency`, `backlog`, or `once` for one round of each side without
//!   criterion, to run under `valgrind --tool=callgrind`; `once-raw`, `once-relay`).
//! - Backlog memory (printed): 10 000 and 100 000 rows committed (1 000 a transaction)
//!   while no relay runs, then `relay_pending` drains them; a counting global allocator
//!   records the peak of live heap bytes above the level when the drain started, and
//!   `/proc/self/status` the growth of the peak resident set (VmHWM, reset through
//!   `/proc/self/clear_refs` before the drain).

mod raw;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use peak_alloc::PeakAlloc;
use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Envelope, Event, EventInfo, PublishOptions, Topic, TopicMember};
use tidings_outbox::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use tidings_outbox::sqlx::{PgPool, Postgres, Sqlite};
use tidings_outbox::{Backend, BusBuilderExt, Outbox, RelayConfig};
use tidings_rabbitmq::RabbitMq;
use tokio::runtime::Runtime;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BookBorrowed {
    book_id: u64,
    patron_id: u64,
    title: String,
}
impl Event for BookBorrowed {
    const NAME: &'static str = "bench.book-borrowed";
    const VERSION: u32 = 1;
}
impl TopicMember for BookBorrowed {
    type Topic = BenchEvents;
}
struct BenchEvents;
impl Topic for BenchEvents {
    const NAME: &'static str = "bench";
    fn events() -> &'static [EventInfo] {
        &[EventInfo {
            name: BookBorrowed::NAME,
            version: 1,
            type_name: "BookBorrowed",
        }]
    }
}

fn event(i: u64) -> BookBorrowed {
    BookBorrowed {
        book_id: i,
        patron_id: i ^ 0x5a5a,
        title: "The Left Hand of Darkness".to_string(),
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Everything the rounds share.
struct Setup {
    url: String,
    ns: String,
    conn: Connection,
    channel: Channel,
    exchange: String,
    sink: String,
    publisher: Bus,
    sqlite: Outbox<Sqlite>,
    sqlite_path: std::path::PathBuf,
    postgres: Option<Outbox<Postgres>>,
}

async fn setup(url: &str) -> Setup {
    let ns = format!("bench-relay-{}", std::process::id());
    let publisher = Bus::builder("lending")
        .namespace(ns.clone())
        .transport(RabbitMq::from_url(url).unwrap())
        .publishes::<BenchEvents>()
        .build()
        .await
        .expect("TIDINGS_RABBITMQ_URL is set but RabbitMQ is unreachable");
    let exchange = publisher.topic_name::<BenchEvents>().unwrap().to_string();
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let sink = format!("{ns}.sink");
    raw::declare_sink(&conn, &exchange, &sink).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    let sqlite_path =
        std::env::temp_dir().join(format!("tidings-outbox-bench-{}.db", std::process::id()));
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", sqlite_path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let sqlite = Outbox::sqlite(pool).await.unwrap();
    let postgres = match std::env::var("TIDINGS_POSTGRES_URL") {
        Ok(pg) => {
            let pool = PgPool::connect(&pg)
                .await
                .expect("TIDINGS_POSTGRES_URL is set but PostgreSQL is unreachable");
            let prefix = format!("bench{}_", std::process::id());
            Some(
                Outbox::builder(pool)
                    .table_prefix(prefix)
                    .build()
                    .await
                    .unwrap(),
            )
        }
        Err(_) => {
            println!("skipping PostgreSQL: TIDINGS_POSTGRES_URL is not set");
            None
        }
    };
    Setup {
        url: url.to_string(),
        ns,
        conn,
        channel,
        exchange,
        sink,
        publisher,
        sqlite,
        sqlite_path,
        postgres,
    }
}

/// The relay's configuration: the default, or `TIDINGS_BENCH_BATCH` rows a batch (to
/// compare batch sizes).
fn config() -> RelayConfig {
    match std::env::var("TIDINGS_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => RelayConfig::default().batch_size(n),
        None => RelayConfig::default(),
    }
}

/// Commit `n` events into `outbox`, `per_tx` to a transaction.
async fn fill<DB: Backend>(outbox: &Outbox<DB>, bus: &Bus, n: u64, per_tx: u64) {
    let mut done = 0;
    while done < n {
        let upto = (done + per_tx).min(n);
        let mut tx = outbox.pool().begin().await.unwrap();
        outbox
            .enqueue_batch(&mut tx, bus, (done..upto).map(event))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        done = upto;
    }
}

/// Round durations by side, for the medians printed after the group.
static ROUNDS: Mutex<BTreeMap<&'static str, Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(side: &'static str, d: Duration) {
    ROUNDS.lock().unwrap().entry(side).or_default().push(d);
}

async fn raw_round(s: &Setup, envelopes: &[Envelope]) -> Duration {
    let start = Instant::now();
    raw::publish(&s.channel, &s.exchange, envelopes).await;
    let d = start.elapsed();
    raw::purge(&s.conn, &s.sink).await;
    record("raw_lapin", d);
    d
}

async fn relay_round<DB: Backend>(
    s: &Setup,
    side: &'static str,
    outbox: &Outbox<DB>,
    n: u64,
) -> Duration {
    fill(outbox, &s.publisher, n, n).await;
    let start = Instant::now();
    let published = outbox.relay_pending(&s.publisher, &config()).await.unwrap();
    let d = start.elapsed();
    assert_eq!(published, n);
    raw::purge(&s.conn, &s.sink).await;
    outbox.purge_published(Duration::ZERO).await.unwrap();
    record(side, d);
    d
}

/// Run `round` `iters` times; the sum of the durations it returns.
fn timed<F, Fut>(rt: &Runtime, iters: u64, round: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += round().await;
        }
        total
    })
}

fn throughput(c: &mut Criterion, rt: &Runtime, s: &Setup, n: u64) {
    let envelopes: Vec<Envelope> = (0..n)
        .map(|i| {
            s.publisher
                .envelope(&event(i), PublishOptions::default())
                .unwrap()
        })
        .collect();
    let mut group = c.benchmark_group("outbox_relay_rabbitmq");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw_lapin", |b| {
        b.iter_custom(|iters| timed(rt, iters, || raw_round(s, &envelopes)))
    });
    group.bench_function("relay/sqlite", |b| {
        b.iter_custom(|iters| timed(rt, iters, || relay_round(s, "relay/sqlite", &s.sqlite, n)))
    });
    if let Some(pg) = &s.postgres {
        group.bench_function("relay/postgres", |b| {
            b.iter_custom(|iters| timed(rt, iters, || relay_round(s, "relay/postgres", pg, n)))
        });
    }
    group.finish();

    let rounds = std::mem::take(&mut *ROUNDS.lock().unwrap());
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let raw = rounds.get("raw_lapin").map(|v| median(v));
    println!("throughput/{n} events a round (median of all rounds, warm-up included):");
    for (side, v) in &rounds {
        let m = median(v);
        let rate = n as f64 / m.as_secs_f64();
        let ratio = raw
            .map(|r| r.as_secs_f64() / m.as_secs_f64())
            .unwrap_or(f64::NAN);
        println!(
            "  {side:<15} {rate:>9.0} events/s  ({} rounds)  ratio to raw_lapin {ratio:.3}",
            v.len()
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {name:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} samples)",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().unwrap()),
        v.len()
    );
}

/// Commit → received, one event at a time, through a relay running with its bus.
async fn relay_latency<DB: Backend>(
    s: &Setup,
    outbox: &Outbox<DB>,
    samples: usize,
    gap: Duration,
) -> Vec<Duration> {
    let bus = Bus::builder("lending")
        .namespace(s.ns.clone())
        .transport(RabbitMq::from_url(&s.url).unwrap())
        .publishes::<BenchEvents>()
        .with_relay(outbox.clone(), config())
        .build()
        .await
        .unwrap();
    let (channel, mut arrivals) = raw::arrivals(&s.conn, &s.sink).await;
    tokio::time::sleep(gap).await;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        let mut tx = outbox.pool().begin().await.unwrap();
        outbox.enqueue(&mut tx, &bus, event(i)).await.unwrap();
        tx.commit().await.unwrap();
        let committed = Instant::now();
        let received = arrivals.recv().await.unwrap();
        out.push(received.saturating_duration_since(committed));
        tokio::time::sleep(gap).await;
    }
    let _ = channel.close(200, "done".into()).await;
    bus.shutdown().await;
    outbox.purge_published(Duration::ZERO).await.unwrap();
    out
}

/// Raw lapin: one message published (confirmed) → received, one at a time.
async fn raw_latency(s: &Setup, samples: usize, gap: Duration) -> Vec<Duration> {
    let envelopes: Vec<Envelope> = (0..samples as u64)
        .map(|i| {
            s.publisher
                .envelope(&event(i), PublishOptions::default())
                .unwrap()
        })
        .collect();
    let (channel, mut arrivals) = raw::arrivals(&s.conn, &s.sink).await;
    let mut out = Vec::with_capacity(samples);
    for e in envelopes.chunks(1) {
        let start = Instant::now();
        raw::publish(&s.channel, &s.exchange, e).await;
        let received = arrivals.recv().await.unwrap();
        out.push(received.saturating_duration_since(start));
        tokio::time::sleep(gap.min(Duration::from_millis(20))).await;
    }
    let _ = channel.close(200, "done".into()).await;
    out
}

fn latency(rt: &Runtime, s: &Setup) {
    let samples: usize = env_or("TIDINGS_BENCH_SAMPLES", 200);
    let gap = Duration::from_millis(env_or("TIDINGS_BENCH_GAP_MS", 300));
    rt.block_on(async {
        println!("idle_latency/commit returned → received by a raw consumer, one event at a time, {gap:?} apart:");
        summary("raw_lapin publish→received", raw_latency(s, samples, gap).await);
        summary("relay/sqlite", relay_latency(s, &s.sqlite, samples, gap).await);
        if let Some(pg) = &s.postgres {
            summary("relay/postgres", relay_latency(s, pg, samples, gap).await);
        }
    });
}

/// A field of `/proc/self/status` in kB (0 elsewhere).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Drain a backlog of `n` rows; returns (time, peak live heap above the start, VmHWM growth in kB).
async fn drain<DB: Backend>(s: &Setup, outbox: &Outbox<DB>, n: u64) -> (Duration, usize, u64) {
    fill(outbox, &s.publisher, n, 1000).await;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss = status_kb("VmRSS:");
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let start = Instant::now();
    let published = outbox.relay_pending(&s.publisher, &config()).await.unwrap();
    let took = start.elapsed();
    let peak = ALLOC.peak_usage().saturating_sub(base);
    let hwm = status_kb("VmHWM:").saturating_sub(rss);
    assert_eq!(published, n);
    raw::purge(&s.conn, &s.sink).await;
    outbox.purge_published(Duration::ZERO).await.unwrap();
    (took, peak, hwm)
}

fn backlog(rt: &Runtime, s: &Setup) {
    rt.block_on(async {
        println!("backlog/rows committed with no relay running, then drained by relay_pending (default config):");
        for n in [10_000u64, 100_000] {
            let mut runs: Vec<(&str, (Duration, usize, u64))> = vec![("relay/sqlite", drain(s, &s.sqlite, n).await)];
            if let Some(pg) = &s.postgres {
                runs.push(("relay/postgres", drain(s, pg, n).await));
            }
            for (side, (took, peak, hwm)) in runs {
                println!(
                    "  {side:<15} {n:>7} rows  drained in {:>6.2} s ({:>7.0} rows/s)  peak live heap +{:>7.1} KiB  VmHWM +{hwm} KiB",
                    took.as_secs_f64(),
                    n as f64 / took.as_secs_f64(),
                    peak as f64 / 1024.0
                );
            }
        }
    });
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("TIDINGS_RABBITMQ_URL") else {
        println!("skipped: TIDINGS_RABBITMQ_URL is not set; nothing to benchmark");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(setup(&url));
    let n: u64 = env_or("TIDINGS_BENCH_EVENTS", 10_000);
    let only = std::env::var("TIDINGS_BENCH_ONLY").unwrap_or_default();
    if only.contains("once") {
        // One round of each side, no criterion: for `valgrind --tool=callgrind`.
        rt.block_on(async {
            let envelopes: Vec<Envelope> = (0..n)
                .map(|i| {
                    s.publisher
                        .envelope(&event(i), PublishOptions::default())
                        .unwrap()
                })
                .collect();
            if !only.contains("relay") {
                println!("once/raw_lapin {:?}", raw_round(&s, &envelopes).await);
            }
            if !only.contains("raw") {
                println!(
                    "once/relay/sqlite {:?}",
                    relay_round(&s, "relay/sqlite", &s.sqlite, n).await
                );
                if let Some(pg) = &s.postgres {
                    println!(
                        "once/relay/postgres {:?}",
                        relay_round(&s, "relay/postgres", pg, n).await
                    );
                }
            }
        });
    }
    if only.is_empty() || only.contains("throughput") {
        throughput(c, &rt, &s, n);
    }
    if only.is_empty() || only.contains("latency") {
        latency(&rt, &s);
    }
    if only.is_empty() || only.contains("backlog") {
        backlog(&rt, &s);
    }
    rt.block_on(async {
        raw::delete(&s.conn, &s.sink).await;
        let _ = s.publisher.teardown().await;
        if let Some(pg) = &s.postgres {
            let t = pg.table().trim_end_matches("outbox").to_string();
            let _ =
                tidings_outbox::sqlx::query(&format!("DROP TABLE {t}outbox, {t}inbox, {t}schema"))
                    .execute(pg.pool())
                    .await;
        }
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.sqlite_path.display()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
