//! The suite catches broken transports: each test wraps the memory transport with one
//! flaw and checks that the case guarding against that flaw fails, for the right reason.
//! Without these, a suite whose cases pass on everything would look just as green.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use tidings_core::{
    transport::{
        Acker, Capabilities, Delivery, DynTransport, Subscriber, SubscriptionSpec, Topology,
        Transport,
    },
    BrokerObject, DeadLetter, DeadLetterInfo, Envelope, Error, Replay, Result,
};
use tidings_memory::Memory;
use tidings_testing::conformance::{self, Adversary, Factory, RawMessage, TransportFactory};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    /// `publish` silently drops every second envelope.
    LosesEnvelopes,
    /// `publish` strips custom headers.
    DropsHeaders,
    /// Deliveries are acknowledged on receipt (at most once): nothing is redelivered.
    AcksOnReceipt,
    /// A delivery is handed out after the (up to) three that follow it.
    HoldsBack,
    /// Dead letters are never listed.
    HidesDeadLetters,
    /// Every subscriber gets a queue of its own: instances of a service do not compete.
    NoCompetition,
    /// Messages that are not envelopes are acknowledged and dropped by the subscriber
    /// instead of reaching the core, which would dead-letter them.
    SwallowsPoison,
    /// After its connections dropped, `publish` confirms without sending.
    LosesAfterReconnect,
    /// The subscription ends after its first dead letter.
    StopsAfterDeadLetter,
    /// A dead letter is delivered again instead of parked.
    RedeliversDeadLetters,
    /// `teardown` deletes nothing.
    KeepsTopology,
    /// An unreachable broker is a `Backend` error, not retryable (as Kafka's was).
    UnreachableAsBackend,
    /// Connecting to a broker that never answers waits for ever.
    UnreachableHangs,
    /// `publish` drops the envelope's trace context (`ce_traceparent`, `ce_tracestate`).
    /// (Its test needs the `opentelemetry` feature.)
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    DropsTraceContext,
    /// A delivery retried later comes back without its trace context.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    RetryDropsTraceContext,
    /// `Capabilities::system` is left at its default instead of naming the broker.
    UnnamedSystem,
}

struct Flawed {
    inner: Memory,
    flaw: Flaw,
    disconnected: Arc<AtomicBool>,
    /// Set on the transport [`FlawedAdversary::unreachable`] makes: the broker address
    /// that `provision` fails to reach, the flawed way.
    unreachable: Option<String>,
}

/// Raw messages go straight into the flawed transport's hub; dropping the connections
/// arms [`Flaw::LosesAfterReconnect`].
struct FlawedAdversary {
    inner: Memory,
    flaw: Flaw,
    disconnected: Arc<AtomicBool>,
}

impl Adversary for FlawedAdversary {
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>> {
        let memory = self.inner.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            memory
                .inject_raw(&topic, message.headers, message.payload)
                .await
        })
    }

    fn drop_connections(&self) -> BoxFuture<'static, Result<()>> {
        self.disconnected.store(true, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn unreachable(&self, address: &str, _: Duration) -> Result<Arc<dyn DynTransport>> {
        Ok(Arc::new(Flawed {
            inner: Memory::new(),
            flaw: self.flaw,
            disconnected: self.disconnected.clone(),
            unreachable: Some(address.to_string()),
        }))
    }
}

struct FlawedSubscriber {
    inner: <Memory as Transport>::Subscriber,
    flaw: Flaw,
    held: std::collections::VecDeque<Delivery<FlawedAcker>>,
    /// Set by an acker of [`Flaw::StopsAfterDeadLetter`] once it dead-lettered.
    dead_lettered: Arc<AtomicBool>,
}

enum FlawedAcker {
    Real(<<Memory as Transport>::Subscriber as Subscriber>::Acker),
    /// Dead-lettering through it ends the subscription.
    Stopping(
        <<Memory as Transport>::Subscriber as Subscriber>::Acker,
        Arc<AtomicBool>,
    ),
    /// Dead-lettering through it redelivers the envelope.
    Redelivering(<<Memory as Transport>::Subscriber as Subscriber>::Acker),
    /// Retrying through it drops the envelope's trace context.
    Forgetting(<<Memory as Transport>::Subscriber as Subscriber>::Acker),
    Settled,
}

fn wrap(
    d: Delivery<<<Memory as Transport>::Subscriber as Subscriber>::Acker>,
) -> Delivery<FlawedAcker> {
    let mut wrapped = Delivery::new(
        d.envelope,
        d.attempt,
        d.redelivered,
        FlawedAcker::Real(d.acker),
    );
    wrapped.undecodable = d.undecodable;
    wrapped
}

impl Transport for Flawed {
    type Subscriber = FlawedSubscriber;

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if matches!(
            self.flaw,
            Flaw::UnreachableAsBackend | Flaw::UnreachableHangs
        ) {
            // Pretends to have a broker connection, so the unreachable case runs.
            c.connect_timeout = Some(UNREACHABLE_CONNECT_TIMEOUT);
        }
        if self.flaw == Flaw::UnnamedSystem {
            c.system = Capabilities::default().system;
        }
        c
    }

    async fn provision(&self, topology: &Topology) -> Result<()> {
        match (&self.unreachable, self.flaw) {
            (Some(address), Flaw::UnreachableAsBackend) => Err(Error::new(
                tidings_core::ErrorKind::Backend,
                format!("fetching metadata from {address}: timed out"),
            )),
            (Some(_), _) => std::future::pending().await,
            (None, _) => self.inner.provision(topology).await,
        }
    }

    async fn publish(&self, topic: &str, mut envelopes: Vec<Envelope>) -> Result<()> {
        match self.flaw {
            Flaw::LosesEnvelopes => {
                let mut i = 0;
                envelopes.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
            }
            Flaw::DropsHeaders => envelopes.iter_mut().for_each(|e| e.headers.clear()),
            Flaw::DropsTraceContext => envelopes.iter_mut().for_each(|e| {
                e.traceparent = None;
                e.tracestate = None;
            }),
            Flaw::LosesAfterReconnect if self.disconnected.load(Ordering::SeqCst) => return Ok(()),
            _ => {}
        }
        self.inner.publish(topic, envelopes).await
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<FlawedSubscriber> {
        let mut spec = spec.clone();
        if self.flaw == Flaw::NoCompetition {
            spec.name = format!("{}-{}", spec.name, uuid::Uuid::new_v4().simple());
            let mut topology = Topology::new(spec.service.clone());
            topology.subscriptions.push(spec.clone());
            self.inner.provision(&topology).await?;
        }
        Ok(FlawedSubscriber {
            inner: self.inner.subscribe(&spec).await?,
            flaw: self.flaw,
            held: Default::default(),
            dead_lettered: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        if self.flaw == Flaw::HidesDeadLetters {
            return Ok(Vec::new());
        }
        self.inner.dead_letters(spec, limit).await
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        self.inner.replay_dead_letters(spec, which).await
    }

    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        self.inner.broker_objects(topology)
    }

    async fn teardown(&self, topology: &Topology) -> Result<()> {
        if self.flaw == Flaw::KeepsTopology {
            return Ok(());
        }
        self.inner.teardown(topology).await
    }
}

impl Subscriber for FlawedSubscriber {
    type Acker = FlawedAcker;

    async fn next(&mut self) -> Option<Result<Delivery<FlawedAcker>>> {
        if let Some(held) = self.held.pop_front() {
            return Some(Ok(held));
        }
        if self.dead_lettered.load(Ordering::SeqCst) {
            return None;
        }
        let first = loop {
            let d = match self.inner.next().await? {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            if self.flaw != Flaw::SwallowsPoison || d.undecodable.is_none() {
                break d;
            }
            if d.acker.ack().await.is_err() {
                return Some(Err(Error::unavailable("flawed: ack failed")));
            }
        };
        match self.flaw {
            Flaw::StopsAfterDeadLetter => {
                let mut d = Delivery::new(
                    first.envelope,
                    first.attempt,
                    first.redelivered,
                    FlawedAcker::Stopping(first.acker, self.dead_lettered.clone()),
                );
                d.undecodable = first.undecodable;
                Some(Ok(d))
            }
            Flaw::RedeliversDeadLetters => {
                let mut d = Delivery::new(
                    first.envelope,
                    first.attempt,
                    first.redelivered,
                    FlawedAcker::Redelivering(first.acker),
                );
                d.undecodable = first.undecodable;
                Some(Ok(d))
            }
            Flaw::RetryDropsTraceContext => {
                let mut d = Delivery::new(
                    first.envelope,
                    first.attempt,
                    first.redelivered,
                    FlawedAcker::Forgetting(first.acker),
                );
                d.undecodable = first.undecodable;
                Some(Ok(d))
            }
            Flaw::AcksOnReceipt => {
                let Delivery {
                    envelope,
                    attempt,
                    redelivered,
                    acker,
                    ..
                } = first;
                if acker.ack().await.is_err() {
                    return Some(Err(Error::unavailable("flawed: ack failed")));
                }
                Some(Ok(Delivery::new(
                    envelope,
                    attempt,
                    redelivered,
                    FlawedAcker::Settled,
                )))
            }
            Flaw::HoldsBack => {
                for _ in 0..3 {
                    match tokio::time::timeout(Duration::from_millis(20), self.inner.next()).await {
                        Ok(Some(Ok(later))) => self.held.push_back(wrap(later)),
                        _ => break,
                    }
                }
                self.held.push_back(wrap(first));
                self.held.pop_front().map(Ok)
            }
            _ => Some(Ok(wrap(first))),
        }
    }
}

impl Acker for FlawedAcker {
    async fn ack(self) -> Result<(), (Error, Self)> {
        match self {
            FlawedAcker::Real(a) => a.ack().await.map_err(|(e, a)| (e, FlawedAcker::Real(a))),
            FlawedAcker::Redelivering(a) => a
                .ack()
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Redelivering(a))),
            FlawedAcker::Stopping(a, stop) => a
                .ack()
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Stopping(a, stop))),
            FlawedAcker::Forgetting(a) => a
                .ack()
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Forgetting(a))),
            FlawedAcker::Settled => Ok(()),
        }
    }

    async fn retry(
        self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        match self {
            FlawedAcker::Real(a) => a
                .retry(envelope, next_attempt, delay)
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Real(a))),
            FlawedAcker::Redelivering(a) => a
                .retry(envelope, next_attempt, delay)
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Redelivering(a))),
            FlawedAcker::Stopping(a, stop) => a
                .retry(envelope, next_attempt, delay)
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Stopping(a, stop))),
            FlawedAcker::Forgetting(a) => {
                let mut forgotten = (*envelope).clone();
                forgotten.traceparent = None;
                forgotten.tracestate = None;
                a.retry(Arc::new(forgotten), next_attempt, delay)
                    .await
                    .map_err(|(e, a)| (e, FlawedAcker::Forgetting(a)))
            }
            FlawedAcker::Settled => Ok(()),
        }
    }

    async fn dead_letter(
        self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        match self {
            FlawedAcker::Real(a) => a
                .dead_letter(envelope, info)
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Real(a))),
            FlawedAcker::Redelivering(a) => a
                .retry(
                    envelope,
                    info.attempts.saturating_add(1),
                    Duration::from_millis(20),
                )
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Redelivering(a))),
            FlawedAcker::Forgetting(a) => a
                .dead_letter(envelope, info)
                .await
                .map_err(|(e, a)| (e, FlawedAcker::Forgetting(a))),
            FlawedAcker::Stopping(a, stop) => {
                stop.store(true, Ordering::SeqCst);
                a.dead_letter(envelope, info)
                    .await
                    .map_err(|(e, a)| (e, FlawedAcker::Stopping(a, stop)))
            }
            FlawedAcker::Settled => Ok(()),
        }
    }
}

/// The connect timeout the `unreachable_broker` case gives its transports.
const UNREACHABLE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn flawed(flaw: Flaw) -> Factory {
    let memory = Memory::new();
    let disconnected = Arc::new(AtomicBool::new(false));
    let transport: Arc<dyn DynTransport> = Arc::new(Flawed {
        inner: memory.clone(),
        flaw,
        disconnected: disconnected.clone(),
        unreachable: None,
    });
    Factory::shared(format!("memory with flaw {flaw:?}"), transport)
        .adversary(Arc::new(FlawedAdversary {
            inner: memory,
            flaw,
            disconnected,
        }))
        .patience(Duration::from_secs(3))
        .quiet(Duration::from_millis(200))
}

/// Run `case` against `factory`, expecting it to fail with a message containing `says`.
fn must_fail<'a, F>(
    factory: &'a Factory,
    name: &str,
    case: impl FnOnce(&'a dyn TransportFactory) -> F,
    says: &str,
) where
    F: Future<Output = ()> + 'a,
{
    must_fail_with(conformance::run, factory, name, case, says)
}

/// [`must_fail`] with the runner of the trace cases.
#[cfg(feature = "opentelemetry")]
fn must_fail_traced<'a, F>(
    factory: &'a Factory,
    name: &str,
    case: impl FnOnce(&'a dyn TransportFactory) -> F,
    says: &str,
) where
    F: Future<Output = ()> + 'a,
{
    must_fail_with(conformance::run_traced, factory, name, case, says)
}

fn must_fail_with<'a, F>(
    runner: fn(&dyn TransportFactory, &str, F),
    factory: &'a Factory,
    name: &str,
    case: impl FnOnce(&'a dyn TransportFactory) -> F,
    says: &str,
) where
    F: Future<Output = ()> + 'a,
{
    let outcome = catch_unwind(AssertUnwindSafe(|| runner(factory, name, case(factory))));
    let panic = outcome.expect_err(&format!(
        "{name} passed on {}: the suite misses that flaw",
        factory.name()
    ));
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains(says),
        "{name} failed on {}, but not for the expected reason ({says:?}): {message}",
        factory.name()
    );
}

#[test]
fn fan_out_catches_lost_envelopes() {
    must_fail(
        &flawed(Flaw::LosesEnvelopes),
        "fan_out",
        conformance::fan_out,
        "in vain",
    );
}

#[test]
fn publish_confirms_catches_dropped_headers() {
    must_fail(
        &flawed(Flaw::DropsHeaders),
        "publish_confirms",
        conformance::publish_confirms,
        "custom header",
    );
}

#[test]
fn claim_check_round_trip_catches_dropped_headers() {
    // Without its claim-check headers the 5 MiB event is an empty payload: never handled.
    must_fail(
        &flawed(Flaw::DropsHeaders),
        "claim_check_round_trip",
        conformance::claim_check_round_trip,
        "in vain",
    );
}

#[test]
fn at_least_once_redelivery_catches_ack_on_receipt() {
    must_fail(
        &flawed(Flaw::AcksOnReceipt),
        "at_least_once_redelivery",
        conformance::at_least_once_redelivery,
        "in vain",
    );
}

#[test]
fn retry_then_dead_letter_catches_ack_on_receipt() {
    must_fail(
        &flawed(Flaw::AcksOnReceipt),
        "retry_then_dead_letter",
        conformance::retry_then_dead_letter,
        "in vain",
    );
}

#[test]
fn ordering_per_key_catches_reordered_deliveries() {
    must_fail(
        &flawed(Flaw::HoldsBack),
        "ordering_per_key",
        conformance::ordering_per_key,
        "handled in this order",
    );
}

#[test]
fn poison_payloads_catches_hidden_dead_letters() {
    must_fail(
        &flawed(Flaw::HidesDeadLetters),
        "poison_payloads",
        conformance::poison_payloads,
        "in vain",
    );
}

#[test]
fn competing_consumers_catches_fan_out_to_instances() {
    must_fail(
        &flawed(Flaw::NoCompetition),
        "competing_consumers",
        conformance::competing_consumers,
        "do not compete",
    );
}

#[test]
fn raw_messages_catches_swallowed_poison() {
    must_fail(
        &flawed(Flaw::SwallowsPoison),
        "raw_messages",
        conformance::raw_messages,
        "in vain",
    );
}

#[test]
fn reserved_headers_catches_dropped_headers() {
    must_fail(
        &flawed(Flaw::DropsHeaders),
        "reserved_headers",
        conformance::reserved_headers,
        "tenant",
    );
}

#[test]
fn panics_anywhere_catches_a_consumer_that_stops() {
    must_fail(
        &flawed(Flaw::StopsAfterDeadLetter),
        "panics_anywhere",
        conformance::panics_anywhere,
        "in vain",
    );
}

#[test]
fn dropped_connection_catches_loss_after_reconnect() {
    must_fail(
        &flawed(Flaw::LosesAfterReconnect),
        "dropped_connection",
        conformance::dropped_connection,
        "in vain",
    );
}

#[test]
fn teardown_removes_topology_catches_a_teardown_that_keeps_queues() {
    must_fail(
        &flawed(Flaw::KeepsTopology),
        "teardown_removes_topology",
        conformance::teardown_removes_topology,
        "came back",
    );
}

#[test]
fn unreachable_broker_catches_an_outage_reported_as_a_backend_error() {
    must_fail(
        &flawed(Flaw::UnreachableAsBackend),
        "unreachable_broker",
        conformance::unreachable_broker,
        "Unavailable",
    );
}

#[test]
fn unreachable_broker_catches_a_connect_that_never_gives_up() {
    must_fail(
        &flawed(Flaw::UnreachableHangs),
        "unreachable_broker",
        conformance::unreachable_broker,
        "did not fail within",
    );
}

#[test]
fn permanent_failure_catches_dead_letters_delivered_again() {
    must_fail(
        &flawed(Flaw::RedeliversDeadLetters),
        "permanent_failure",
        conformance::permanent_failure,
        "runs the handler once",
    );
}

#[cfg(feature = "opentelemetry")]
#[test]
fn trace_publish_to_process_catches_a_transport_that_drops_the_trace_context() {
    must_fail_traced(
        &flawed(Flaw::DropsTraceContext),
        "trace_publish_to_process",
        conformance::trace_publish_to_process,
        "in the request's trace",
    );
}

#[cfg(feature = "opentelemetry")]
#[test]
fn trace_retries_and_dead_letters_catches_a_retry_that_drops_the_trace_context() {
    must_fail_traced(
        &flawed(Flaw::RetryDropsTraceContext),
        "trace_retries_and_dead_letters",
        conformance::trace_retries_and_dead_letters,
        "process spans in the trace",
    );
}

#[cfg(feature = "opentelemetry")]
#[test]
fn trace_publish_to_process_catches_an_unnamed_system() {
    must_fail_traced(
        &flawed(Flaw::UnnamedSystem),
        "trace_publish_to_process",
        conformance::trace_publish_to_process,
        "Capabilities::system",
    );
}

#[test]
fn scheduled_delivery_catches_dropped_headers() {
    // Without `tidings-deliver-at` the scheduled events are handled at once.
    must_fail(
        &flawed(Flaw::DropsHeaders),
        "scheduled_delivery",
        conformance::scheduled_delivery,
        "before its time",
    );
}
