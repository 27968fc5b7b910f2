//! Raw rdkafka against tidings on Kafka, in the same run, with the same settings:
//! produce throughput, consume throughput, and end-to-end latency (p50/p99).
//!
//! ```text
//! TIDINGS_KAFKA_BROKERS=127.0.0.1:9092 cargo bench -p tidings-kafka --bench kafka
//! ```
//!
//! Both sides use one producer with `acks=all`, `enable.idempotence=true`,
//! `linger.ms=5`, and records of the same size with the same headers (the raw side sends
//! the header set a tidings envelope carries). Produce: 2 000 records sent, then every
//! acknowledgement awaited (`publish_batch` on the tidings side). Consume: 10 000 records
//! already in a 3-partition topic, read by a fresh consumer group, timed from the first
//! record to the last (so group joining is not counted); the raw consumer stores and
//! auto-commits offsets, tidings commits in order after each handler. Latency: one event
//! at a time, from the start of `publish` to the handler (raw: the consumer loop). Both
//! consumers use `fetch.wait.max.ms=10`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::{TopicSpec, Topology, Transport},
    Bus, Context, HandlerError, Subscription,
};
use tidings_kafka::{Kafka, KafkaConfig};
use tidings_macros::{Event, Topic};
use tokio::runtime::Runtime;
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

const PRODUCE_BATCH: u64 = 2_000;
const CONSUME_COUNT: u64 = 10_000;
const LATENCY_SAMPLES: u64 = 300;
const PARTITIONS: i32 = 3;

fn brokers() -> Option<String> {
    std::env::var("TIDINGS_KAFKA_BROKERS").ok()
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        sent_us: now_us(),
        body: "x".repeat(64),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// How long a fetch may wait for records, for both sides: tansu holds a fetch for the
/// whole wait even when records arrive meanwhile, so librdkafka's default (500 ms) would
/// be all the latency measures.
const FETCH_WAIT_MS: &str = "10";

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .partitions(PARTITIONS)
        .linger(Duration::from_millis(5))
        .property("fetch.wait.max.ms", FETCH_WAIT_MS)
}

/// The raw producer, set up as tidings sets up its own.
fn raw_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("max.in.flight.requests.per.connection", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap()
}

fn raw_consumer(brokers: &str, group: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// A header set and payload like the ones tidings writes for a `Tick`.
fn raw_record_parts(bus: &Bus, n: u64) -> (OwnedHeaders, Vec<u8>) {
    let env = bus.envelope(&tick(n), Default::default()).unwrap();
    let mut headers = OwnedHeaders::new();
    for (k, v) in env.attributes() {
        headers = headers.insert(Header {
            key: k.as_ref(),
            value: Some(v.as_bytes()),
        });
    }
    (headers, env.payload.to_vec())
}

async fn create_topic(kafka: &Kafka, topic: &str) {
    let mut topology = Topology::new("bench");
    topology.publishes.push(TopicSpec::new(topic, vec![]));
    kafka.provision(&topology).await.unwrap();
}

async fn raw_produce(
    producer: &FutureProducer,
    topic: &str,
    parts: &(OwnedHeaders, Vec<u8>),
    count: u64,
) {
    let mut pending = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let record = FutureRecord::<str, [u8]>::to(topic)
            .payload(&parts.1)
            .headers(parts.0.clone());
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

#[derive(Default)]
struct Figures {
    produce: Mutex<[Vec<f64>; 2]>,
    consume: Mutex<[Vec<f64>; 2]>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn bench(c: &mut Criterion) {
    let Some(brokers) = brokers() else {
        println!(
            "skipped: the Kafka benchmark needs TIDINGS_KAFKA_BROKERS (scripts/test starts tansu)"
        );
        return;
    };
    let rt = Runtime::new().unwrap();
    let run = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let figures = Arc::new(Figures::default());

    let kafka = Kafka::new(config(&brokers)).unwrap();
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
    let parts = raw_record_parts(&publisher, 0);
    let raw_topic = format!("{run}.raw");
    rt.block_on(create_topic(&kafka, &raw_topic));

    // Produce throughput.
    let mut group = c.benchmark_group("kafka_produce");
    group.throughput(Throughput::Elements(PRODUCE_BATCH));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function(BenchmarkId::new("raw_rdkafka", PRODUCE_BATCH), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    raw_produce(&raw, &raw_topic, &parts, PRODUCE_BATCH).await;
                    figures.produce.lock().unwrap()[0]
                        .push(PRODUCE_BATCH as f64 / t.elapsed().as_secs_f64());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function(BenchmarkId::new("tidings", PRODUCE_BATCH), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    publisher
                        .publish_batch((0..PRODUCE_BATCH).map(tick))
                        .await
                        .unwrap();
                    figures.produce.lock().unwrap()[1]
                        .push(PRODUCE_BATCH as f64 / t.elapsed().as_secs_f64());
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    // Consume throughput: fill one topic per side once, then read it with fresh groups.
    let consume_raw_topic = format!("{run}.consume-raw");
    rt.block_on(async {
        create_topic(&kafka, &consume_raw_topic).await;
        raw_produce(&raw, &consume_raw_topic, &parts, CONSUME_COUNT).await;
    });
    let consume_ns = format!("{run}-c");
    let filler = rt
        .block_on(
            Bus::builder("filler")
                .transport(kafka.clone())
                .namespace(&consume_ns)
                .publishes::<BenchEvents>()
                .build(),
        )
        .unwrap();
    rt.block_on(async {
        for chunk in 0..(CONSUME_COUNT / 1000) {
            filler
                .publish_batch((chunk * 1000..(chunk + 1) * 1000).map(tick))
                .await
                .unwrap();
        }
    });
    let mut group = c.benchmark_group("kafka_consume");
    group.throughput(Throughput::Elements(CONSUME_COUNT));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function(BenchmarkId::new("raw_rdkafka", CONSUME_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let consumer = raw_consumer(
                        &brokers,
                        &format!("raw-{}", uuid::Uuid::new_v4()),
                        &consume_raw_topic,
                    );
                    let mut first = None;
                    let mut seen = 0u64;
                    while seen < CONSUME_COUNT {
                        let m = consumer.recv().await.unwrap();
                        std::hint::black_box(m.payload());
                        consumer.store_offset_from_message(&m).unwrap();
                        first.get_or_insert_with(Instant::now);
                        seen += 1;
                    }
                    let took = first.unwrap().elapsed();
                    figures.consume.lock().unwrap()[0]
                        .push((CONSUME_COUNT - 1) as f64 / took.as_secs_f64());
                    total += took;
                }
                total
            })
        })
    });
    group.bench_function(BenchmarkId::new("tidings", CONSUME_COUNT), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let count = Arc::new(AtomicU64::new(0));
                    let first = Arc::new(Mutex::new(None::<Instant>));
                    let done = Arc::new(Notify::new());
                    let (cnt, fst, dn) = (count.clone(), first.clone(), done.clone());
                    let consumer = Bus::builder("reader")
                        .transport(Kafka::new(config(&brokers)).unwrap())
                        .namespace(&consume_ns)
                        .subscribe(
                            Subscription::to::<BenchEvents>()
                                .named(format!(
                                    "reader-{}",
                                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                                ))
                                .on(move |e: Tick, _cx: Context| {
                                    let (cnt, fst, dn) = (cnt.clone(), fst.clone(), dn.clone());
                                    async move {
                                        std::hint::black_box(e.n);
                                        fst.lock().unwrap().get_or_insert_with(Instant::now);
                                        if cnt.fetch_add(1, Ordering::SeqCst) + 1 == CONSUME_COUNT {
                                            dn.notify_one();
                                        }
                                        Ok::<(), HandlerError>(())
                                    }
                                }),
                        )
                        .build()
                        .await
                        .unwrap();
                    done.notified().await;
                    let took = first.lock().unwrap().unwrap().elapsed();
                    figures.consume.lock().unwrap()[1]
                        .push((CONSUME_COUNT - 1) as f64 / took.as_secs_f64());
                    total += took;
                    consumer.shutdown().await;
                }
                total
            })
        })
    });
    group.finish();

    // End-to-end latency, one event at a time.
    let (raw_hist, tidings_hist) = rt.block_on(latency(&brokers, &run, &kafka, &raw, &publisher));

    let produce = figures.produce.lock().unwrap();
    let consume = figures.consume.lock().unwrap();
    let (pr, pt) = (median(&produce[0]), median(&produce[1]));
    let (cr, ct) = (median(&consume[0]), median(&consume[1]));
    println!();
    println!("| measure | raw rdkafka | tidings | tidings / raw |");
    println!("|---|---|---|---|");
    println!(
        "| produce, records/s (median) | {pr:.0} | {pt:.0} | {:.2} |",
        pt / pr
    );
    println!(
        "| consume, records/s (median) | {cr:.0} | {ct:.0} | {:.2} |",
        ct / cr
    );
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let r = raw_hist.value_at_quantile(q) as f64 / 1000.0;
        let t = tidings_hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| end-to-end latency {name}, ms | {r:.2} | {t:.2} | {:.2} |",
            t / r
        );
    }
    rt.block_on(publisher.shutdown());
    rt.block_on(filler.shutdown());
}

/// Latency histograms in microseconds: raw, then tidings.
async fn latency(
    brokers: &str,
    run: &str,
    kafka: &Kafka,
    raw: &FutureProducer,
    publisher: &Bus,
) -> (Histogram<u64>, Histogram<u64>) {
    // Raw: a consumer loop on its own task, measuring against the send time in a header.
    let topic = format!("{run}.latency-raw");
    create_topic(kafka, &topic).await;
    let consumer = raw_consumer(brokers, &format!("lat-{run}"), &topic);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader = tokio::spawn(async move {
        loop {
            let m = consumer.recv().await.unwrap();
            let sent: u64 = std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            consumer.store_offset_from_message(&m).unwrap();
            if tx.send(now_us().saturating_sub(sent)).is_err() {
                return;
            }
        }
    });
    // Warm up until the consumer has its partitions.
    let mut raw_hist = Histogram::<u64>::new(3).unwrap();
    let topic_ref = &topic;
    let send_raw = |sent: u64| {
        let payload = sent.to_string();
        async move {
            raw.send(
                FutureRecord::<str, str>::to(topic_ref).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
    };
    send_raw(now_us()).await;
    rx.recv().await.unwrap();
    for _ in 0..LATENCY_SAMPLES {
        send_raw(now_us()).await;
        raw_hist.record(rx.recv().await.unwrap().max(1)).unwrap();
    }
    reader.abort();

    // tidings: a fresh topic with its own publisher and subscriber.
    let _ = publisher;
    let lat_ns = format!("{run}-lat");
    let lat_publisher = Bus::builder("latency")
        .transport(Kafka::new(config(brokers)).unwrap())
        .namespace(&lat_ns)
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let tx = Arc::new(tx);
    let subscriber = Bus::builder("latency")
        .transport(Kafka::new(config(brokers)).unwrap())
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

criterion_group!(benches, bench);
criterion_main!(benches);
