//! The transport SPI, for those who write a transport rather than use one: the
//! [`Transport`], [`Subscriber`] and [`Acker`] traits, what a delivery carries
//! ([`Delivery`], [`Worker`]), the topology a bus asks for ([`Topology`],
//! [`SubscriptionSpec`], [`TopicSpec`]), the envelope's header names ([`attrs`]),
//! [`connect_within`], [`redact_url`], [`ParsedUrl`], and [`wire`]: the header table, the reserved names
//! and the message as the broker handed it over. Applications never need this module. Byte-level and typing-free.
//!
//! Implementers write [`Transport`] (async methods, associated subscriber type); the
//! [`Bus`](crate::Bus) holds it as the object-safe twin [`DynTransport`], implemented for
//! every `Transport`, so user code is never generic over the transport. The consumer loop
//! is monomorphised per transport, so receiving and settling a delivery costs no dynamic
//! dispatch.

mod url;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::consumer;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::topology::{BrokerObject, DeadLetter, DeadLetterInfo, Replay};

pub use self::url::ParsedUrl;
use self::wire::WireMessage;
pub use crate::consumer::Worker;
pub use crate::envelope::attrs;
pub use crate::redact::redact_url;
pub use crate::schedule::{deliver_at, set_deliver_at, Scheduling, DELIVER_AT};
pub use crate::topology::{SubscriptionSpec, TopicSpec, Topology};

/// What a transport can do; the bus adapts to it and the conformance suite skips cases by
/// it. Start from `Capabilities::default()` and set what differs.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The transport can redeliver an envelope after a delay (`Acker::retry` honours the
    /// delay). Without it the bus waits in place before retrying.
    pub delayed_redelivery: bool,
    /// Deliveries with the same ordering key arrive in publish order to one subscriber.
    pub ordering_key: bool,
    /// Several subscribers with one subscription name share its deliveries.
    pub competing_consumers: bool,
    /// The largest envelope the transport accepts, in bytes.
    pub max_message_size: usize,
    /// Header name prefixes the broker keeps for itself (lower case, e.g. `x-` on
    /// RabbitMQ); a custom header starting with one is refused on publish.
    pub reserved_header_prefixes: &'static [&'static str],
    /// How long the transport waits for its broker before an operation that connects fails
    /// as [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (see
    /// [`connect_within`]); `None` for a transport without a connection (memory).
    pub connect_timeout: Option<Duration>,
    /// The broker, as OpenTelemetry's `messaging.system` names it (`rabbitmq`, `kafka`,
    /// `servicebus`; `memory` for the in-memory hub), for spans and metrics.
    pub system: &'static str,
    /// The transport can tell how many messages wait for a subscription:
    /// [`Transport::backlog`] answers `Some` for a provisioned subscription.
    pub backlog: bool,
    /// What scheduled publishing ([`PublishOptions::deliver_at`](crate::PublishOptions::deliver_at))
    /// offers: the furthest ahead and how late an event may be handled after its time.
    /// Every transport honours the time (the core puts back what arrives early); this
    /// says how precisely.
    pub scheduling: Scheduling,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            delayed_redelivery: false,
            ordering_key: false,
            competing_consumers: true,
            max_message_size: 1024 * 1024,
            reserved_header_prefixes: &[],
            connect_timeout: None,
            system: "unknown",
            backlog: false,
            scheduling: Scheduling::default(),
        }
    }
}

/// A backend that moves envelopes: memory, RabbitMQ, Kafka, Service Bus.
///
/// Contract (checked by the conformance suite in `tidings-testing`):
/// - `publish` resolves only once the broker has accepted every envelope; a refusal or an
///   unreachable broker is an error, never a silent drop.
/// - every subscription receives each envelope published to its topic (at least the ones
///   whose wire name it lists in [`SubscriptionSpec::events`]); subscribers sharing a
///   subscription name compete.
/// - a delivery that is dropped without being settled is delivered again.
pub trait Transport: Send + Sync + 'static {
    /// The stream of deliveries of one subscription.
    type Subscriber: Subscriber;

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// Create what `topology` needs on the broker (idempotent: called by every
    /// `build()`, and again by transports after a reconnect).
    fn provision(&self, topology: &Topology) -> impl Future<Output = Result<()>> + Send;

    /// Publish envelopes to `topic` (a broker topic name from the topology), resolving when
    /// the broker confirmed all of them.
    fn publish(
        &self,
        topic: &str,
        envelopes: Vec<Envelope>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Start receiving deliveries of a subscription provisioned before.
    fn subscribe(
        &self,
        spec: &SubscriptionSpec,
    ) -> impl Future<Output = Result<Self::Subscriber>> + Send;

    /// List up to `limit` dead letters of a subscription, oldest first, without removing
    /// them. A subscription that was never provisioned is
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound), like in every dead-letter
    /// operation.
    fn dead_letters(
        &self,
        spec: &SubscriptionSpec,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Move the selected dead letters back to the subscription and return how many were
    /// moved: each is taken out of the dead letters and what
    /// [`Replay::envelope_for`] returns for it is sent (the parked envelope, or the edited
    /// one of [`Replay::Edited`], without the dead-letter headers).
    fn replay_dead_letters(
        &self,
        spec: &SubscriptionSpec,
        which: &Replay,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// The dead letter of a subscription whose envelope id is `id`, without removing it;
    /// `None` when there is none (never replayed or purged, or an unknown id). An unknown
    /// subscription is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    ///
    /// The default lists every dead letter ([`dead_letters`](Self::dead_letters) with no
    /// limit) and picks the one; a transport that can look one up directly may do better.
    fn dead_letter(
        &self,
        spec: &SubscriptionSpec,
        id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<DeadLetter>>> + Send {
        async move {
            let all = self.dead_letters(spec, usize::MAX).await?;
            Ok(all.into_iter().find(|d| d.envelope.id == id))
        }
    }

    /// Delete the selected dead letters of a subscription for good, and return how many
    /// were deleted: only those `which` selects, and none of them is listed, replayed or
    /// delivered again afterwards. An unknown subscription is
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    ///
    /// The default refuses as [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported):
    /// every transport of this workspace implements it, and a wrapper should forward it.
    fn purge_dead_letters(
        &self,
        spec: &SubscriptionSpec,
        which: &Replay,
    ) -> impl Future<Output = Result<usize>> + Send {
        let _ = which;
        let subscription = spec.name.clone();
        async move {
            Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                format!(
                    "this transport cannot purge the dead letters of `{subscription}`; replay them or delete them with the broker's own tools"
                ),
            ))
        }
    }

    /// How many messages wait for the subscription now (ready in its queue, or its consumer
    /// group's lag on Kafka), not counting dead letters; `None` when the broker cannot tell
    /// cheaply. An unknown subscription is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    ///
    /// A gauge for operators (dashboards, alerts), read from the broker's own counters:
    /// they may lag the broker by a moment, and each transport says what it counts
    /// (messages handed to a consumer and not yet settled may or may not be in it). A
    /// transport that answers `Some` says so with [`Capabilities::backlog`]; the default
    /// answers `None`.
    fn backlog(&self, spec: &SubscriptionSpec) -> impl Future<Output = Result<Option<u64>>> + Send {
        let _ = spec;
        async { Ok(None) }
    }

    /// Delete what [`provision`](Self::provision) created for one subscription alone (its
    /// queue, dead letters, retry objects), leaving its topic and every other subscription
    /// as they are: for temporary subscriptions such as `tidings tail`'s. What is already
    /// gone is not an error.
    ///
    /// The default refuses as [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported):
    /// every transport of this workspace implements it, and a wrapper should forward it.
    fn remove_subscription(
        &self,
        spec: &SubscriptionSpec,
    ) -> impl Future<Output = Result<()>> + Send {
        let subscription = spec.name.clone();
        async move {
            Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                format!("this transport cannot remove the subscription `{subscription}` alone"),
            ))
        }
    }

    /// The names of what [`provision`](Self::provision) creates on the broker for
    /// `topology` (exchanges, queues, topics, subscriptions), without touching the broker.
    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject>;

    /// Delete what [`provision`](Self::provision) created for `topology`, dead letters
    /// included (for tests and short-lived environments); what is already gone is not an
    /// error. Topics other services publish to are deleted too: call it only for
    /// environments you own.
    fn teardown(&self, topology: &Topology) -> impl Future<Output = Result<()>> + Send;
}

/// The deliveries of one subscription.
pub trait Subscriber: Send + 'static {
    /// How this transport settles a delivery.
    type Acker: Acker;

    /// The next delivery; `None` once the subscription has ended for good. An `Err` is a
    /// transient failure (the bus logs it, waits, and asks again). Must be cancel-safe:
    /// dropping the future loses no delivery.
    fn next(&mut self) -> impl Future<Output = Option<Result<Delivery<Self::Acker>>>> + Send;
}

/// One received envelope, with its delivery count and the means to settle it.
///
/// Transports that move bytes build it with [`Delivery::from_wire`], which decides whether
/// the message is an envelope; a message that is not becomes a placeholder envelope with
/// [`undecodable`](Self::undecodable) set, and the bus dead-letters it like any other
/// poison message.
#[non_exhaustive]
#[derive(Debug)]
pub struct Delivery<A> {
    /// The envelope (for an undecodable message, the placeholder that carries it).
    pub envelope: Arc<Envelope>,
    /// How many times this envelope has been delivered to the subscription, 1 the first
    /// time.
    pub attempt: u32,
    /// Whether the broker flagged this as a redelivery.
    pub redelivered: bool,
    /// Settles the delivery.
    pub acker: A,
    /// Why the message is not a valid envelope, when it is not: the bus dead-letters the
    /// placeholder in [`envelope`](Self::envelope) with this reason, without running a
    /// handler.
    pub undecodable: Option<String>,
    /// The partition the message came from, on brokers that have them (Kafka), for the
    /// `messaging.destination.partition.id` of its process span.
    pub partition: Option<i32>,
}

impl<A> Delivery<A> {
    /// A delivery of an envelope the transport received as such (the memory transport).
    pub fn new(envelope: Arc<Envelope>, attempt: u32, redelivered: bool, acker: A) -> Self {
        Delivery {
            envelope,
            attempt,
            redelivered,
            acker,
            undecodable: None,
            partition: None,
        }
    }

    /// A delivery of a message as the broker handed it over: the core reads the envelope
    /// out of its headers (or, when it is not one, wraps it in a placeholder and says why)
    /// and the attempt out of the tidings attempt header plus the broker's count.
    pub fn from_wire(message: WireMessage<'_>, acker: A) -> Self {
        let decoded = message.decode();
        Delivery {
            envelope: Arc::new(decoded.envelope),
            attempt: decoded.attempt,
            redelivered: decoded.redelivered,
            acker,
            undecodable: decoded.undecodable,
            partition: None,
        }
    }

    /// Say which partition the message came from.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Settles one delivery, exactly once: acknowledge, redeliver later, or dead-letter.
///
/// A settle that fails hands the acker back with the error, so the caller can try again;
/// an acker dropped unsettled means the envelope is delivered again.
pub trait Acker: Send + 'static {
    /// The envelope was handled (or deliberately skipped): remove it.
    fn ack(self) -> impl Future<Output = Result<(), (crate::Error, Self)>> + Send
    where
        Self: Sized;

    /// Deliver `envelope` again after `delay`, counting it as delivery `next_attempt`.
    fn retry(
        self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> impl Future<Output = Result<(), (crate::Error, Self)>> + Send
    where
        Self: Sized;

    /// Park `envelope` in the subscription's dead-letter destination with `info` written
    /// into its headers, and remove it from the subscription.
    fn dead_letter(
        self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> impl Future<Output = Result<(), (crate::Error, Self)>> + Send
    where
        Self: Sized;
}

/// The object-safe twin of [`Transport`], implemented for every transport. The bus holds
/// an `Arc<dyn DynTransport>`.
pub trait DynTransport: Send + Sync + 'static {
    /// See [`Transport::capabilities`].
    fn capabilities_dyn(&self) -> Capabilities;
    /// See [`Transport::provision`].
    fn provision_dyn<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<()>>;
    /// See [`Transport::publish`].
    fn publish_dyn<'a>(
        &'a self,
        topic: &'a str,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Subscribe, and return the consumer loop that feeds the deliveries to `worker`; the
    /// bus spawns it.
    fn consume_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        worker: Worker,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, ()>>>;
    /// Subscribe to a subscription provisioned before and hand out what it receives as a
    /// stream, each delivery acknowledged once read (for tools that watch a topic,
    /// `tidings tail`, through a temporary subscription of their own that they tear down
    /// afterwards). Nothing is dead-lettered or retried; a failed acknowledgement means the
    /// message may be read again.
    fn watch_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<Watched>>>>;
    /// See [`Transport::dead_letters`].
    fn dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;
    /// See [`Transport::replay_dead_letters`].
    fn replay_dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        which: &'a Replay,
    ) -> BoxFuture<'a, Result<usize>>;
    /// See [`Transport::dead_letter`].
    fn dead_letter_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Option<DeadLetter>>>;
    /// See [`Transport::purge_dead_letters`].
    fn purge_dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        which: &'a Replay,
    ) -> BoxFuture<'a, Result<usize>>;
    /// See [`Transport::backlog`].
    fn backlog_dyn<'a>(&'a self, spec: &'a SubscriptionSpec) -> BoxFuture<'a, Result<Option<u64>>>;
    /// See [`Transport::remove_subscription`].
    fn remove_subscription_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
    ) -> BoxFuture<'a, Result<()>>;
    /// See [`Transport::broker_objects`].
    fn broker_objects_dyn(&self, topology: &Topology) -> Vec<BrokerObject>;
    /// See [`Transport::teardown`].
    fn teardown_dyn<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<()>>;
}

impl<T: Transport> DynTransport for T {
    fn capabilities_dyn(&self) -> Capabilities {
        self.capabilities()
    }
    fn provision_dyn<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.provision(topology))
    }
    fn publish_dyn<'a>(
        &'a self,
        topic: &'a str,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.publish(topic, envelopes))
    }
    fn consume_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        worker: Worker,
    ) -> BoxFuture<'a, Result<BoxFuture<'static, ()>>> {
        Box::pin(async move {
            let subscriber = self.subscribe(spec).await?;
            let run: BoxFuture<'static, ()> = Box::pin(consumer::run(subscriber, worker));
            Ok(run)
        })
    }
    fn watch_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<Watched>>>> {
        Box::pin(async move {
            let subscriber = self.subscribe(spec).await?;
            let stream = futures::stream::unfold(subscriber, |mut subscriber| async move {
                let next = match subscriber.next().await? {
                    Err(e) => Err(e),
                    Ok(delivery) => {
                        let watched = Watched {
                            envelope: delivery.envelope,
                            attempt: delivery.attempt,
                            undecodable: delivery.undecodable,
                        };
                        if let Err((e, _)) = delivery.acker.ack().await {
                            tracing::debug!(error = %e, "acknowledging a watched message failed; it may be read again");
                        }
                        Ok(watched)
                    }
                };
                Some((next, subscriber))
            });
            let stream: BoxStream<'static, Result<Watched>> = Box::pin(stream);
            Ok(stream)
        })
    }
    fn dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(self.dead_letters(spec, limit))
    }
    fn replay_dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        which: &'a Replay,
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(self.replay_dead_letters(spec, which))
    }
    fn dead_letter_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        Box::pin(self.dead_letter(spec, id))
    }
    fn purge_dead_letters_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
        which: &'a Replay,
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(self.purge_dead_letters(spec, which))
    }
    fn backlog_dyn<'a>(&'a self, spec: &'a SubscriptionSpec) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(self.backlog(spec))
    }
    fn remove_subscription_dyn<'a>(
        &'a self,
        spec: &'a SubscriptionSpec,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_subscription(spec))
    }
    fn broker_objects_dyn(&self, topology: &Topology) -> Vec<BrokerObject> {
        self.broker_objects(topology)
    }
    fn teardown_dyn<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.teardown(topology))
    }
}

/// One message read by [`DynTransport::watch_dyn`].
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Watched {
    /// The envelope (for a message that is not one, the placeholder that carries it).
    pub envelope: Arc<Envelope>,
    /// The delivery count of the message on the watching subscription, 1 the first time.
    pub attempt: u32,
    /// Why the message is not a valid envelope, when it is not.
    pub undecodable: Option<String>,
}

/// Connect to a broker within `timeout`, the one rule every transport follows: a
/// connection that fails or does not answer in time is
/// [`ErrorKind::Unavailable`](crate::ErrorKind) (retryable), naming the (redacted)
/// `address` once, with the cause as the source. Refused credentials
/// ([`ErrorKind::Unauthorized`](crate::ErrorKind)) and bad configuration keep their kind.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use tidings_core::{transport::connect_within, ErrorKind};
/// let never = std::future::pending::<tidings_core::Result<()>>();
/// let err = connect_within("amqp://127.0.0.1:1", Duration::from_millis(10), never).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Unavailable);
/// assert!(err.to_string().contains("amqp://127.0.0.1:1"));
/// # }
/// ```
pub async fn connect_within<T>(
    address: &str,
    timeout: Duration,
    connect: impl Future<Output = Result<T>>,
) -> Result<T> {
    use crate::ErrorKind;
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::Unauthorized | ErrorKind::Config) => {
            Err(e.context(format_args!("connecting to {address}")))
        }
        Ok(Err(cause)) => Err(crate::Error::unavailable(format!(
            "cannot connect to the broker at {address}; check that it runs and that the address is right"
        ))
        .with_source(cause)),
        Err(_) => Err(crate::Error::unavailable(format!(
            "cannot connect to the broker at {address}: no answer within {timeout:?} (the connect timeout)"
        ))),
    }
}
