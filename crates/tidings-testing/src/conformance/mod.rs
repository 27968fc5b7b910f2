//! The transport conformance suite: one set of tests, written once against the
//! [`DynTransport`] trait, that checks the guarantees of ARCHITECTURE.md on any transport.
//!
//! Every transport crate runs it from its `tests/conformance.rs`. The memory transport:
//! one transport per case, shared by every bus of the case:
//!
//! ```
//! use std::sync::Arc;
//! use tidings_testing::conformance::Factory;
//!
//! tidings_testing::conformance_suite!(Factory::shared("memory", Arc::new(tidings_memory::Memory::new())));
//! # fn main() {}
//! ```
//!
//! A broker (a sketch; `RabbitMq` stands for the crate's transport): a fresh connection per
//! bus, so services that stand for separate processes are separate; when the address is
//! not configured every case prints a line and passes:
//!
//! ```ignore
//! tidings_testing::conformance_suite!(match std::env::var("TIDINGS_RABBITMQ_URL") {
//!     Ok(url) => Factory::new("rabbitmq", move || {
//!         let url = url.clone();
//!         async move { Ok(Arc::new(RabbitMq::connect(RabbitMqConfig::new(&url)).await?) as Arc<dyn DynTransport>) }
//!     }),
//!     Err(_) => Factory::unavailable("rabbitmq", "TIDINGS_RABBITMQ_URL is not set"),
//! });
//! ```
//!
//! The macro expands to one `#[test]` per case, each on its own multi-threaded tokio
//! runtime with two workers; the factory expression is evaluated once per case, outside
//! the runtime (connect in [`TransportFactory::connect`], not in the expression). Every case
//! is also a plain `async fn(&dyn TransportFactory)` in this module, to call directly.
//!
//! # What the cases check
//!
//! | case | guarantee |
//! |---|---|
//! | [`publish_confirms`] | publish returns the id; every envelope attribute, header and the payload arrive intact |
//! | [`fan_out`] | two services each get every event |
//! | [`competing_consumers`] | two instances of one service share the events: all handled, each instance some, not every event twice |
//! | [`at_least_once_redelivery`] | an event whose handler was in flight when its process died is handled by the next instance |
//! | [`retry_then_dead_letter`] | a failing handler runs `immediate × (redeliveries + 1)` times, then the envelope is dead-lettered with reason, attempts, service, topic; the consumer keeps going; replay brings it back |
//! | [`retry_then_success`] | a handler that fails twice then succeeds is handled once, not dead-lettered, with the attempt counting up |
//! | [`permanent_failure`] | a failure marked permanent (`.permanent()?`) runs the handler once and is dead-lettered with attempts 1 and its reason; the next event is handled |
//! | [`poison_payloads`] | garbage bytes, a newer version, an oversized payload, an unknown content type: dead-lettered at once with the cause, handler never run, consumer keeps going |
//! | [`skip_unhandled`] | events without a handler are acknowledged and skipped, never dead-lettered or redelivered |
//! | [`ordering_per_key`] | with concurrency 8, events of one key are handled one at a time in publish order |
//! | [`ordering_per_key_with_retry`] | the same while one event of a key fails twice before succeeding |
//! | [`upcasting`] | a v1 event reaches the v2 handler through the registered upcaster |
//! | [`shutdown_drains`] | `shutdown()` waits for handlers in flight; nothing starts after it; publishing after it is `Closed`; what it left is handled by the next instance |
//! | [`correlation_flows`] | `cx.publish` carries the correlation id on and sets the causation id |
//! | [`publish_not_declared`] | publishing to an undeclared topic is `NotDeclared` |
//! | [`build_rejects_bad_registrations`] | `build()` refuses a subscription without handlers, two handlers for one event, two events with one wire name |
//! | [`raw_messages`] | messages sent with the broker's own client (garbage, newer version, 1.5 MiB, nesting 100,000 deep in a known and an unknown field, no headers, invalid id, no type, unknown content type) are dead-lettered at once with the cause; an unknown wire name is skipped; the next valid event of the key is handled |
//! | [`reserved_headers`] | a custom header named like an envelope attribute or with a broker-reserved prefix is refused on publish, naming it |
//! | [`panics_anywhere`] | a panic in `Deserialize`, an upcaster, the synchronous part of `handle` or its future is retried, then dead-lettered with the panic message; the key's later events are handled |
//! | [`teardown_removes_topology`] | `Bus::teardown` deletes what `build()` created, an event left in a stopped subscription with it; a second teardown is no error; the same buses build and work again |
//! | [`dropped_connection`] | connections dropped mid-stream: publish errors are retryable, every confirmed event is handled |
//! | [`dead_letter_purge`] | `dead_letter` finds a dead letter by id (`None` for an unknown one); `purge_dead_letters` deletes exactly the selected ones, never to come back; an empty purge deletes nothing; waiting events stay |
//! | [`dead_letter_purge_during_replay`] | a purge and a replay at once: nothing left, nothing lost, exactly the replayed ones handled |
//! | [`edited_replay`] | `Replay::Edited` sends a fixed copy of one dead letter in its place (new id or same id): handled exactly once with the fixed payload, without dead-letter headers; neither id is a dead letter afterwards; an unselected dead letter stays untouched; an id not parked replays nothing |
//! | [`dead_letters_unknown_subscription`] | listing, looking up, replaying and purging the dead letters of an unknown subscription is `NotFound` |
//! | [`backlog_counts_waiting_messages`] | `backlog_dyn` of a subscription nobody consumes counts what was published to it (7), once consumed and settled 0, dead letters not counted; an unknown subscription is `NotFound` |
//! | [`temporary_subscription`] | a subscription watched with `watch_dyn` sees the topic's events without taking them from another; `remove_subscription` deletes it alone |
//! | [`claim_check_round_trip`] | with a claim check on a local directory, a 5 MiB event (over every transport's limit) is handled exactly as published and came by claim check; a small one travels as it is |
//! | [`claim_check_missing_or_corrupt`] | a reference whose stored payload is missing or corrupt is dead-lettered at once with a reason naming the location; the handler never runs for it; the next event is handled |
//! | [`claim_check_store_outage`] | a store failing its first three reads is retried like a failed handler; the handler runs once, on attempt 4, with the event as published |
//! | [`scheduled_delivery`] | events published with a time a little ahead are handled no earlier than it and within the declared [`Scheduling::tolerance`](tidings_core::transport::Scheduling) after it, as their first attempt: one due sooner is not held back by one due later; a past time is handled at once; a keyed one leaves its key's order (the key's next event does not wait for it); a raw message carrying a time is held back too, one with an unreadable time is dead-lettered naming the header; a time beyond the maximum delay is refused |
//! | [`scheduled_ten_thousand`] | 10,000 events scheduled over a minute, published out of time order: all handled, none early, none lost |
//! | [`unreachable_broker`] | a broker where nothing listens, and one that accepts and never answers: `build()` fails as `Unavailable` (retryable) within the patience, naming the address once (skipped by transports without a connection) |
//!
//!
//! With the feature `opentelemetry`, the trace cases (their names contain `trace`, so
//! `cargo test trace` runs them) check the spans and metrics of the core with the
//! [`Telemetry`](crate::telemetry::Telemetry) kit. They run on runtimes whose threads
//! record spans ([`run_traced`]) rather than with a global subscriber: with one, every
//! envelope's trace context would change under the cases beside them.
//!
//! | case | guarantee |
//! |---|---|
//! | `trace_publish_to_process` | a publish inside a request span and its handling in another service form one trace: send span (PRODUCER, child of the request), process span (CONSUMER, child of the send span), with the messaging attributes and tidings' own; a batch is one send span |
//! | `trace_continues_through_handler` | a handler that publishes continues the trace to a third service, span by span; two requests stay two traces |
//! | `trace_retries_and_dead_letters` | one process span per handler run, each a child of the send span, with attempt, outcome (`retry`, `ack`, `dead_letter`), `error.type` and the dead-letter reason, for redelivered, in-place, permanent and exhausted failures |
//! | `trace_scheduled_deferral` | an event scheduled ahead shows `defer` process spans (with the wait) for the early deliveries put back, then one `ack`; never `retry` |
//! | `trace_malformed_context` | raw messages with a malformed `traceparent` are handled (or dead-lettered) as before and start new traces; a valid foreign one is continued |
//! | `trace_metrics` | sent, consumed, handler runs by outcome, retries, dead letters, lag and in-flight count what the case did, with their labels |
//! | `trace_in_flight` | while a handler is held, handlers in flight read 1 and consumed 1 (observed when the meter provider collects), with the subscription's labels; once let go, 0 in flight and the lag recorded |
//! | `trace_metrics_competing` | two instances of one subscription in one process: consumed counts the deliveries of both, not the last one observed |
//!
//! Cases are skipped only by declared [`Capabilities`](tidings_core::transport::Capabilities)
//! (`competing_consumers`, `ordering_key`, `backlog`), printing `skipped: <case> needs <capability>`.
//!
//! # Isolation and timing
//!
//! Each case runs in a fresh random namespace (`conf-<12 hex digits>`, short enough for
//! Service Bus's 50-character subscription names), so leftovers of earlier runs on a
//! broker never collide and cases run in parallel. The suite never deletes what it
//! created. Waits poll with a deadline ([`TransportFactory::patience`], 30 s by default)
//! and fail with what was seen; checks that something does *not* happen wait
//! [`TransportFactory::quiet`] (500 ms by default). No timing is asserted.
//!
//! # What a transport must do for the suite
//!
//! Besides the [`Transport`](tidings_core::transport::Transport) contract: after a subscribing bus's
//! `build()` returns, events published to its topic reach that subscription; an acker
//! dropped unsettled (its process died) means the envelope is delivered again.

mod adversarial;
mod backlog;
mod cases;
mod claim_check;
mod events;
mod failure;
mod lifecycle;
mod operations;
mod ordering;
mod scheduling;
mod support;
#[cfg(feature = "opentelemetry")]
mod traces;
mod volatile;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tidings_core::{transport::DynTransport, Result};

pub use adversarial::{
    dropped_connection, panics_anywhere, raw_messages, reserved_headers, unreachable_broker,
};
pub use backlog::backlog_counts_waiting_messages;
pub use cases::{
    at_least_once_redelivery, competing_consumers, correlation_flows, fan_out, publish_confirms,
    skip_unhandled, upcasting,
};
pub use claim_check::{
    claim_check_missing_or_corrupt, claim_check_round_trip, claim_check_store_outage,
};
pub use failure::{permanent_failure, poison_payloads, retry_then_dead_letter, retry_then_success};
pub use lifecycle::{
    build_rejects_bad_registrations, publish_not_declared, shutdown_drains,
    teardown_removes_topology,
};
pub use operations::{
    dead_letter_purge, dead_letter_purge_during_replay, dead_letters_unknown_subscription,
    edited_replay, temporary_subscription,
};
pub use ordering::{ordering_per_key, ordering_per_key_with_retry};
pub use scheduling::{scheduled_delivery, scheduled_ten_thousand};
#[cfg(feature = "opentelemetry")]
pub use traces::{
    trace_continues_through_handler, trace_in_flight, trace_malformed_context, trace_metrics,
    trace_metrics_competing, trace_publish_to_process, trace_retries_and_dead_letters,
    trace_scheduled_deferral,
};

/// The names of every case, in the order the macro emits them.
pub const CASES: &[&str] = &[
    "publish_confirms",
    "fan_out",
    "competing_consumers",
    "at_least_once_redelivery",
    "retry_then_dead_letter",
    "retry_then_success",
    "permanent_failure",
    "poison_payloads",
    "skip_unhandled",
    "ordering_per_key",
    "ordering_per_key_with_retry",
    "upcasting",
    "shutdown_drains",
    "correlation_flows",
    "publish_not_declared",
    "build_rejects_bad_registrations",
    "raw_messages",
    "reserved_headers",
    "panics_anywhere",
    "dropped_connection",
    "teardown_removes_topology",
    "unreachable_broker",
    "dead_letter_purge",
    "dead_letter_purge_during_replay",
    "edited_replay",
    "dead_letters_unknown_subscription",
    "temporary_subscription",
    "backlog_counts_waiting_messages",
    "claim_check_round_trip",
    "claim_check_missing_or_corrupt",
    "claim_check_store_outage",
    "scheduled_delivery",
    "scheduled_ten_thousand",
];

/// The names of the trace cases (feature `opentelemetry`), which the macro emits after
/// [`CASES`] when tidings-testing is built with the feature.
pub const TRACE_CASES: &[&str] = &[
    "trace_publish_to_process",
    "trace_continues_through_handler",
    "trace_retries_and_dead_letters",
    "trace_malformed_context",
    "trace_scheduled_deferral",
    "trace_metrics",
    "trace_in_flight",
    "trace_metrics_competing",
];

/// How the suite gets a transport. Each bus of a case calls [`connect`](Self::connect)
/// once; a factory may hand out the same transport every time (memory) or a fresh
/// connection (brokers): the cases work either way, and buses that stand for separate
/// processes always come from separate calls.
///
/// Closures `Fn() -> impl Future<Output = Result<Arc<dyn DynTransport>>>` are factories
/// (named `"transport"`); [`Factory`] adds a name and the timing knobs.
pub trait TransportFactory: Send + Sync + 'static {
    /// A transport for one bus.
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn DynTransport>>>;

    /// The transport's name, for messages.
    fn name(&self) -> &str;

    /// Why the suite cannot run here (e.g. the broker address is not configured); every
    /// case then prints the reason and passes.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// How long a case waits for something it expects before it fails.
    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// How long a case watches for something that must *not* happen (a redelivery, a
    /// handler run after shutdown).
    fn quiet(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// The means to attack the transport from outside: raw messages through the broker's
    /// own client, and dropped connections. Every transport provides one; the adversarial
    /// cases fail without it.
    fn adversary(&self) -> Option<Arc<dyn Adversary>> {
        None
    }
}

/// A raw message for [`Adversary::inject`]: headers and body exactly as the broker's own
/// client sends them, bypassing tidings.
#[derive(Debug, Clone, Default)]
pub struct RawMessage {
    /// Header pairs (AMQP headers, Kafka record headers, Service Bus custom properties).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Vec<u8>,
    /// The record key / session id where the broker has one (Kafka, Service Bus); the
    /// injector may ignore it elsewhere.
    pub key: Option<String>,
}

/// How the adversarial cases break a transport: each transport's conformance test
/// implements it with the broker's own client (lapin, rdkafka, the Service Bus REST API;
/// the memory hub's raw entry point).
pub trait Adversary: Send + Sync + 'static {
    /// Publish `message` to the broker topic `topic` (the name from the bus's topology)
    /// with the broker's own client, exactly as given.
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>>;

    /// Drop the connections of every transport the factory handed out, as a network fault
    /// or a broker closing them would; the transports must reconnect on their own.
    fn drop_connections(&self) -> BoxFuture<'static, Result<()>>;

    /// A transport configured like the factory's, but for a broker at `address`
    /// (`host:port` on loopback, where the case makes sure nothing answers) with
    /// `connect_timeout`. Not connected yet: building a bus on it is what connects.
    /// Transports without a connection (whose [`Capabilities::connect_timeout`] is `None`)
    /// need not provide it; the `unreachable_broker` case fails on one that should.
    ///
    /// [`Capabilities::connect_timeout`]: tidings_core::transport::Capabilities::connect_timeout
    fn unreachable(
        &self,
        address: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<dyn DynTransport>> {
        let _ = connect_timeout;
        Err(tidings_core::Error::new(
            tidings_core::ErrorKind::Config,
            format!("this adversary cannot point a transport at {address}"),
        ))
    }
}

impl<F, Fut> TransportFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<dyn DynTransport>>> + Send + 'static,
{
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn DynTransport>>> {
        Box::pin(self())
    }

    fn name(&self) -> &str {
        "transport"
    }
}

type Connect = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn DynTransport>>> + Send + Sync>;

/// A named [`TransportFactory`] with adjustable waits.
///
/// ```
/// use std::time::Duration;
/// use tidings_testing::conformance::Factory;
/// let factory = Factory::unavailable("kafka", "TIDINGS_KAFKA_BROKERS is not set")
///     .patience(Duration::from_secs(60))
///     .quiet(Duration::from_secs(2));
/// ```
#[derive(Clone)]
pub struct Factory {
    name: String,
    connect: Connect,
    adversary: Option<Arc<dyn Adversary>>,
    unavailable: Option<String>,
    patience: Duration,
    quiet: Duration,
}

impl Factory {
    /// A factory calling `connect` for every bus (brokers: a fresh connection each time).
    pub fn new<F, Fut>(name: impl Into<String>, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn DynTransport>>> + Send + 'static,
    {
        Factory {
            name: name.into(),
            connect: Arc::new(move || Box::pin(connect())),
            adversary: None,
            unavailable: None,
            patience: Duration::from_secs(30),
            quiet: Duration::from_millis(500),
        }
    }

    /// A factory handing out the same transport to every bus (memory).
    pub fn shared(name: impl Into<String>, transport: Arc<dyn DynTransport>) -> Self {
        Factory::new(name, move || {
            let transport = transport.clone();
            async move { Ok(transport) }
        })
    }

    /// A factory that cannot run here: every case prints `reason` and passes. For broker
    /// suites whose address variable is unset.
    pub fn unavailable(name: impl Into<String>, reason: impl Into<String>) -> Self {
        let name = name.into();
        let reason = reason.into();
        let message = format!("{name} is unavailable: {reason}");
        let mut factory = Factory::new(name, move || {
            let message = message.clone();
            async move { Err(tidings_core::Error::unavailable(message)) }
        });
        factory.unavailable = Some(reason);
        factory
    }

    /// How long a case waits for what it expects (default 30 s).
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// How long a case watches for what must not happen (default 500 ms).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The transport's [`Adversary`], for the adversarial cases.
    pub fn adversary(mut self, adversary: Arc<dyn Adversary>) -> Self {
        self.adversary = Some(adversary);
        self
    }
}

impl fmt::Debug for Factory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Factory")
            .field("name", &self.name)
            .field("unavailable", &self.unavailable)
            .field("patience", &self.patience)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl TransportFactory for Factory {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn DynTransport>>> {
        (self.connect)()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }

    fn patience(&self) -> Duration {
        self.patience
    }

    fn quiet(&self) -> Duration {
        self.quiet
    }

    fn adversary(&self) -> Option<Arc<dyn Adversary>> {
        self.adversary.clone()
    }
}

/// Run one case on a fresh multi-threaded runtime (two workers), as the tests generated
/// by [`conformance_suite!`](crate::conformance_suite) do. Prints a line and returns if the
/// factory is unavailable; panics if the case panics or runs longer than ten times the
/// factory's patience.
pub fn run(factory: &dyn TransportFactory, case: &str, test: impl Future<Output = ()>) {
    if let Some(reason) = factory.unavailable() {
        println!("skipped: {case} on {}: {reason}", factory.name());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime for the conformance case");
    let limit = factory.patience() * 10;
    runtime.block_on(async {
        if tokio::time::timeout(limit, test).await.is_err() {
            panic!(
                "conformance case {case} on {} did not finish within {limit:?}",
                factory.name()
            );
        }
    });
}

/// Run one trace case like [`run`], on a runtime whose threads (and the calling thread,
/// while it runs) record spans into the [`Telemetry`](crate::telemetry::Telemetry) kit,
/// without installing a global subscriber.
#[cfg(feature = "opentelemetry")]
pub fn run_traced(factory: &dyn TransportFactory, case: &str, test: impl Future<Output = ()>) {
    if let Some(reason) = factory.unavailable() {
        println!("skipped: {case} on {}: {reason}", factory.name());
        return;
    }
    crate::telemetry::run_recorded(
        factory.patience() * 10,
        &format!("conformance case {case} on {}", factory.name()),
        test,
    );
}

/// Expand to one `#[test]` per conformance case, each running the case against the
/// transports of `factory` (an expression of a type implementing
/// [`TransportFactory`](crate::conformance::TransportFactory), evaluated once per case).
/// See [the module docs](crate::conformance).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::__conformance_cases!(
            $factory;
            publish_confirms,
            fan_out,
            competing_consumers,
            at_least_once_redelivery,
            retry_then_dead_letter,
            retry_then_success,
            permanent_failure,
            poison_payloads,
            skip_unhandled,
            ordering_per_key,
            ordering_per_key_with_retry,
            upcasting,
            shutdown_drains,
            correlation_flows,
            publish_not_declared,
            build_rejects_bad_registrations,
            raw_messages,
            reserved_headers,
            panics_anywhere,
            dropped_connection,
            teardown_removes_topology,
            unreachable_broker,
            dead_letter_purge,
            dead_letter_purge_during_replay,
            edited_replay,
            dead_letters_unknown_subscription,
            temporary_subscription,
            backlog_counts_waiting_messages,
            claim_check_round_trip,
            claim_check_missing_or_corrupt,
            claim_check_store_outage,
            scheduled_delivery,
            scheduled_ten_thousand,
        );
        $crate::__conformance_trace_cases!($factory);
    };
}

/// With the feature `opentelemetry`: one `#[test]` per trace case, run by
/// [`run_traced`](crate::conformance::run_traced).
#[cfg(feature = "opentelemetry")]
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_trace_cases {
    ($factory:expr) => {
        $crate::__conformance_trace_cases!(
            @cases $factory;
            trace_publish_to_process,
            trace_continues_through_handler,
            trace_retries_and_dead_letters,
            trace_malformed_context,
            trace_scheduled_deferral,
            trace_metrics,
            trace_in_flight,
            trace_metrics_competing,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let factory: &dyn $crate::conformance::TransportFactory = &factory;
                $crate::conformance::run_traced(
                    factory,
                    ::core::stringify!($case),
                    $crate::conformance::$case(factory),
                );
            }
        )*
    };
}

/// Without the feature `opentelemetry`: no trace cases.
#[cfg(not(feature = "opentelemetry"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_trace_cases {
    ($factory:expr) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let factory: &dyn $crate::conformance::TransportFactory = &factory;
                $crate::conformance::run(
                    factory,
                    ::core::stringify!($case),
                    $crate::conformance::$case(factory),
                );
            }
        )*
    };
}
