//! Memory transport throughput and latency, against a raw tokio channel carrying the same
//! MessagePack-encoded events, in one run:
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! - `throughput/raw_channel_msgpack`: encode (rmp-serde, named fields) -> bounded tokio
//!   mpsc channel -> decode in a consumer task.
//! - `throughput/tidings_memory`: `bus.publish(event)` -> memory transport -> typed handler.
//! - `latency/publish_to_handler`: one event at a time, from before `publish` to the first
//!   instruction of the handler. p50/p99 over 20 000 samples are printed as well.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidings::prelude::*;
use tokio::sync::Notify;

mod common;

use common::{event, BenchEvents, BookBorrowed};

const N: u64 = 100_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn raw_pipeline(n: u64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(bytes) = rx.recv().await {
            let e: BookBorrowed = rmp_serde::from_slice(&bytes).unwrap();
            std::hint::black_box(e);
            seen += 1;
            if seen == n {
                break;
            }
        }
    });
    for i in 0..n {
        tx.send(rmp_serde::to_vec_named(&event(i)).unwrap())
            .await
            .unwrap();
    }
    consumer.await.unwrap();
}

struct Counter {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

async fn count(e: BookBorrowed, cx: Context<Counter>) -> Result<(), HandlerError> {
    std::hint::black_box(e);
    let c = cx.state();
    if c.seen.fetch_add(1, Ordering::Relaxed) + 1 == c.target.load(Ordering::Relaxed) {
        c.done.notify_one();
    }
    Ok(())
}

/// A publisher and a subscriber service on one memory hub.
async fn buses<S: Send + Sync + 'static>(subscription: Subscription<BenchEvents, S>) -> (Bus, Bus) {
    let memory = Memory::new();
    let consumer = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(subscription)
        .build()
        .await
        .unwrap();
    let publisher = Bus::builder("lending")
        .transport(memory)
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap();
    (publisher, consumer)
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(N));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));

    group.bench_function(BenchmarkId::new("raw_channel_msgpack", N), |b| {
        b.to_async(&rt).iter(|| raw_pipeline(N))
    });

    let counter = Arc::new(Counter {
        seen: AtomicU64::new(0),
        target: AtomicU64::new(0),
        done: Notify::new(),
    });
    let (publisher, _consumer) = rt.block_on(buses(
        Subscription::to::<BenchEvents>()
            .with_shared_state(counter.clone())
            .on(count),
    ));
    group.bench_function(BenchmarkId::new("tidings_memory", N), |b| {
        b.to_async(&rt).iter(|| {
            let publisher = publisher.clone();
            let counter = counter.clone();
            async move {
                counter.seen.store(0, Ordering::Relaxed);
                counter.target.store(N, Ordering::Relaxed);
                let done = counter.done.notified();
                for i in 0..N {
                    publisher.publish(event(i)).await.unwrap();
                }
                done.await;
            }
        })
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

criterion_group!(benches, throughput, latency);
criterion_main!(benches);
