//! Memory transport throughput and latency, against a raw tokio channel carrying the same
//! encoded events, in one run:
//!
//! ```text
//! cargo bench --bench memory --features json
//! ```
//!
//! (Without `--features json` the two JSON benchmarks are left out: the facade's JSON
//! codec is a feature.)
//!
//! Every throughput benchmark runs 100 000 events end to end, until the consumer has
//! decoded the last one, on a tokio multi-thread runtime with 2 workers:
//!
//! - `throughput/raw_channel_json`, `throughput/raw_channel_msgpack`: each event encoded
//!   (serde_json, or rmp-serde with named fields) into a `Vec<u8>`, sent through a bounded
//!   tokio mpsc channel (capacity 1024), decoded by a consumer task.
//! - `throughput/tidings_memory_json`, `throughput/tidings_memory_msgpack`:
//!   `bus.publish(event).await` one event at a time on a bus built with
//!   `.codec(Codec::Json)` or `.codec(Codec::MessagePack)`, to a subscription on the memory
//!   transport (default settings: queue capacity 10 000) whose typed handler receives the
//!   decoded event and counts it; at-least-once as always (each delivery acknowledged).
//! - `batch/publish_batch` vs `batch/singles_in_flight`: 1 000 events as one
//!   `bus.publish_batch` call, against 1 000 `bus.publish` calls all in flight at once
//!   (`join_all`), MessagePack, the same subscription consuming meanwhile. Timed until the
//!   publishing side has its answer (every publish resolved); the consumer then drains
//!   the 1 000 events untimed before the next iteration.
//! - `latency/publish_to_handler`: one event at a time, from before `publish` to the first
//!   instruction of the handler. p50/p99 over 20 000 samples are printed as well.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidings::prelude::*;
use tidings::Codec;
use tokio::sync::Notify;

mod common;

use common::{event, BenchEvents, BookBorrowed};

const N: u64 = 100_000;
const BATCH: u64 = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// How the raw pipeline encodes and decodes.
#[derive(Clone, Copy)]
enum Format {
    #[cfg(feature = "json")]
    Json,
    MessagePack,
}

impl Format {
    fn encode(self, e: &BookBorrowed) -> Vec<u8> {
        match self {
            #[cfg(feature = "json")]
            Format::Json => serde_json::to_vec(e).unwrap(),
            Format::MessagePack => rmp_serde::to_vec_named(e).unwrap(),
        }
    }

    fn decode(self, bytes: &[u8]) -> BookBorrowed {
        match self {
            #[cfg(feature = "json")]
            Format::Json => serde_json::from_slice(bytes).unwrap(),
            Format::MessagePack => rmp_serde::from_slice(bytes).unwrap(),
        }
    }
}

async fn raw_pipeline(n: u64, format: Format) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(bytes) = rx.recv().await {
            std::hint::black_box(format.decode(&bytes));
            seen += 1;
            if seen == n {
                break;
            }
        }
    });
    for i in 0..n {
        tx.send(format.encode(&event(i))).await.unwrap();
    }
    consumer.await.unwrap();
}

struct Counter {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl Counter {
    fn new() -> Arc<Self> {
        Arc::new(Counter {
            seen: AtomicU64::new(0),
            target: AtomicU64::new(0),
            done: Notify::new(),
        })
    }

    /// Expect `n` more events from now on.
    fn expect(&self, n: u64) {
        self.seen.store(0, Ordering::Relaxed);
        self.target.store(n, Ordering::Relaxed);
    }
}

async fn count(e: BookBorrowed, cx: Context<Counter>) -> Result<(), HandlerError> {
    std::hint::black_box(e);
    let c = cx.state();
    if c.seen.fetch_add(1, Ordering::Relaxed) + 1 == c.target.load(Ordering::Relaxed) {
        c.done.notify_one();
    }
    Ok(())
}

/// A publisher and a subscriber service on one memory hub, both with `codec`.
async fn buses<S: Send + Sync + 'static>(
    subscription: Subscription<BenchEvents, S>,
    codec: Codec,
) -> (Bus, Bus) {
    let memory = Memory::new();
    let consumer = Bus::builder("catalog")
        .transport(memory.clone())
        .codec(codec)
        .subscribe(subscription)
        .build()
        .await
        .unwrap();
    let publisher = Bus::builder("lending")
        .transport(memory)
        .codec(codec)
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap();
    (publisher, consumer)
}

/// A publisher, a counting subscriber and its counter.
fn counting(rt: &tokio::runtime::Runtime, codec: Codec) -> (Bus, Bus, Arc<Counter>) {
    let counter = Counter::new();
    let (publisher, consumer) = rt.block_on(buses(
        Subscription::to::<BenchEvents>()
            .with_shared_state(counter.clone())
            .on(count),
        codec,
    ));
    (publisher, consumer, counter)
}

/// `bus.publish` of `n` events one at a time, until the handler has seen the last.
async fn tidings_pipeline(publisher: &Bus, counter: &Counter, n: u64) {
    counter.expect(n);
    let done = counter.done.notified();
    for i in 0..n {
        publisher.publish(event(i)).await.unwrap();
    }
    done.await;
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);

    let mut formats = vec![("msgpack", Format::MessagePack, Codec::MessagePack)];
    #[cfg(feature = "json")]
    formats.insert(0, ("json", Format::Json, Codec::Json));
    for (name, format, codec) in formats {
        group.bench_function(BenchmarkId::new(format!("raw_channel_{name}"), N), |b| {
            b.to_async(&rt).iter(|| raw_pipeline(N, format))
        });
        let (publisher, _consumer, counter) = counting(&rt, codec);
        group.bench_function(BenchmarkId::new(format!("tidings_memory_{name}"), N), |b| {
            b.to_async(&rt)
                .iter(|| tidings_pipeline(&publisher, &counter, N))
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let rt = runtime();
    let (publisher, _consumer, counter) = counting(&rt, Codec::MessagePack);
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);

    // Time `publish` (the publishing side's answer), then let the consumer drain untimed.
    let timed = |iters: u64, batch: bool| {
        let (publisher, counter) = (publisher.clone(), counter.clone());
        async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                counter.expect(BATCH);
                let done = counter.done.notified();
                let start = Instant::now();
                if batch {
                    publisher
                        .publish_batch((0..BATCH).map(event))
                        .await
                        .unwrap();
                } else {
                    let all = (0..BATCH).map(|i| publisher.publish(event(i)));
                    for r in futures::future::join_all(all).await {
                        r.unwrap();
                    }
                }
                total += start.elapsed();
                done.await;
            }
            total
        }
    };
    group.bench_function(BenchmarkId::new("publish_batch", BATCH), |b| {
        b.to_async(&rt).iter_custom(|iters| timed(iters, true))
    });
    group.bench_function(BenchmarkId::new("singles_in_flight", BATCH), |b| {
        b.to_async(&rt).iter_custom(|iters| timed(iters, false))
    });
    group.finish();
}

struct Stamp {
    at: Mutex<Option<Instant>>,
    done: Notify,
}

async fn stamp(e: BookBorrowed, cx: Context<Stamp>) -> Result<(), HandlerError> {
    let now = Instant::now();
    std::hint::black_box(e);
    *cx.state().at.lock().unwrap() = Some(now);
    cx.state().done.notify_one();
    Ok(())
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let state = Arc::new(Stamp {
        at: Mutex::new(None),
        done: Notify::new(),
    });
    let (publisher, _consumer) = rt.block_on(buses(
        Subscription::to::<BenchEvents>()
            .with_shared_state(state.clone())
            .on(stamp),
        Codec::MessagePack,
    ));
    let one = |publisher: Bus, state: Arc<Stamp>| async move {
        let done = state.done.notified();
        let t0 = Instant::now();
        publisher.publish(event(1)).await.unwrap();
        done.await;
        let at = state.at.lock().unwrap().take().unwrap();
        at - t0
    };

    let mut group = c.benchmark_group("latency");
    group.bench_function("publish_to_handler", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (publisher, state) = (publisher.clone(), state.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one(publisher.clone(), state.clone()).await;
                }
                total
            }
        })
    });
    group.finish();

    let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    rt.block_on(async {
        for _ in 0..20_000 {
            let d = one(publisher.clone(), state.clone()).await;
            hist.record(d.as_nanos() as u64).unwrap();
        }
    });
    println!(
        "latency/publish_to_handler over 20000 samples: p50 {:.2} µs, p99 {:.2} µs",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0
    );
}

criterion_group!(benches, throughput, batch, latency);
criterion_main!(benches);
