//! What tidings' telemetry costs on the memory transport, end to end (publish 100 000
//! events one by one, until the handler has run for each), in one run:
//!
//! ```text
//! cargo bench --bench telemetry --features opentelemetry
//! ```
//!
//! - `telemetry/no_subscriber`: nothing listens (no `tracing` subscriber, no meter
//!   provider), as in a service that installs neither. Measured first, before anything is
//!   registered with `tracing`, so every span callsite is off as it is in such a service.
//! - `telemetry/tracing_spans`: a `tracing` registry with a layer that accepts every span
//!   and does nothing with it: the spans are created, entered and their fields recorded.
//! - `telemetry/otel_bridge`: the full bridge, as a service would run it: a
//!   `tracing_opentelemetry` layer over the OpenTelemetry SDK (always sampled, a batch span
//!   processor exporting to an exporter that discards), the W3C context injected into and
//!   extracted from every envelope, and the metrics recorded by an SDK meter provider (the
//!   global one) whose periodic reader exports to an exporter that discards.
//! - `telemetry/otel_bridge_lean`: the same, with the `tracing_opentelemetry` layer set up
//!   as the README shows: without the source location, thread, target and busy/idle
//!   attributes it adds to every span by default.
//! - `telemetry/sdk_spans_alone`: no tidings and no `tracing`, only the least any bridge
//!   to the SDK must do for an event: its two spans (producer, then consumer as its child,
//!   with the attributes tidings' spans carry) made directly through the OpenTelemetry API
//!   and ended into the same batch processor. No metrics, no W3C text. A floor: what the
//!   bridge costs beyond it is tidings' and the layer's to win back.
//!
//! Each configuration has its own publisher and subscriber on a fresh memory hub, and its
//! own 2-worker tokio runtime whose threads (and the bench thread, while it runs) have the
//! configuration's subscriber as their default; a configuration's subscriber is dropped
//! before the next one is made, so only one is ever registered with `tracing`. The buses of
//! the first two are built before the meter provider is installed: their instruments are
//! no-ops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use tidings::prelude::*;
use tokio::sync::Notify;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

mod common;

use common::{event, BenchEvents, BookBorrowed};

/// Events per iteration: 100 000, or `TIDINGS_BENCH_EVENTS` (fewer, to profile under
/// callgrind).
fn events() -> u64 {
    std::env::var("TIDINGS_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
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

/// A publisher and a subscriber service on one memory hub, and the handler's counter.
struct Pair {
    publisher: Bus,
    _consumer: Bus,
    counter: Arc<Counter>,
}

impl Pair {
    async fn new() -> Pair {
        let counter = Arc::new(Counter {
            seen: AtomicU64::new(0),
            target: AtomicU64::new(0),
            done: Notify::new(),
        });
        let memory = Memory::new();
        let consumer = Bus::builder("catalog")
            .transport(memory.clone())
            .subscribe(
                Subscription::to::<BenchEvents>()
                    .with_shared_state(counter.clone())
                    .on(count),
            )
            .build()
            .await
            .unwrap();
        let publisher = Bus::builder("lending")
            .transport(memory)
            .publishes::<BenchEvents>()
            .build()
            .await
            .unwrap();
        Pair {
            publisher,
            _consumer: consumer,
            counter,
        }
    }

    /// Publish `n` events and wait until the handler has run for each.
    async fn round(&self, n: u64) {
        self.counter.seen.store(0, Ordering::Relaxed);
        self.counter.target.store(n, Ordering::Relaxed);
        let done = self.counter.done.notified();
        for i in 0..n {
            self.publisher.publish(event(i)).await.unwrap();
        }
        done.await;
    }
}

/// A 2-worker runtime whose threads have `dispatch` (if any) as their default subscriber.
fn runtime(dispatch: Option<Dispatch>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    if let Some(dispatch) = dispatch {
        builder.on_thread_start(move || {
            // For the thread's life; the runtime is shut down before the next
            // configuration, which drops it.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        });
    }
    builder.build().unwrap()
}

/// A layer that accepts every span and event and does nothing with them.
struct AcceptAll;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AcceptAll {}

/// A span exporter that discards what it is given.
#[derive(Debug)]
struct DiscardSpans;

impl SpanExporter for DiscardSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// A metric exporter that discards what it is given.
struct DiscardMetrics;

impl PushMetricExporter for DiscardMetrics {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        std::hint::black_box(metrics);
        Ok(())
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Measure [`events`] end to end with `dispatch` as the default subscriber of the
/// runtime's threads and of the bench thread.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    dispatch: Option<Dispatch>,
    before_build: impl FnOnce(),
) {
    let rt = runtime(dispatch.clone());
    let _default = dispatch.as_ref().map(tracing::dispatcher::set_default);
    before_build();
    let pair = rt.block_on(Pair::new());
    let n = events();
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.to_async(&rt).iter(|| pair.round(n))
    });
    rt.block_on(async {
        pair.publisher.shutdown().await;
        pair._consumer.shutdown().await;
    });
    drop(pair);
    rt.shutdown_timeout(Duration::from_secs(10));
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("telemetry");
    group.throughput(Throughput::Elements(events()));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));

    measure(&mut group, "no_subscriber", None, || {});

    let spans = Dispatch::new(tracing_subscriber::registry().with(AcceptAll));
    measure(&mut group, "tracing_spans", Some(spans), || {});

    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(DiscardSpans)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(DiscardMetrics).build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("bench"));
    let bridge = Dispatch::new(tracing_subscriber::registry().with(layer));
    measure(&mut group, "otel_bridge", Some(bridge), || {
        opentelemetry::global::set_meter_provider(meter_provider.clone())
    });
    // The layer as the README sets it up: without the attributes `tracing_opentelemetry`
    // adds to every span by default (source location, thread, target, busy and idle
    // times), which tidings' spans do not need.
    let layer = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_tracer(tracer_provider.tracer("bench"));
    let lean = Dispatch::new(tracing_subscriber::registry().with(layer));
    measure(&mut group, "otel_bridge_lean", Some(lean), || {});

    let tracer = tracer_provider.tracer("floor");
    let n = events();
    group.bench_function(BenchmarkId::new("sdk_spans_alone", n), |b| {
        b.iter(|| (0..n).for_each(|_| two_spans(&tracer)))
    });
    group.finish();
    let _ = tracer_provider.shutdown();
    let _ = meter_provider.shutdown();
}

/// The producer and consumer spans of one event, made and ended directly through the
/// OpenTelemetry API, with the attributes of tidings' `send` and `process` spans. The
/// values are static text wherever tidings' own are borrowed, so the SDK copies no more
/// than it must: the message id, which differs per event. Never inlined, so that
/// callgrind can count it alone (`--toggle-collect='*two_spans*'`).
#[inline(never)]
fn two_spans(tracer: &SdkTracer) {
    const ID: &str = "01936f1e-8c2a-7cc4-a3b1-5d7e9f0a1b2c";
    let mut send = tracer
        .span_builder("send book-events")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "memory"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", "book-events"),
            KeyValue::new("messaging.message.id", ID.to_owned()),
            KeyValue::new("messaging.message.body.size", 60_i64),
            KeyValue::new("tidings.service", "lending"),
            KeyValue::new("tidings.wire_name", "library.book_borrowed"),
            KeyValue::new("tidings.version", 1_i64),
        ])
        .start(tracer);
    let parent =
        opentelemetry::Context::new().with_remote_span_context(send.span_context().clone());
    send.end();
    let mut process = tracer
        .span_builder("process book-events")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "memory"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", "book-events"),
            KeyValue::new("messaging.consumer.group.name", "catalog"),
            KeyValue::new("messaging.destination.subscription.name", "catalog"),
            KeyValue::new("messaging.message.id", ID.to_owned()),
            KeyValue::new("messaging.message.body.size", 60_i64),
            KeyValue::new("tidings.service", "catalog"),
            KeyValue::new("tidings.wire_name", "library.book_borrowed"),
            KeyValue::new("tidings.version", 1_i64),
            KeyValue::new("tidings.attempt", 1_i64),
        ])
        .start_with_context(tracer, &parent);
    process.set_attribute(KeyValue::new("tidings.outcome", "ack"));
    process.end();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
