//! tidings on Kafka against raw rdkafka, in the same run, with the same guarantees.
//!
//! ```text
//! scripts/services/tansu.sh start && eval "$(scripts/services/tansu.sh env)"
//! cargo bench -p tidings-kafka --bench kafka -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Both sides use the same producer settings: `acks=all`, `enable.idempotence=true`,
//! `linger.ms` and 5 requests in flight per connection as tidings' `KafkaConfig` defaults
//! set them; every send waits for its delivery report. Both consumers fetch with tidings'
//! default `fetch.wait.max.ms` ([`FETCH_WAIT_MS`]), store an offset only after the event
//! was handled, and commit every 500 ms (tidings' default `commit_interval`; the raw
//! consumer with librdkafka's auto-commit of stored offsets). The event is a `Tick` whose
//! MessagePack payload (rmp-serde, named fields, the tidings default codec) is about 150
//! bytes; the raw side sends the same payload, encoded per event, with the header set of
//! a tidings envelope (built once and cloned per record, so the raw side does not make a
//! fresh id and timestamp per event as tidings does). Topics have 3 partitions.
//!
//! - `kafka_publish`: [`PUBLISH_COUNT`] events, [`IN_FLIGHT`] in flight at a time
//!   (`buffer_unordered` on one task). tidings: `bus.publish(event)` per event. Raw:
//!   `rmp_serde` encoding plus `FutureProducer::send` per event.
//! - `kafka_publish_batch`: tidings only, [`BATCH`]-event rounds: one
//!   `bus.publish_batch` of [`BATCH`] events against [`BATCH`] single `bus.publish`
//!   calls all in flight at once.
//! - `kafka_end_to_end`: [`E2E_COUNT`] events published with [`IN_FLIGHT`] in flight to
//!   a running consumer, timed from the first publish to the last event handled. tidings:
//!   a subscription with the default settings (concurrency 1, prefetch 100) whose handler
//!   counts the decoded events. Raw: a `StreamConsumer` loop that decodes each payload
//!   with `rmp_serde` into the same struct, counts it, then stores its offset. The
//!   consumers joined their group and were warmed up before the timing starts.
//! - latency: one event at a time, from just before the send to the handler (raw: the
//!   consumer loop after decoding), [`LATENCY_SAMPLES`] samples, HdrHistogram.
//!
//! Criterion uses flat sampling with 10 samples per measurement; a table of the medians of
//! all iterations (warm-up included) with the ratios tidings / raw is printed at the end.
//! The run's topics are deleted at the end (the test broker keeps records in memory).

use std::collections::BTreeMap;
use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::{TopicSpec, Topology, Transport},
    Bus, Context, HandlerError, Subscription,
};
use tidings_kafka::{Kafka, KafkaConfig};
use tidings_macros::{Event, Topic};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "bench.tick", version = 1)]
struct Tick {
    n: u64,
    sent_us: u64,
    body: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "bench")]
enum BenchEvents {
    Tick(Tick),
}

/// Events per `kafka_publish` iteration.
const PUBLISH_COUNT: u64 = 10_000;
/// Events per `kafka_end_to_end` iteration.
const E2E_COUNT: u64 = 20_000;
/// Sends in flight at a time, both sides.
const IN_FLIGHT: usize = 1_000;
/// Events of one `publish_batch` round.
const BATCH: u64 = 1_000;
/// Rounds per `kafka_publish_batch` iteration.
const BATCH_ROUNDS: u64 = 5;
const LATENCY_SAMPLES: u64 = 200;
const PARTITIONS: i32 = 3;
/// tidings' default `fetch.wait.max.ms` (see `subscriber.rs`), given to the raw consumer.
const FETCH_WAIT_MS: &str = "25";
/// tidings' default `linger.ms` (`KafkaConfig::linger`), given to the raw producer.
const LINGER_MS: &str = "5";

fn tick(n: u64) -> Tick {
    Tick {
        n,
        sent_us: now_us(),
        body: "x".repeat(120),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The raw producer, set up as tidings sets up its own.
fn raw_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", LINGER_MS)
        .set("max.in.flight.requests.per.connection", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap()
}

/// A raw consumer in a fresh group that stores offsets after handling and auto-commits
/// the stored ones every 500 ms.
fn raw_consumer(brokers: &str, group: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// The raw consumer loop: decode, handle, then store the offset.
fn spawn_raw_reader(
    consumer: StreamConsumer,
    handle: impl Fn(Tick) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let m = consumer.recv().await.unwrap();
            let tick: Tick = rmp_serde::from_slice(m.payload().unwrap_or_default()).unwrap();
            handle(tick);
            consumer.store_offset_from_message(&m).unwrap();
        }
    })
}

/// The header set tidings writes for a `Tick`.
fn raw_headers(bus: &Bus) -> OwnedHeaders {
    let env = bus.envelope(&tick(0), Default::default()).unwrap();
    assert_eq!(env.content_type, "application/msgpack");
    let mut headers = OwnedHeaders::new();
    for (k, v) in env.attributes() {
        headers = headers.insert(Header {
            key: k.as_ref(),
            value: Some(v.as_bytes()),
        });
    }
    headers
}

async fn create_topic(kafka: &Kafka, topic: &str) {
    let mut topology = Topology::new("bench");
    topology.publishes.push(TopicSpec::new(topic, vec![]));
    kafka.provision(&topology).await.unwrap();
}

/// `count` raw sends, `IN_FLIGHT` at a time, each awaiting its delivery report.
async fn raw_publish(producer: &FutureProducer, topic: &str, headers: &OwnedHeaders, count: u64) {
    futures::stream::iter(0..count)
        .map(|n| async move {
            let payload = rmp_serde::to_vec_named(&tick(n)).unwrap();
            producer
                .send(
                    FutureRecord::<str, [u8]>::to(topic)
                        .payload(&payload)
                        .headers(headers.clone()),
                    Timeout::Never,
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        })
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|()| ready(Ok(())))
        .await
        .unwrap();
}

/// `count` tidings publishes, `in_flight` at a time.
async fn tidings_publish(bus: &Bus, count: u64, in_flight: usize) {
    futures::stream::iter(0..count)
        .map(|n| bus.publish(tick(n)))
        .buffer_unordered(in_flight)
        .try_for_each(|_| ready(Ok(())))
        .await
        .unwrap();
}

/// Counts handled events and wakes the bench once `target` is reached.
#[derive(Default)]
struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl Counter {
    fn handled(&self) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }

    /// Expect `more` events from now on.
    fn expect(&self, more: u64) {
        self.target
            .store(self.count.load(Ordering::SeqCst) + more, Ordering::SeqCst);
    }
}

/// Events per second of every iteration, per measurement.
#[derive(Default)]
struct Figures(Mutex<BTreeMap<&'static str, Vec<f64>>>);

impl Figures {
    fn add(&self, what: &'static str, events: u64, took: Duration) {
        self.0
            .lock()
            .unwrap()
            .entry(what)
            .or_default()
            .push(events as f64 / took.as_secs_f64());
    }

    fn median(&self, what: &str) -> f64 {
        let mut v = self
            .0
            .lock()
            .unwrap()
            .get(what)
            .cloned()
            .unwrap_or_default();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn bench(c: &mut Criterion) {
    let Ok(brokers) = std::env::var("TIDINGS_KAFKA_BROKERS") else {
        println!(
            "skipped: the Kafka benchmark needs TIDINGS_KAFKA_BROKERS (scripts/test starts tansu)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let figures = Figures::default();
    let config = || KafkaConfig::new(&brokers).partitions(PARTITIONS);

    let kafka = Kafka::new(config()).unwrap();
    let publisher = rt
        .block_on(
            Bus::builder("bench")
                .transport(kafka.clone())
                .namespace(&run)
                .publishes::<BenchEvents>()
                .build(),
        )
        .unwrap();
    let raw = raw_producer(&brokers);
    let headers = raw_headers(&publisher);
    let raw_topic = format!("{run}.raw");
    rt.block_on(create_topic(&kafka, &raw_topic));

    // Per-event publish, many in flight.
    let mut group = c.benchmark_group("kafka_publish");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(PUBLISH_COUNT));
    group.bench_function(BenchmarkId::new("raw_rdkafka", PUBLISH_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    raw_publish(&raw, &raw_topic, &headers, PUBLISH_COUNT).await;
                    figures.add("publish/raw", PUBLISH_COUNT, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.bench_function(BenchmarkId::new("tidings", PUBLISH_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    tidings_publish(&publisher, PUBLISH_COUNT, IN_FLIGHT).await;
                    figures.add("publish/tidings", PUBLISH_COUNT, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();

    // publish_batch against single publishes all in flight.
    let mut group = c.benchmark_group("kafka_publish_batch");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(BATCH * BATCH_ROUNDS));
    group.bench_function(BenchmarkId::new("singles_in_flight", BATCH), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for _ in 0..BATCH_ROUNDS {
                        tidings_publish(&publisher, BATCH, BATCH as usize).await;
                    }
                    figures.add("batch/singles", BATCH * BATCH_ROUNDS, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.bench_function(BenchmarkId::new("publish_batch", BATCH), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for _ in 0..BATCH_ROUNDS {
                        publisher.publish_batch((0..BATCH).map(tick)).await.unwrap();
                    }
                    figures.add("batch/batch", BATCH * BATCH_ROUNDS, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();

    // End to end, to consumers that are already running.
    let e2e_raw_topic = format!("{run}.e2e-raw");
    let raw_count = Arc::new(Counter::default());
    rt.block_on(create_topic(&kafka, &e2e_raw_topic));
    let raw_reader = {
        let _runtime = rt.enter();
        let consumer = raw_consumer(&brokers, &format!("{run}-e2e-raw"), &e2e_raw_topic);
        let count = raw_count.clone();
        spawn_raw_reader(consumer, move |t| {
            std::hint::black_box(t.n);
            count.handled();
        })
    };
    let e2e_ns = format!("{run}-e2e");
    let e2e_publisher = rt
        .block_on(
            Bus::builder("bench")
                .transport(Kafka::new(config()).unwrap())
                .namespace(&e2e_ns)
                .publishes::<BenchEvents>()
                .build(),
        )
        .unwrap();
    let tidings_count = Arc::new(Counter::default());
    let count = tidings_count.clone();
    let subscriber = rt
        .block_on(
            Bus::builder("reader")
                .transport(Kafka::new(config()).unwrap())
                .namespace(&e2e_ns)
                .subscribe(
                    Subscription::to::<BenchEvents>().on(move |e: Tick, _cx: Context| {
                        std::hint::black_box(e.n);
                        count.handled();
                        ready(Ok::<(), HandlerError>(()))
                    }),
                )
                .build(),
        )
        .unwrap();
    // Warm up: both consumers have their partitions once one event went through.
    rt.block_on(async {
        raw_count.expect(1);
        raw_publish(&raw, &e2e_raw_topic, &headers, 1).await;
        raw_count.done.notified().await;
        tidings_count.expect(1);
        e2e_publisher.publish(tick(0)).await.unwrap();
        tidings_count.done.notified().await;
    });
    let mut group = c.benchmark_group("kafka_end_to_end");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(E2E_COUNT));
    group.bench_function(BenchmarkId::new("raw_rdkafka", E2E_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    raw_count.expect(E2E_COUNT);
                    let t = Instant::now();
                    raw_publish(&raw, &e2e_raw_topic, &headers, E2E_COUNT).await;
                    raw_count.done.notified().await;
                    figures.add("e2e/raw", E2E_COUNT, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.bench_function(BenchmarkId::new("tidings", E2E_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tidings_count.expect(E2E_COUNT);
                    let t = Instant::now();
                    tidings_publish(&e2e_publisher, E2E_COUNT, IN_FLIGHT).await;
                    tidings_count.done.notified().await;
                    figures.add("e2e/tidings", E2E_COUNT, t.elapsed());
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    raw_reader.abort();
    rt.block_on(subscriber.shutdown());
    rt.block_on(e2e_publisher.shutdown());

    let (raw_hist, tidings_hist) =
        rt.block_on(latency(&brokers, &run, &kafka, &raw, &headers, config()));

    println!();
    println!("| measure | raw rdkafka | tidings | tidings / raw |");
    println!("|---|---|---|---|");
    for (name, raw, tidings) in [
        ("publish, events/s", "publish/raw", "publish/tidings"),
        ("end to end, events/s", "e2e/raw", "e2e/tidings"),
    ] {
        let (r, t) = (figures.median(raw), figures.median(tidings));
        println!("| {name} (median) | {r:.0} | {t:.0} | {:.2} |", t / r);
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let r = raw_hist.value_at_quantile(q) as f64 / 1000.0;
        let t = tidings_hist.value_at_quantile(q) as f64 / 1000.0;
        println!("| latency {name}, ms | {r:.2} | {t:.2} | {:.2} |", t / r);
    }
    let (s, b) = (
        figures.median("batch/singles"),
        figures.median("batch/batch"),
    );
    println!();
    println!("| tidings | 1,000 singles in flight | publish_batch of 1,000 | batch / singles |");
    println!("|---|---|---|---|");
    println!("| events/s (median) | {s:.0} | {b:.0} | {:.2} |", b / s);

    rt.block_on(publisher.shutdown());
    rt.block_on(delete_run_topics(&brokers, &run));
}

/// Latency histograms in microseconds: raw, then tidings.
async fn latency(
    brokers: &str,
    run: &str,
    kafka: &Kafka,
    raw: &FutureProducer,
    headers: &OwnedHeaders,
    config: KafkaConfig,
) -> (Histogram<u64>, Histogram<u64>) {
    // Raw: a consumer loop on its own task, measuring against the send time in the event.
    let topic = format!("{run}.latency-raw");
    create_topic(kafka, &topic).await;
    let consumer = raw_consumer(brokers, &format!("{run}-lat-raw"), &topic);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader = spawn_raw_reader(consumer, move |t| {
        let _ = tx.send(now_us().saturating_sub(t.sent_us));
    });
    let mut raw_hist = Histogram::<u64>::new(3).unwrap();
    // Warm up until the consumer has its partitions.
    raw_publish(raw, &topic, headers, 1).await;
    rx.recv().await.unwrap();
    for _ in 0..LATENCY_SAMPLES {
        raw_publish(raw, &topic, headers, 1).await;
        raw_hist.record(rx.recv().await.unwrap().max(1)).unwrap();
    }
    reader.abort();

    // tidings: a fresh topic with its own publisher and subscriber.
    let lat_ns = format!("{run}-lat");
    let lat_publisher = Bus::builder("latency")
        .transport(Kafka::new(config.clone()).unwrap())
        .namespace(&lat_ns)
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let tx = Arc::new(tx);
    let subscriber = Bus::builder("latency")
        .transport(Kafka::new(config).unwrap())
        .namespace(&lat_ns)
        .subscribe(Subscription::to::<BenchEvents>().with_shared_state(tx).on(
            |e: Tick, cx: Context<tokio::sync::mpsc::UnboundedSender<u64>>| async move {
                let _ = cx.state().send(now_us().saturating_sub(e.sent_us));
                Ok::<(), HandlerError>(())
            },
        ))
        .build()
        .await
        .unwrap();
    // Warm up until the subscriber has its partitions.
    lat_publisher.publish(tick(0)).await.unwrap();
    rx.recv().await.unwrap();
    let mut tidings_hist = Histogram::<u64>::new(3).unwrap();
    for n in 0..LATENCY_SAMPLES {
        lat_publisher.publish(tick(n)).await.unwrap();
        tidings_hist
            .record(rx.recv().await.unwrap().max(1))
            .unwrap();
    }
    subscriber.shutdown().await;
    lat_publisher.shutdown().await;
    (raw_hist, tidings_hist)
}

/// Delete every topic of this run: the test broker keeps records in memory.
async fn delete_run_topics(brokers: &str, run: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let names: Vec<String> = match admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
        Ok(m) => m
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.starts_with(run))
            .collect(),
        Err(e) => {
            println!("listing the run's topics failed: {e}");
            return;
        }
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(e) = admin.delete_topics(&names, &AdminOptions::new()).await {
        println!("deleting the run's topics failed: {e}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
