//! OpenTelemetry in memory, for tests of what tidings traces and measures (feature
//! `opentelemetry`).
//!
//! [`Telemetry`] is one kit per process: the OpenTelemetry SDK with its in-memory span
//! exporter ([`InMemorySpanExporter`], spans exported as they end) behind a `tracing`
//! subscriber with a `tracing_opentelemetry` layer, and a global meter provider whose
//! reader exports into an [`InMemoryMetricExporter`] when a test asks. Tests running in
//! parallel in one process share it: tell your spans apart by trace id (start each test's
//! work in a root span of its own, [`Telemetry::root`]) and your measurements by
//! attributes no other test uses (a service name or a broker destination of the test's
//! own, as `tidings.service` and `messaging.destination.name`).
//!
//! Two ways to record spans:
//! - [`Telemetry::install`] makes the kit's subscriber the global default (once per
//!   process; it fails if another global subscriber was installed first). Simplest for an
//!   application's tests.
//! - [`Telemetry::runtime`] builds a tokio runtime whose threads have the kit's subscriber
//!   as their default, and [`Telemetry::scoped`] runs a closure with it, without touching
//!   the global default: other tests in the process keep running without a subscriber
//!   (what the conformance suite does, because with a subscriber every envelope's trace
//!   context changes).
//!
//! Metrics are recorded by every bus built after the kit was first touched
//! ([`Telemetry::get`]), whichever way spans are recorded: the bus makes its instruments
//! from the global meter provider when it is built.
//!
//! ```
//! use tidings_core::*;
//! use tidings_testing::telemetry::{SpanDataExt, SpanKind, Telemetry};
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! # struct BookBorrowed { book_id: u32 }
//! # impl Event for BookBorrowed { const NAME: &'static str = "lending.book-borrowed"; const VERSION: u32 = 1; }
//! # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
//! # struct LendingEvents;
//! # impl Topic for LendingEvents { const NAME: &'static str = "lending"; fn events() -> &'static [EventInfo] { &[] } }
//! use std::time::Duration;
//! use tracing::Instrument;
//!
//! # fn main() -> tidings_core::Result<()> {
//! let telemetry = Telemetry::install().expect("no other global subscriber");
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let memory = tidings_memory::Memory::new();
//!     let catalog = Bus::builder("doc-catalog")
//!         .transport(memory.clone())
//!         .subscribe(Subscription::to::<LendingEvents>().on(|_: BookBorrowed, _: Context| async {
//!             Ok::<(), HandlerError>(())
//!         }))
//!         .build()
//!         .await?;
//!     let lending = Bus::builder("doc-lending")
//!         .transport(memory)
//!         .publishes::<LendingEvents>()
//!         .build()
//!         .await?;
//!
//!     // The request: a root span of this test's own, whose trace the publish continues.
//!     let (request, trace) = telemetry.root("borrow");
//!     lending.publish(BookBorrowed { book_id: 7 }).instrument(request).await?;
//!
//!     let patience = Duration::from_secs(10);
//!     let process = telemetry
//!         .wait_for_spans(patience, "the process span", |spans| {
//!             spans
//!                 .iter()
//!                 .find(|s| s.trace_id() == trace && s.span_kind == SpanKind::Consumer)
//!                 .cloned()
//!         })
//!         .await;
//!     assert_eq!(process.name, "process lending");
//!     assert_eq!(process.string("tidings.outcome").as_deref(), Some("ack"));
//!
//!     // Measurements of this test's services only.
//!     let consumed = telemetry
//!         .wait_for_metrics(patience, "one consumed message", |m| {
//!             let n = m.sum(
//!                 "messaging.client.consumed.messages",
//!                 &[("tidings.service", "doc-catalog")],
//!             );
//!             (n == 1).then_some(n)
//!         })
//!         .await;
//!     assert_eq!(consumed, 1);
//!     catalog.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::time::Instant;
use tracing::Dispatch;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

pub use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
pub use opentelemetry::{KeyValue, Value};
pub use opentelemetry_sdk::metrics::InMemoryMetricExporter;
pub use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

/// The process's OpenTelemetry test kit: spans and metrics in memory. See the
/// [module docs](self).
pub struct Telemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
    dispatch: Dispatch,
    /// A second registered dispatcher, which records nothing; see [`Telemetry::build`].
    _bystander: Dispatch,
    /// Serialises metric collection: collecting exports into the shared exporter, which
    /// is read and emptied under this lock.
    collecting: Mutex<()>,
    /// The outcome of making the kit's subscriber the global default (once).
    global: OnceLock<Result<(), String>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("global", &self.global.get())
            .finish_non_exhaustive()
    }
}

static KIT: OnceLock<Telemetry> = OnceLock::new();

impl Telemetry {
    /// The process's kit. The first call builds it and installs its meter provider as
    /// OpenTelemetry's global one; it does not install a `tracing` subscriber
    /// (see [`install`](Self::install), [`runtime`](Self::runtime), [`scoped`](Self::scoped)).
    pub fn get() -> &'static Telemetry {
        KIT.get_or_init(Telemetry::build)
    }

    /// The process's kit, with its subscriber installed as the global `tracing` default
    /// (on the first call). Fails, on every call, if another global default was
    /// installed first.
    pub fn install() -> Result<&'static Telemetry, String> {
        let kit = Telemetry::get();
        kit.global
            .get_or_init(|| {
                tracing::dispatcher::set_global_default(kit.dispatch.clone()).map_err(|e| {
                    format!("cannot install the telemetry kit's subscriber globally: {e}")
                })
            })
            .clone()
            .map(|()| kit)
    }

    fn build() -> Telemetry {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let tracer = tracer_provider.tracer("tidings-testing");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false);
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        // While only one dispatcher is registered, `tracing` decides whether a callsite is
        // on by the default of the thread that reaches it first, once for all: a span
        // first created on a thread without the kit's subscriber (a test beside a trace
        // test) would stay off on the kit's threads too. With a second one registered,
        // every callsite asks the current thread's subscriber.
        let bystander = Dispatch::new(tracing::subscriber::NoSubscriber::default());

        let metrics = opentelemetry_sdk::metrics::InMemoryMetricExporterBuilder::new()
            .with_temporality(Temporality::Cumulative)
            .build();
        // Exports when a test collects (force_flush); the interval only bounds how often
        // it would export by itself.
        let reader = PeriodicReader::builder(metrics.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let meter_provider = SdkMeterProvider::builder().with_reader(reader).build();
        opentelemetry::global::set_meter_provider(meter_provider.clone());

        Telemetry {
            spans,
            metrics,
            meter_provider,
            tracer_provider,
            dispatch,
            _bystander: bystander,
            collecting: Mutex::new(()),
            global: OnceLock::new(),
        }
    }

    /// The kit's `tracing` subscriber (a registry with the OpenTelemetry layer), to set as
    /// the default wherever spans should be recorded.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Run `f` with the kit's subscriber as the default of this thread.
    pub fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// A multi-threaded tokio runtime with `workers` worker threads, all of whose threads
    /// (workers and blocking) have the kit's subscriber as their default: spans of tasks
    /// spawned on it are recorded, without a global subscriber. Wrap `block_on` in
    /// [`scoped`](Self::scoped) to record the spans of the future it runs, too.
    pub fn runtime(&self, workers: usize) -> tokio::runtime::Runtime {
        let dispatch = self.dispatch.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .on_thread_start(move || {
                // For the thread's whole life: the guard would restore the previous default.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("building a tokio runtime for the telemetry kit")
    }

    /// A new root span named `name` (no parent, whatever span is current) and the id of
    /// the trace it starts. Run a test's work inside it (`.instrument(span)`) to find its
    /// spans by that trace id. Recorded only where the kit's subscriber is the default;
    /// elsewhere the trace id is invalid.
    pub fn root(&self, name: &'static str) -> (tracing::Span, TraceId) {
        let span = tracing::info_span!(parent: None, "root", otel.name = name);
        let trace = trace_id(&span);
        (span, trace)
    }

    /// Every span exported so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans
            .get_finished_spans()
            .expect("reading the in-memory span exporter")
    }

    /// The spans of one trace exported so far, in the order they ended.
    pub fn trace(&self, trace: TraceId) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect()
    }

    /// Wait until `check` returns `Some` for the spans exported so far, polling; panic
    /// after `patience` saying that `what` did not happen, with the spans `check` was
    /// last given that have a tidings attribute.
    pub async fn wait_for_spans<T>(
        &self,
        patience: Duration,
        what: &str,
        mut check: impl FnMut(&[SpanData]) -> Option<T>,
    ) -> T {
        poll(patience, || {
            let spans = self.spans();
            check(&spans).ok_or_else(|| {
                let mine: Vec<SpanData> = spans
                    .into_iter()
                    .filter(|s| s.string("tidings.service").is_some())
                    .collect();
                format!("{what}; tidings spans so far: {}", describe_spans(&mine))
            })
        })
        .await
    }

    /// Wait until `check` returns `Some` for the spans of `trace` exported so far,
    /// polling; panic after `patience` saying that `what` did not happen, with the
    /// trace's spans.
    pub async fn wait_for_trace<T>(
        &self,
        trace: TraceId,
        patience: Duration,
        what: &str,
        mut check: impl FnMut(&[SpanData]) -> Option<T>,
    ) -> T {
        poll(patience, || {
            let spans = self.trace(trace);
            check(&spans)
                .ok_or_else(|| format!("{what}; the trace so far: {}", describe_spans(&spans)))
        })
        .await
    }

    /// The measurements so far: every instrument's cumulative value, collected now.
    pub fn metrics(&self) -> Metrics {
        let _collecting = self
            .collecting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.meter_provider
            .force_flush()
            .expect("collecting metrics into the in-memory exporter");
        let mut exported = self
            .metrics
            .get_finished_metrics()
            .expect("reading the in-memory metric exporter");
        self.metrics.reset();
        // Cumulative: the last export holds every total.
        Metrics {
            exported: exported.pop(),
        }
    }

    /// Wait until `check` returns `Some` for the measurements, collecting them again and
    /// again; panic after `patience` saying that `what` did not happen.
    pub async fn wait_for_metrics<T>(
        &self,
        patience: Duration,
        what: &str,
        mut check: impl FnMut(&Metrics) -> Option<T>,
    ) -> T {
        poll(patience, || {
            let metrics = self.metrics();
            check(&metrics).ok_or_else(|| format!("{what}; measured: {metrics:?}"))
        })
        .await
    }

    /// Export the spans that ended and are still queued (none with the kit's simple span
    /// processor; for completeness).
    pub fn flush_spans(&self) {
        let _ = self.tracer_provider.force_flush();
    }
}

async fn poll<T>(patience: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(5);
    loop {
        match attempt() {
            Ok(done) => return done,
            Err(what) if Instant::now() >= deadline => {
                panic!("waited {patience:?} for {what}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Run `test` on a fresh runtime whose threads record spans into the kit (and with the
/// kit's subscriber on the calling thread while it runs), within `limit`.
pub(crate) fn run_recorded(limit: Duration, what: &str, test: impl Future<Output = ()>) {
    let kit = Telemetry::get();
    let runtime = kit.runtime(2);
    kit.scoped(|| {
        runtime.block_on(async {
            if tokio::time::timeout(limit, test).await.is_err() {
                panic!("{what} did not finish within {limit:?}");
            }
        })
    });
}

/// The trace id of a `tracing` span recorded by an OpenTelemetry layer; invalid for a
/// span nothing records.
pub fn trace_id(span: &tracing::Span) -> TraceId {
    span.context().span().span_context().trace_id()
}

/// The OpenTelemetry span id of a `tracing` span recorded by an OpenTelemetry layer;
/// invalid for a span nothing records.
pub fn span_id(span: &tracing::Span) -> SpanId {
    span.context().span().span_context().span_id()
}

mod metrics;
mod spans;

pub use metrics::Metrics;
pub use spans::{describe_spans, SpanDataExt};
