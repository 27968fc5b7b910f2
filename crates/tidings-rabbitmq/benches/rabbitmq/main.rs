//! Raw lapin against tidings on RabbitMQ, in the same run with the same settings: a
//! durable queue bound to a durable topic exchange, persistent messages, publisher
//! confirms with 1000 in flight, prefetch 1000, batched acks, MessagePack payloads.
//!
//! ```text
//! TIDINGS_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo bench -p tidings-rabbitmq --bench rabbitmq
//! ```
//!
//! - `publish/*`: N events published as one batch (raw: sent in a sliding window of 1000
//!   unconfirmed, then every confirm awaited; tidings: `Bus::publish_batch`, whose
//!   transport keeps the same window), throughput in events/s.
//! - `consume/*`: N events waiting in the queue, consumed and decoded until all are
//!   acknowledged (raw: a spawned task, like a bus's consumer loop, with `basic.ack
//!   multiple` every 100 deliveries; tidings: a typed handler on a subscription with
//!   prefetch 1000, acks batched by the transport).
//! - `end_to_end/*`: a consumer running (raw: the loop of `consume`, started untimed;
//!   tidings: a bus with the typed handler, built untimed), timed from the first publish
//!   of N events (raw: the sliding window of `publish`; tidings: `publish_batch`, the
//!   transport's window of the same size) until the consumer has handled the last: the
//!   same guarantees on both sides (durable queue, persistent messages, confirms,
//!   prefetch 1000, manual acks after handling).
//! - `batch/*`: 1000 events as one `publish_batch` against 1000 `publish` calls all in
//!   flight at once (`join_all`), both confirmed; raw lapin's sliding window for the same
//!   1000 as a reference.
//! - `stream/*`: 10 batches of 1000 (`publish_batch`) with 1, 2 or 4 batches in flight
//!   at once, against raw lapin sending the 10 000 in one sliding window: whether the
//!   confirm window stays full from one batch to the next.
//! - paired rounds (printed after the groups; `TIDINGS_BENCH_ROUNDS`, default 6, 0 to
//!   skip): the publish and consume workloads alternating raw and tidings.
//! - end to end latency (printed after the groups): one publisher sending events one at a time
//!   (each confirmed) while a consumer runs; the latency from just before the publish
//!   to the handler, recorded in an HDR histogram, p50 and p99.
//!
//! N defaults to 10 000 (`TIDINGS_BENCH_EVENTS`); `TIDINGS_BENCH_LATENCY=0` leaves the
//! latency part out (for profiling one group with `--profile-time`). Without `TIDINGS_RABBITMQ_URL` the
//! benchmark prints a line and does nothing.

mod ours;
mod raw;
mod throughput;

use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use lapin::options::ConfirmSelectOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tidings_core::Bus;
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
use tokio::runtime::Runtime;

use ours::{counter, tick, tidings_consumer, tidings_end_to_end, tidings_publisher};
use raw::{purge, raw_consume, raw_declare, raw_end_to_end, raw_headers, raw_publish, side, Side};
use throughput::{
    raw_publish_n, raw_throughput, tidings_publish_n, tidings_stream, tidings_throughput,
};

const WINDOW: usize = 1000;
const PREFETCH: u16 = 1000;
const ACK_EVERY: u64 = 100;
/// The batch of the `batch` and `stream` groups.
const BATCH: u64 = 1000;
/// Batches in the `stream` group.
const BATCHES: u64 = 10;

fn events() -> u64 {
    std::env::var("TIDINGS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn ns() -> String {
    format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// One timed round of each kind; the untimed setup and cleanup around it.
struct Rounds<'a> {
    url: &'a str,
    conn: &'a Connection,
    raw_channel: &'a Channel,
    raw_side: &'a Side,
    headers: &'a FieldTable,
    publisher: &'a Bus,
    tidings_ns: &'a str,
    tidings_side: &'a Side,
    n: u64,
}

/// Wall and CPU time of a measured part.
type Cost = (Duration, Duration);

/// Start measuring: the wall clock and the process CPU time now.
fn meter() -> (Instant, Duration) {
    (Instant::now(), cpu_time())
}

fn cost((start, cpu): (Instant, Duration)) -> Cost {
    (start.elapsed(), cpu_time().saturating_sub(cpu))
}

impl Rounds<'_> {
    async fn raw_publish(&self) -> Cost {
        let m = meter();
        raw_publish(self.raw_channel, self.raw_side, self.headers, self.n).await;
        let c = cost(m);
        purge(self.conn, self.raw_side).await;
        c
    }

    async fn tidings_publish(&self) -> Cost {
        let m = meter();
        self.publisher
            .publish_batch((0..self.n).map(tick))
            .await
            .unwrap();
        let c = cost(m);
        purge(self.conn, self.tidings_side).await;
        c
    }

    async fn raw_consume(&self) -> Cost {
        raw_publish(self.raw_channel, self.raw_side, self.headers, self.n).await;
        let m = meter();
        raw_consume(self.conn, self.raw_side, self.n).await;
        cost(m)
    }

    async fn tidings_consume(&self) -> Cost {
        self.publisher
            .publish_batch((0..self.n).map(tick))
            .await
            .unwrap();
        let transport = RabbitMq::connect(RabbitMqConfig::new(self.url))
            .await
            .unwrap();
        let counter = counter(self.n, false);
        let m = meter();
        let bus = tidings_consumer(transport, self.tidings_ns, counter.clone()).await;
        counter.done.notified().await;
        let c = cost(m);
        bus.shutdown().await;
        c
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time this process used so far (user + system), from /proc; zero elsewhere.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (which may hold spaces) start after ") ";
    // utime and stime, fields 14 and 15 of the line, are 12th and 13th of those.
    let rest = stat.rsplit_once(") ").map(|(_, f)| f).unwrap_or("");
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Alternate raw and tidings rounds (order swapped every round) and report the median
/// of the per-round throughput ratios, robust against a machine whose load changes, and
/// the client CPU time per event.
async fn paired(r: &Rounds<'_>, rounds: usize) {
    let mut publish = Vec::new();
    let mut consume = Vec::new();
    let (mut rp, mut tp, mut rc, mut tc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Client CPU of: raw publish, tidings publish, raw consume, tidings consume.
    let mut cpu = [Duration::ZERO; 4];
    for i in 0..rounds {
        let (raw_p, ours_p, raw_c, ours_c) = if i.is_multiple_of(2) {
            let a = r.raw_publish().await;
            let b = r.tidings_publish().await;
            let c = r.raw_consume().await;
            let d = r.tidings_consume().await;
            (a, b, c, d)
        } else {
            let b = r.tidings_publish().await;
            let a = r.raw_publish().await;
            let d = r.tidings_consume().await;
            let c = r.raw_consume().await;
            (a, b, c, d)
        };
        for (k, (_, used)) in [raw_p, ours_p, raw_c, ours_c].iter().enumerate() {
            cpu[k] += *used;
        }
        let (raw_p, ours_p, raw_c, ours_c) = (raw_p.0, ours_p.0, raw_c.0, ours_c.0);
        publish.push(raw_p.as_secs_f64() / ours_p.as_secs_f64());
        consume.push(raw_c.as_secs_f64() / ours_c.as_secs_f64());
        let rate = |d: Duration| r.n as f64 / d.as_secs_f64();
        rp.push(rate(raw_p));
        tp.push(rate(ours_p));
        rc.push(rate(raw_c));
        tc.push(rate(ours_c));
    }
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / (rounds as f64 * r.n as f64);
    println!(
        "paired/{rounds} rounds of {} events, raw and tidings alternating (median events/s):",
        r.n
    );
    println!(
        "  publish  raw_lapin {:>8.0}  tidings {:>8.0}  ratio {:.3}",
        median(rp),
        median(tp),
        median(publish)
    );
    println!(
        "  consume  raw_lapin {:>8.0}  tidings {:>8.0}  ratio {:.3}",
        median(rc),
        median(tc),
        median(consume)
    );
    println!(
        "  client CPU per event (this process: lapin's IO, tidings or the raw loop, decoding):"
    );
    println!(
        "    publish  raw_lapin {:.1} µs  tidings {:.1} µs",
        per_event(cpu[0]),
        per_event(cpu[1])
    );
    println!(
        "    consume  raw_lapin {:.1} µs  tidings {:.1} µs",
        per_event(cpu[2]),
        per_event(cpu[3])
    );
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("TIDINGS_RABBITMQ_URL") else {
        println!("skipped: TIDINGS_RABBITMQ_URL is not set; nothing to benchmark");
        return;
    };
    let rt = Runtime::new().unwrap();
    let n = events();
    let conn = rt.block_on(async {
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("TIDINGS_RABBITMQ_URL is set but the broker is unreachable")
    });
    let headers = raw_headers();
    let raw_ns = ns();
    let raw_side = side(&raw_ns);
    let tidings_ns = ns();
    let tidings_side = side(&tidings_ns);
    let (raw_channel, publisher) = rt.block_on(async {
        let channel = conn.create_channel().await.unwrap();
        raw_declare(&channel, &raw_side).await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        // Declares the tidings side's exchange, queue and binding.
        let reader = RabbitMq::from_url(&url).unwrap();
        let bus = tidings_consumer(reader, &tidings_ns, counter(u64::MAX, false)).await;
        bus.shutdown().await;
        (channel, tidings_publisher(&url, &tidings_ns).await)
    });

    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("raw_lapin", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (channel, side, headers, conn) = (&raw_channel, &raw_side, &headers, &conn);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    raw_publish(channel, side, headers, n).await;
                    total += start.elapsed();
                    purge(conn, side).await;
                }
                total
            }
        })
    });
    group.bench_function("tidings", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (publisher, side, conn) = (&publisher, &tidings_side, &conn);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    publisher.publish_batch((0..n).map(tick)).await.unwrap();
                    total += start.elapsed();
                    purge(conn, side).await;
                }
                total
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("consume");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("raw_lapin", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (channel, side, headers, conn) = (&raw_channel, &raw_side, &headers, &conn);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    raw_publish(channel, side, headers, n).await;
                    total += raw_consume(conn, side, n).await;
                }
                total
            }
        })
    });
    group.bench_function("tidings", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (publisher, url, ns) = (&publisher, &url, &tidings_ns);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    publisher.publish_batch((0..n).map(tick)).await.unwrap();
                    let transport = RabbitMq::connect(RabbitMqConfig::new(url.as_str()))
                        .await
                        .unwrap();
                    let counter = counter(n, false);
                    let start = Instant::now();
                    let bus = tidings_consumer(transport, ns, counter.clone()).await;
                    counter.done.notified().await;
                    total += start.elapsed();
                    bus.shutdown().await;
                }
                total
            }
        })
    });
    group.finish();

    throughput_groups(
        c,
        &rt,
        &conn,
        &raw_channel,
        &raw_side,
        &headers,
        &url,
        &publisher,
        &tidings_ns,
        &tidings_side,
        n,
    );

    rt.block_on(async {
        let rounds = Rounds {
            url: &url,
            conn: &conn,
            raw_channel: &raw_channel,
            raw_side: &raw_side,
            headers: &headers,
            publisher: &publisher,
            tidings_ns: &tidings_ns,
            tidings_side: &tidings_side,
            n,
        };
        let count = std::env::var("TIDINGS_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6);
        if count > 0 {
            paired(&rounds, count).await;
        }
        // TIDINGS_BENCH_LATENCY=0 leaves the latency part out (for profiling the groups).
        if std::env::var("TIDINGS_BENCH_LATENCY").as_deref() != Ok("0") {
            latency(
                &conn,
                &raw_channel,
                &raw_side,
                &headers,
                &url,
                &publisher,
                &tidings_ns,
                n,
            )
            .await;
        }
        // Leave nothing behind on the broker: the tidings side through its buses...
        publisher.teardown().await.unwrap();
        let reader = RabbitMq::from_url(&url).unwrap();
        let bus = tidings_consumer(reader, &tidings_ns, counter(u64::MAX, false)).await;
        bus.teardown().await.unwrap();
        // ...and what `raw_declare` created.
        let channel = conn.create_channel().await.unwrap();
        for q in [raw_side.queue.clone(), format!("{}.dlq", raw_side.queue)] {
            channel
                .queue_delete(q.as_str().into(), Default::default())
                .await
                .unwrap();
        }
        for e in [raw_side.exchange.clone(), format!("{}.dlx", raw_side.queue)] {
            channel
                .exchange_delete(e.as_str().into(), Default::default())
                .await
                .unwrap();
        }
    });
}

/// End-to-end latency, one publish at a time (each confirmed), raw and tidings.
#[allow(clippy::too_many_arguments)]
async fn latency(
    conn: &Connection,
    raw_channel: &Channel,
    raw_side: &Side,
    headers: &FieldTable,
    url: &str,
    publisher: &Bus,
    tidings_ns: &str,
    n: u64,
) {
    let e2e = n.min(5000);
    let raw = raw_end_to_end(conn, raw_channel, raw_side, headers, e2e).await;
    let ours = tidings_end_to_end(url, publisher, tidings_ns, e2e).await;
    println!("end_to_end/{e2e} events, one publish at a time (each confirmed):");
    for (name, h) in [("raw_lapin", &raw), ("tidings", &ours)] {
        println!(
            "  {name:<9}  p50 {:>6} µs   p99 {:>6} µs   max {:>7} µs   ({} samples)",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.max(),
            h.len()
        );
    }
    println!(
        "  ratio tidings/raw: p50 {:.2}, p99 {:.2}",
        ours.value_at_quantile(0.5) as f64 / raw.value_at_quantile(0.5).max(1) as f64,
        ours.value_at_quantile(0.99) as f64 / raw.value_at_quantile(0.99).max(1) as f64
    );
}

/// The `end_to_end`, `batch` and `stream` groups.
#[allow(clippy::too_many_arguments)]
fn throughput_groups(
    c: &mut Criterion,
    rt: &Runtime,
    conn: &Connection,
    raw_channel: &Channel,
    raw_side: &Side,
    headers: &FieldTable,
    url: &str,
    publisher: &Bus,
    tidings_ns: &str,
    tidings_side: &Side,
    n: u64,
) {
    // Flat sampling: every sample the same number of (long) iterations, 10 at least.
    let mut group = c.benchmark_group("end_to_end");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("raw_lapin", n), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += raw_throughput(conn, raw_channel, raw_side, headers, n).await;
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("tidings", n), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += tidings_throughput(url, publisher, tidings_ns, n).await;
            }
            total
        })
    });
    group.finish();

    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("raw_lapin_window", BATCH), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += raw_publish_n(conn, raw_channel, raw_side, headers, BATCH).await;
            }
            total
        })
    });
    for (name, batch) in [("publish_batch", true), ("singles_in_flight", false)] {
        group.bench_function(BenchmarkId::new(name, BATCH), |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tidings_publish_n(conn, publisher, tidings_side, BATCH, batch).await;
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Elements(BATCHES * BATCH));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("raw_lapin_window", BATCHES * BATCH), |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += raw_publish_n(conn, raw_channel, raw_side, headers, BATCHES * BATCH).await;
            }
            total
        })
    });
    for concurrent in [1usize, 2, 4] {
        let id = BenchmarkId::new(
            format!("tidings_{BATCHES}x{BATCH}"),
            format!("{concurrent}_in_flight"),
        );
        group.bench_function(id, |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total +=
                        tidings_stream(conn, publisher, tidings_side, BATCHES, BATCH, concurrent)
                            .await;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
