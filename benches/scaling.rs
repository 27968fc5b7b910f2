//! The scaling curve: end-to-end throughput against handler concurrency (1, 4, 16) and
//! event size (150 B, 4 KiB, 64 KiB), for each transport, in one run:
//!
//! ```text
//! TIDINGS_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//! TIDINGS_KAFKA_BROKERS=127.0.0.1:9092 \
//! cargo bench --bench scaling --features rabbitmq,kafka,servicebus
//! ```
//!
//! Transports, each skipped (with a line saying so) when its feature is off or its
//! variable is unset; a variable that is set but whose broker does not answer fails the
//! bench instead (buses not up within 60 s, or a run not done within 180 s):
//!
//! - `memory`: the in-memory transport, always.
//! - `rabbitmq`: `TIDINGS_RABBITMQ_URL` (feature `rabbitmq`), transport defaults
//!   (publisher confirms, persistent messages, durable queues, manual acks).
//! - `kafka`: `TIDINGS_KAFKA_BROKERS` (feature `kafka`), transport defaults (3 partitions).
//! - `servicebus`: **the local server of the Service Bus REST protocol**
//!   (`tidings-servicebus-server`), started in this process on its own one-thread tokio
//!   runtime, on loopback, whenever the feature `servicebus` is on (no variable). It is
//!   not Azure: the figures say what the transport's request pattern costs against a fast
//!   local peer, not what Azure would sustain.
//!
//! Every cell (transport × concurrency × size) gets its own pair of buses in a fresh
//! namespace: a subscriber service whose one subscription has
//! [`Subscription::concurrency`] set to the cell's value (prefetch left at its default, at
//! least the concurrency), and a publisher service. One measured run:
//!
//! 1. the publisher calls `publish_batch` with 100 events a call, up to 4 calls in flight
//!    (each resolves once the transport confirmed its events), `N` events in all;
//! 2. the clock stops when the subscriber's handler has counted the `N`th event.
//!
//! Handling overlaps publishing; the figure is `N` / (first publish to last event
//! handled). The time the publisher alone took is printed too, so a cell limited by
//! publishing shows as such.
//!
//! **The handler's work.** Each handler awaits `tokio::time::sleep(1 ms)` — a stand-in for
//! a database or HTTP call that waits without using the CPU — then counts the event. This
//! is what makes concurrency mean something: with one handler at a time the subscription
//! cannot exceed 1 / (sleep time) events/s — tokio's timer has millisecond resolution, so
//! a 1 ms sleep takes about 2 ms (measured at the end of the run and printed with the
//! table as the "handler bound") — and with 16 it could reach 16 times that, so the curve shows
//! where the transport, not the handler, becomes the limit. A `no-work` row (concurrency
//! 1, a handler that only counts) gives the transport's own ceiling for comparison.
//!
//! Events are `ScalingEvent { seq, body }` in MessagePack (the default codec); `body` is
//! sized so the encoded event is 150, 4 096 or 65 536 bytes (printed at the start). The
//! envelope (headers, id, time) comes on top, as it does for every event.
//!
//! Runtime: tokio multi-thread, 2 workers, shared by the publisher and the subscriber.
//! Criterion: `iter_custom`, 10 samples, flat sampling, 1 s warm-up, 3 s measurement (a
//! slow cell runs longer: at least 11 runs), no plots, 10 000 bootstrap resamples (plots
//! and the default 100 000 took longer than the measurements on a loaded machine). `N` is
//! 1 000 (`TIDINGS_SCALING_EVENTS` overrides it); fewer make the transport's delivery
//! latency at the start of a run weigh on the figure (500 at concurrency 1 read ~10 %
//! below the handler bound on the brokers). The whole grid takes about 8 minutes. At the
//! end a markdown table gives, per cell, the median events/s of all its runs (criterion's
//! warm-up runs included), ready to paste.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tidings::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// The event: a sequence number and a body that sets its size.
#[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
#[event(name = "bench.scaling-sample", version = 1)]
struct ScalingEvent {
    seq: u64,
    body: String,
}

/// The topic of the bench.
#[derive(tidings::Topic)]
#[topic(name = "scaling")]
enum ScalingEvents {
    Sample(ScalingEvent),
}

const CONCURRENCY: [usize; 3] = [1, 4, 16];
const SIZES: [(&str, usize); 3] = [("150B", 150), ("4KiB", 4096), ("64KiB", 65536)];
const BATCH: usize = 100;
/// How many `publish_batch` calls are in flight at once.
const IN_FLIGHT: usize = 4;
/// How long one run may take before the bench gives up (events lost, broker stuck).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// What the handler does with each event.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// `tokio::time::sleep(1 ms)`, then count.
    Sleep1ms,
    /// Count only.
    None,
}

/// Counts handled events and wakes the run when the awaited one is in.
struct Counter {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl Counter {
    fn count(&self) {
        if self.seen.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }
}

async fn handle_sleeping(e: ScalingEvent, cx: Context<Counter>) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    std::hint::black_box(e);
    cx.state().count();
    Ok(())
}

async fn handle_counting(e: ScalingEvent, cx: Context<Counter>) -> Result<(), HandlerError> {
    std::hint::black_box(e);
    cx.state().count();
    Ok(())
}

/// A transport of the grid: its name and how a bus reaches it.
struct Target {
    name: &'static str,
    connect: Connect,
}

enum Connect {
    Memory(tidings::Memory),
    #[cfg_attr(
        not(any(feature = "rabbitmq", feature = "kafka", feature = "servicebus")),
        allow(dead_code)
    )]
    Url(String),
}

impl Connect {
    fn apply(&self, builder: tidings::BusBuilder) -> tidings::BusBuilder {
        match self {
            Connect::Memory(memory) => builder.transport(memory.clone()),
            Connect::Url(url) => builder.transport_url(url.clone()),
        }
    }
}

/// The variable `name`, or `None` after printing that the transport is skipped.
#[cfg_attr(not(any(feature = "rabbitmq", feature = "kafka")), allow(dead_code))]
fn broker_var(transport: &str, name: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        println!("scaling/{transport}: skipped, {name} is not set");
    }
    value
}

/// The transports to measure; `keep` holds what must live as long as the bench (the local
/// Service Bus server and its runtime).
fn targets(keep: &mut Vec<Box<dyn std::any::Any>>) -> Vec<Target> {
    #[cfg_attr(
        not(any(feature = "rabbitmq", feature = "kafka", feature = "servicebus")),
        allow(unused_mut)
    )]
    let mut targets = vec![Target {
        name: "memory",
        connect: Connect::Memory(tidings::Memory::new()),
    }];
    #[cfg(feature = "rabbitmq")]
    if let Some(url) = broker_var("rabbitmq", "TIDINGS_RABBITMQ_URL") {
        targets.push(Target {
            name: "rabbitmq",
            connect: Connect::Url(url),
        });
    }
    #[cfg(not(feature = "rabbitmq"))]
    println!("scaling/rabbitmq: skipped, feature `rabbitmq` is off");
    #[cfg(feature = "kafka")]
    if let Some(brokers) = broker_var("kafka", "TIDINGS_KAFKA_BROKERS") {
        targets.push(Target {
            name: "kafka",
            connect: Connect::Url(format!("kafka://{brokers}")),
        });
    }
    #[cfg(not(feature = "kafka"))]
    println!("scaling/kafka: skipped, feature `kafka` is off");
    #[cfg(feature = "servicebus")]
    {
        use std::net::{Ipv4Addr, SocketAddr};
        use tidings_servicebus_server::{Server, ServerConfig};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(Server::start(
                ServerConfig::new("scaling", "RootManageSharedAccessKey", "scaling-key"),
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ))
            .expect("start the local Service Bus server");
        let url = format!(
            "servicebus://scaling?key_name=RootManageSharedAccessKey&key=scaling-key&endpoint={}",
            server.endpoint()
        );
        keep.push(Box::new(server));
        keep.push(Box::new(rt));
        targets.push(Target {
            name: "servicebus-local",
            connect: Connect::Url(url),
        });
    }
    #[cfg(not(feature = "servicebus"))]
    {
        let _ = keep;
        println!("scaling/servicebus: skipped, feature `servicebus` is off");
    }
    targets
}

/// The body length that makes the encoded `ScalingEvent` `size` bytes.
fn body_for(size: usize) -> String {
    let mut len = size;
    loop {
        let event = ScalingEvent {
            seq: u64::MAX,
            body: "x".repeat(len),
        };
        let encoded = rmp_serde::to_vec_named(&event).unwrap().len();
        if encoded <= size || len == 0 {
            return event.body;
        }
        len -= (encoded - size).min(len);
    }
}

/// The buses of one cell.
struct Cell {
    publisher: Bus,
    subscriber: Bus,
    counter: Arc<Counter>,
    body: String,
}

impl Cell {
    async fn open(target: &Target, concurrency: usize, work: Work, body: String) -> Cell {
        let namespace = format!("scal-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let counter = Arc::new(Counter {
            seen: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            done: Notify::new(),
        });
        let subscription = Subscription::to::<ScalingEvents>().with_shared_state(counter.clone());
        let subscription = match work {
            Work::Sleep1ms => subscription.on(handle_sleeping),
            Work::None => subscription.on(handle_counting),
        }
        .concurrency(concurrency);
        let build = async {
            let subscriber = target
                .connect
                .apply(Bus::builder("scaling-sub").namespace(namespace.clone()))
                .subscribe(subscription)
                .build()
                .await
                .unwrap_or_else(|e| panic!("{}: subscriber bus: {e}", target.name));
            let publisher = target
                .connect
                .apply(Bus::builder("scaling-pub").namespace(namespace))
                .publishes::<ScalingEvents>()
                .build()
                .await
                .unwrap_or_else(|e| panic!("{}: publisher bus: {e}", target.name));
            (publisher, subscriber)
        };
        let (publisher, subscriber) = tokio::time::timeout(Duration::from_secs(60), build)
            .await
            .unwrap_or_else(|_| panic!("{}: the buses were not up within 60 s", target.name));
        let cell = Cell {
            publisher,
            subscriber,
            counter,
            body,
        };
        // A first round outside the measurement: consumer group joins, queue and
        // subscription creation, connection warm-up.
        cell.run(BATCH as u64).await;
        cell
    }

    /// Publish `n` events and wait until the handler counted the last; returns the time
    /// to the last handled and the time publishing took.
    async fn run(&self, n: u64) -> (Duration, Duration) {
        let c = &self.counter;
        c.target
            .store(c.seen.load(Ordering::Acquire) + n, Ordering::Release);
        let done = c.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let start = Instant::now();
        let work = async {
            let batches = (0..n).step_by(BATCH).map(|first| {
                let events = (first..n.min(first + BATCH as u64)).map(|seq| ScalingEvent {
                    seq,
                    body: self.body.clone(),
                });
                self.publisher.publish_batch(events)
            });
            let mut confirmed = futures::stream::iter(batches).buffer_unordered(IN_FLIGHT);
            while let Some(result) = confirmed.next().await {
                result.unwrap();
            }
            let published = start.elapsed();
            done.await;
            (start.elapsed(), published)
        };
        tokio::time::timeout(RUN_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{n} events not handled within {RUN_TIMEOUT:?} ({} seen)",
                    c.seen.load(Ordering::Acquire)
                )
            })
    }

    async fn close(self) {
        self.publisher.shutdown().await;
        self.subscriber.shutdown().await;
    }
}

/// One row of the final table.
struct Row {
    transport: &'static str,
    work: &'static str,
    concurrency: usize,
    size: &'static str,
    events_per_s: f64,
    published_per_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_cell(
    c: &mut Criterion,
    rt: &Runtime,
    target: &Target,
    (work, concurrency): (Work, usize),
    (size_name, size): (&'static str, usize),
    n: u64,
    rows: &mut Vec<Row>,
) {
    let work_name = match work {
        Work::Sleep1ms => "sleep-1ms",
        Work::None => "no-work",
    };
    let mut group = c.benchmark_group(format!("scaling/{}", target.name));
    group
        .throughput(Throughput::Elements(n))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .nresamples(10_000);
    let mut cell: Option<Cell> = None;
    let runs: Mutex<Vec<(Duration, Duration)>> = Mutex::new(Vec::new());
    let id = BenchmarkId::new(format!("{work_name}/c{concurrency}"), size_name);
    group.bench_function(id, |b| {
        let cell = cell.get_or_insert_with(|| {
            let opening = Instant::now();
            let cell = rt.block_on(Cell::open(target, concurrency, work, body_for(size)));
            println!(
                "scaling/{}: buses up and warm in {:.1} s",
                target.name,
                opening.elapsed().as_secs_f64()
            );
            cell
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let run = cell.run(n).await;
                    total += run.0;
                    runs.lock().unwrap().push(run);
                }
                total
            })
        })
    });
    group.finish();
    // Not run when criterion's filter left the cell out.
    if let Some(cell) = cell {
        let closing = Instant::now();
        rt.block_on(cell.close());
        println!(
            "scaling/{}: buses closed in {:.1} s",
            target.name,
            closing.elapsed().as_secs_f64()
        );
        let runs = runs.into_inner().unwrap();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        rows.push(Row {
            transport: target.name,
            work: work_name,
            concurrency,
            size: size_name,
            events_per_s: median(runs.iter().map(|r| rate(r.0)).collect()),
            published_per_s: median(runs.iter().map(|r| rate(r.1)).collect()),
        });
    }
}

/// How long `tokio::time::sleep(1 ms)` really takes on `rt` (mean of 200).
fn sleep_time(rt: &Runtime) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        start.elapsed() / 200
    })
}

fn print_table(rows: &[Row], n: u64, sleep: Duration) {
    let ms = sleep.as_secs_f64() * 1e3;
    println!(
        "\nScaling: {n} events a run, median of the runs of each cell (events/s); \
         a 1 ms sleep took {ms:.2} ms, so the handlers alone allow concurrency / {ms:.2} ms\n"
    );
    println!(
        "| transport | handler | concurrency | event size | events/s | \
         handler bound, events/s | publish alone, events/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let bound = match r.work {
            "no-work" => "-".to_string(),
            _ => format!("{:.0}", r.concurrency as f64 / sleep.as_secs_f64()),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.0} |",
            r.transport, r.work, r.concurrency, r.size, r.events_per_s, bound, r.published_per_s
        );
    }
}

fn main() {
    let n: u64 = std::env::var("TIDINGS_SCALING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, size) in SIZES {
        let encoded = rmp_serde::to_vec_named(&ScalingEvent {
            seq: u64::MAX,
            body: body_for(size),
        })
        .unwrap()
        .len();
        println!("scaling: event size {name}: {encoded} bytes encoded (MessagePack)");
    }
    let mut keep = Vec::new();
    let targets = targets(&mut keep);
    // Plots would take seconds per cell on a loaded machine; the table is the output.
    let mut c = Criterion::default().without_plots().configure_from_args();
    let mut rows = Vec::new();
    for target in &targets {
        bench_cell(&mut c, &rt, target, (Work::None, 1), SIZES[0], n, &mut rows);
        for concurrency in CONCURRENCY {
            for size in SIZES {
                let cell = (Work::Sleep1ms, concurrency);
                bench_cell(&mut c, &rt, target, cell, size, n, &mut rows);
            }
        }
    }
    c.final_summary();
    print_table(&rows, n, sleep_time(&rt));
    drop(targets);
    drop(keep);
}
