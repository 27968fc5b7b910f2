//! Relay throughput against publishing the same events directly, in one run:
//!
//! ```text
//! cargo bench -p tidings-outbox --features sqlite,postgres --bench relay
//! ```
//!
//! Every iteration moves `N` events into the memory transport, where a subscription with
//! a no-op handler consumes them (drained between iterations, outside the timing).
//!
//! - `direct/publish_each`: `bus.publish(event)` once per event, as an application without
//!   an outbox does after each business transaction.
//! - `direct/publish_batch`: `bus.publish_batch` in chunks of the relay's batch size.
//! - `relay/sqlite`, `relay/postgres`: the events are enqueued and committed beforehand
//!   (not timed); the timing covers the relay reading them, publishing them in batches
//!   of 256 and marking them published (`Outbox::relay_pending`, the relay's work done
//!   once). PostgreSQL runs when `TIDINGS_POSTGRES_URL` is set.
//!
//! - `outbox_relay_rabbitmq/*`: the same against RabbitMQ (publisher confirms), when
//!   `TIDINGS_RABBITMQ_URL` is set: `direct/publish_each` and `relay/sqlite`, 2 000 events
//!   per iteration, a consumer with a no-op handler draining the queue alongside.
//!
//! SQLite is a file in the temp dir in WAL mode with `synchronous = NORMAL` (durable
//! against a crash of the process, not of the machine).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tidings_core::{
    Bus, Context, Event, EventInfo, HandlerError, Subscription, Topic, TopicMember,
};
use tidings_memory::{Memory, MemoryConfig};
use tidings_outbox::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use tidings_outbox::{Backend, Outbox, RelayConfig};
use tidings_rabbitmq::RabbitMq;

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

const N: u64 = 5_000;
const BATCH: usize = 256;

async fn noop(_e: BookBorrowed, _cx: Context<()>) -> Result<(), HandlerError> {
    Ok(())
}

/// A publishing bus and a consuming bus on one hub.
async fn buses() -> (Memory, Bus, Bus) {
    let hub = Memory::with_config(MemoryConfig::default().queue_capacity(4 * N as usize));
    let consumer = Bus::builder("consumer")
        .transport(hub.clone())
        .subscribe(Subscription::to::<BenchEvents>().on(noop))
        .build()
        .await
        .unwrap();
    let publisher = Bus::builder("lending")
        .transport(hub.clone())
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap();
    (hub, publisher, consumer)
}

async fn fill<DB: Backend>(outbox: &Outbox<DB>, bus: &Bus, n: u64) {
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox
        .enqueue_batch(&mut tx, bus, (0..n).map(event))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Time `Outbox::relay_pending` over `iters` fresh fills of the outbox (of `n` events each);
/// `settle` waits, untimed, until the consumer has caught up.
async fn relay_iters<DB: Backend, F, Fut>(
    outbox: &Outbox<DB>,
    bus: &Bus,
    iters: u64,
    n: u64,
    settle: F,
) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let config = RelayConfig::default().batch_size(BATCH);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        fill(outbox, bus, n).await;
        let start = Instant::now();
        let published = outbox.relay_pending(bus, &config).await.unwrap();
        total += start.elapsed();
        assert_eq!(published, n);
        settle().await;
        outbox.purge_published(Duration::ZERO).await.unwrap();
    }
    total
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (hub, publisher, _consumer) = rt.block_on(buses());

    let mut group = c.benchmark_group("outbox_relay");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));

    group.bench_function("direct/publish_each", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (hub, publisher) = (hub.clone(), publisher.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events: Vec<_> = (0..N).map(event).collect();
                    let start = Instant::now();
                    for e in events {
                        publisher.publish(e).await.unwrap();
                    }
                    total += start.elapsed();
                    hub.idle().await;
                }
                total
            }
        })
    });

    group.bench_function("direct/publish_batch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (hub, publisher) = (hub.clone(), publisher.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events: Vec<_> = (0..N).map(event).collect();
                    let start = Instant::now();
                    for chunk in events.chunks(BATCH) {
                        publisher
                            .publish_batch(chunk.iter().cloned())
                            .await
                            .unwrap();
                    }
                    total += start.elapsed();
                    hub.idle().await;
                }
                total
            }
        })
    });

    let path = std::env::temp_dir().join(format!("tidings-outbox-bench-{}.db", std::process::id()));
    let sqlite = rt.block_on(async {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        Arc::new(Outbox::sqlite(pool).await.unwrap())
    });
    group.bench_function("relay/sqlite", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (hub, publisher, outbox) = (hub.clone(), publisher.clone(), sqlite.clone());
            async move { relay_iters(&outbox, &publisher, iters, N, || hub.idle()).await }
        })
    });

    if let Ok(url) = std::env::var("TIDINGS_POSTGRES_URL") {
        let postgres = rt.block_on(async {
            let pool = tidings_outbox::sqlx::PgPool::connect(&url)
                .await
                .expect("TIDINGS_POSTGRES_URL is set but PostgreSQL is unreachable");
            let prefix = format!("bench{}_", std::process::id());
            Arc::new(
                Outbox::builder(pool)
                    .table_prefix(prefix)
                    .build()
                    .await
                    .unwrap(),
            )
        });
        group.bench_function("relay/postgres", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (hub, publisher, outbox) = (hub.clone(), publisher.clone(), postgres.clone());
                async move { relay_iters(&outbox, &publisher, iters, N, || hub.idle()).await }
            })
        });
        rt.block_on(async {
            let t = postgres.table().trim_end_matches("outbox").to_string();
            let _ =
                tidings_outbox::sqlx::query(&format!("DROP TABLE {t}outbox, {t}inbox, {t}schema"))
                    .execute(postgres.pool())
                    .await;
        });
    } else {
        println!("skipping relay/postgres: TIDINGS_POSTGRES_URL is not set");
    }
    group.finish();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Events per iteration on RabbitMQ, where every publish waits for the broker's confirm.
const N_RABBITMQ: u64 = 2_000;

async fn noop_rabbitmq(_e: BookBorrowed, _cx: Context<()>) -> Result<(), HandlerError> {
    Ok(())
}

/// The same comparison with RabbitMQ as the transport (when `TIDINGS_RABBITMQ_URL` is set):
/// publishing waits for publisher confirms; a consumer with a no-op handler drains the
/// queue alongside.
fn bench_rabbitmq(c: &mut Criterion) {
    let Ok(url) = std::env::var("TIDINGS_RABBITMQ_URL") else {
        println!("skipping outbox_relay_rabbitmq: TIDINGS_RABBITMQ_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ns = format!("bench-outbox-{}", std::process::id());
    let (publisher, _consumer, sqlite, path) = rt.block_on(async {
        let consumer = Bus::builder("consumer")
            .namespace(ns.clone())
            .transport(RabbitMq::from_url(&url).unwrap())
            .subscribe(
                Subscription::to::<BenchEvents>()
                    .concurrency(8)
                    .on(noop_rabbitmq),
            )
            .build()
            .await
            .expect("TIDINGS_RABBITMQ_URL is set but RabbitMQ is unreachable");
        let publisher = Bus::builder("lending")
            .namespace(ns.clone())
            .transport(RabbitMq::from_url(&url).unwrap())
            .publishes::<BenchEvents>()
            .build()
            .await
            .unwrap();
        let path = std::env::temp_dir().join(format!(
            "tidings-outbox-bench-rmq-{}.db",
            std::process::id()
        ));
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        (
            publisher,
            consumer,
            Arc::new(Outbox::sqlite(pool).await.unwrap()),
            path,
        )
    });

    let mut group = c.benchmark_group("outbox_relay_rabbitmq");
    group.throughput(Throughput::Elements(N_RABBITMQ));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("direct/publish_each", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let publisher = publisher.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events: Vec<_> = (0..N_RABBITMQ).map(event).collect();
                    let start = Instant::now();
                    for e in events {
                        publisher.publish(e).await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.bench_function("relay/sqlite", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (publisher, outbox) = (publisher.clone(), sqlite.clone());
            async move { relay_iters(&outbox, &publisher, iters, N_RABBITMQ, || async {}).await }
        })
    });
    group.finish();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

criterion_group!(benches, bench, bench_rabbitmq);
criterion_main!(benches);
