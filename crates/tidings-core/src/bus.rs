//! The bus: one service's handle for publishing and for running its subscriptions, and the
//! builder that validates the registrations, provisions topology and starts consumers.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::codec::{Codec, DecodeLimits};
use crate::consumer::{Dispatcher, Worker};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{EventInfo, Publishable, Topic};
use crate::retry::RetryPolicy;
use crate::subscription::{ErasedSubscription, Subscription};
use crate::topology::{BrokerObject, DeadLetter, Replay, SubscriptionSpec, TopicSpec, Topology};
use crate::transport::{DynTransport, Transport};

/// Options for one publish: ordering key, custom headers, and flow ids.
///
/// ```
/// use tidings_core::PublishOptions;
/// let opts = PublishOptions::new().ordering_key("book-42").header("tenant", "north");
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    ordering_key: Option<String>,
    headers: Vec<(String, String)>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl PublishOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Events with the same key are handled in publish order (overrides the event's own
    /// key).
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    /// A custom header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// The correlation id of the flow.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }
    /// The id of the event that caused this one.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }
    /// W3C `traceparent` to carry.
    pub fn traceparent(mut self, value: impl Into<String>) -> Self {
        self.traceparent = Some(value.into());
        self
    }
    /// W3C `tracestate` to carry.
    pub fn tracestate(mut self, value: impl Into<String>) -> Self {
        self.tracestate = Some(value.into());
        self
    }
}

/// A service's bus: publish integration events and run subscriptions.
///
/// Cheap to clone; all clones share one set of consumers. Build it with
/// [`Bus::builder`].
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

pub(crate) struct BusInner {
    service: Arc<str>,
    namespace: Option<String>,
    transport: Arc<dyn DynTransport>,
    codec: Codec,
    max_message_size: usize,
    /// (topic NAME, broker topic name) for each declared topic.
    topics: Vec<(&'static str, String)>,
    /// (topic NAME, spec) for each subscription.
    subscriptions: Vec<(&'static str, SubscriptionSpec)>,
    /// What the bus provisioned, for `broker_objects` and `teardown`.
    topology: Topology,
    /// Header prefixes the transport's broker keeps for itself.
    reserved_header_prefixes: &'static [&'static str],
    shutdown: CancellationToken,
    consumers: TaskTracker,
    closed: AtomicBool,
}

impl Bus {
    /// Start building the bus of `service` (the bounded context's name, e.g. `"catalog"`).
    pub fn builder(service: impl Into<String>) -> BusBuilder {
        BusBuilder {
            service: service.into(),
            transport: None,
            codec: Codec::default(),
            limits: DecodeLimits::default(),
            retry: RetryPolicy::default(),
            namespace: None,
            topics: Vec::new(),
            subscriptions: Vec::new(),
            companions: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn from_inner(inner: Arc<BusInner>) -> Self {
        Bus { inner }
    }

    /// The service this bus belongs to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Publish one event (or a value of a topic enum), returning its envelope id once the
    /// transport confirmed it.
    ///
    /// Fails with [`ErrorKind::NotDeclared`] if the service did not declare the event's
    /// topic with [`BusBuilder::publishes`], [`ErrorKind::MessageTooLarge`] over the size
    /// limit, and with the transport's error if the broker refused or is unreachable.
    pub async fn publish<P: Publishable>(&self, event: P) -> Result<Uuid> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// Publish one event with options (ordering key, headers, flow ids).
    pub async fn publish_with<P: Publishable>(
        &self,
        event: P,
        options: PublishOptions,
    ) -> Result<Uuid> {
        let topic = self.topic_of::<P::Topic>()?;
        let envelope = self.envelope(&event, options)?;
        let id = envelope.id;
        self.inner
            .transport
            .publish_dyn(topic, vec![envelope])
            .await
            .map_err(|e| {
                e.context(format_args!(
                    "publishing `{}` to `{topic}`",
                    event.event_name()
                ))
            })?;
        Ok(id)
    }

    /// Publish several events of one topic in one transport call, returning their ids in
    /// order once the transport confirmed all of them. On error, none or only some may have
    /// been published; publishing them again is safe for idempotent subscribers.
    pub async fn publish_batch<P, I>(&self, events: I) -> Result<Vec<Uuid>>
    where
        P: Publishable,
        I: IntoIterator<Item = P>,
    {
        let topic = self.topic_of::<P::Topic>()?;
        let envelopes = events
            .into_iter()
            .map(|e| self.envelope(&e, PublishOptions::default()))
            .collect::<Result<Vec<_>>>()?;
        let ids = envelopes.iter().map(|e| e.id).collect();
        if !envelopes.is_empty() {
            self.inner
                .transport
                .publish_dyn(topic, envelopes)
                .await
                .map_err(|e| e.context(format_args!("publishing a batch to `{topic}`")))?;
        }
        Ok(ids)
    }

    /// Publish an envelope built elsewhere (the outbox relay, a bridge) to topic `T` as it
    /// is. The envelope keeps its id, time and headers.
    pub async fn publish_envelopes<T: Topic>(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let topic = self.topic_of::<T>()?;
        self.publish_envelopes_to(topic, envelopes).await
    }

    /// Publish envelopes to a broker topic by name, as they are; for relays that store the
    /// topic name with the envelope.
    pub async fn publish_envelopes_to(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        self.check_open()?;
        for env in &envelopes {
            self.check_size(env)?;
        }
        self.inner
            .transport
            .publish_dyn(topic, envelopes)
            .await
            .map_err(|e| e.context(format_args!("publishing to `{topic}`")))
    }

    /// Encode `event` into an envelope from this service, without publishing it (what the
    /// outbox stores).
    pub fn envelope<P: Publishable>(&self, event: &P, options: PublishOptions) -> Result<Envelope> {
        self.check_open()?;
        let payload = event.encode(self.inner.codec)?;
        let mut env = Envelope::new(
            event.event_name(),
            event.event_version(),
            self.inner.service.clone(),
            self.inner.codec.content_type(),
            payload,
        );
        env.ordering_key = options.ordering_key.or_else(|| event.event_ordering_key());
        crate::wire::check_custom_headers(&options.headers, self.inner.reserved_header_prefixes)
            .map_err(|e| e.context(format_args!("publishing `{}`", event.event_name())))?;
        env.headers = options.headers;
        env.correlation_id = options.correlation_id;
        env.causation_id = options.causation_id;
        env.traceparent = options.traceparent;
        env.tracestate = options.tracestate;
        self.check_size(&env)?;
        Ok(env)
    }

    /// The broker name of declared topic `T`.
    pub fn topic_name<T: Topic>(&self) -> Result<&str> {
        self.topic_of::<T>()
    }

    fn topic_of<T: Topic>(&self) -> Result<&str> {
        self.inner
            .topics
            .iter()
            .find(|(name, _)| *name == T::NAME)
            .map(|(_, broker)| broker.as_str())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotDeclared,
                    format!(
                        "service `{}` publishes to topic `{}` but did not declare it: add `.publishes::<{}>()` to its Bus::builder",
                        self.inner.service,
                        T::NAME,
                        std::any::type_name::<T>().rsplit("::").next().unwrap_or(T::NAME)
                    ),
                )
            })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::closed(format!(
                "the bus of `{}` was shut down",
                self.inner.service
            )));
        }
        Ok(())
    }

    fn check_size(&self, env: &Envelope) -> Result<()> {
        let size = env.wire_size();
        if size > self.inner.max_message_size {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "`{}` encodes to about {size} bytes, over the limit of {} bytes: publish a reference to the data instead of the data",
                    env.event_type, self.inner.max_message_size
                ),
            ));
        }
        Ok(())
    }

    fn subscription_spec<T: Topic>(&self, name: Option<&str>) -> Result<&SubscriptionSpec> {
        let mut matching = self.inner.subscriptions.iter().filter(|(t, spec)| {
            *t == T::NAME
                && name.is_none_or(|n| match &self.inner.namespace {
                    Some(ns) => spec.name == format!("{ns}.{n}"),
                    None => spec.name == n,
                })
        });
        match (matching.next(), matching.next()) {
            (Some((_, spec)), None) => Ok(spec),
            (None, _) => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "service `{}` has no subscription to `{}`{}",
                    self.inner.service,
                    T::NAME,
                    name.map(|n| format!(" named `{n}`")).unwrap_or_default()
                ),
            )),
            (Some(_), Some(_)) => Err(Error::config(format!(
                "service `{}` has several subscriptions to `{}`: name the one you mean",
                self.inner.service,
                T::NAME
            ))),
        }
    }

    /// List up to `limit` dead letters of this service's subscription to topic `T`.
    pub async fn dead_letters<T: Topic>(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let spec = self.subscription_spec::<T>(None)?;
        self.inner.transport.dead_letters_dyn(spec, limit).await
    }

    /// Like [`dead_letters`](Self::dead_letters) for a subscription made with
    /// `Subscription::named(name)`.
    pub async fn dead_letters_named<T: Topic>(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let spec = self.subscription_spec::<T>(Some(name))?;
        self.inner.transport.dead_letters_dyn(spec, limit).await
    }

    /// Send the selected dead letters of this service's subscription to `T` back to it
    /// (after fixing what made them fail); returns how many were replayed.
    pub async fn replay_dead_letters<T: Topic>(&self, which: Replay) -> Result<usize> {
        let spec = self.subscription_spec::<T>(None)?;
        self.inner
            .transport
            .replay_dead_letters_dyn(spec, &which)
            .await
    }

    /// Like [`replay_dead_letters`](Self::replay_dead_letters) for a named subscription.
    pub async fn replay_dead_letters_named<T: Topic>(
        &self,
        name: &str,
        which: Replay,
    ) -> Result<usize> {
        let spec = self.subscription_spec::<T>(Some(name))?;
        self.inner
            .transport
            .replay_dead_letters_dyn(spec, &which)
            .await
    }

    /// What this bus provisioned: the topics it publishes to and its subscriptions.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The names of what the transport created on the broker for this bus (exchanges,
    /// queues, topics, subscriptions, their dead-letter destinations), e.g. to clean up
    /// or to point monitoring at.
    pub fn broker_objects(&self) -> Vec<BrokerObject> {
        self.inner
            .transport
            .broker_objects_dyn(&self.inner.topology)
    }

    /// Shut the bus down, then delete what its transport created on the broker for it,
    /// dead letters included: for tests and short-lived environments. Topics are deleted
    /// even if other services use them, so call it only on an environment you own.
    ///
    /// ```no_run
    /// # async fn f(bus: tidings_core::Bus) -> tidings_core::Result<()> {
    /// for object in bus.broker_objects() {
    ///     println!("created {object}"); // e.g. queue `catalog.lending`
    /// }
    /// bus.teardown().await?; // shut down, then delete them
    /// # Ok(()) }
    /// ```
    pub async fn teardown(&self) -> Result<()> {
        self.shutdown().await;
        self.inner
            .transport
            .teardown_dyn(&self.inner.topology)
            .await
            .map_err(|e| {
                e.context(format_args!(
                    "tearing down the topology of `{}`",
                    self.inner.service
                ))
            })
    }

    /// The transport this bus runs on.
    pub fn transport(&self) -> &Arc<dyn DynTransport> {
        &self.inner.transport
    }

    /// Stop taking deliveries, wait for the handlers in flight, and return; no handler of
    /// this bus runs after it returns. Deliveries taken but not started are released to
    /// be delivered again. Publishing afterwards fails with [`ErrorKind::Closed`].
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
        self.inner.consumers.close();
        self.inner.consumers.wait().await;
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("service", &self.inner.service)
            .field("topics", &self.inner.topics)
            .field(
                "subscriptions",
                &self
                    .inner
                    .subscriptions
                    .iter()
                    .map(|(_, s)| s.queue_name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for BusInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Background work that runs with a bus and stops with it: `build()` starts it after the
/// consumers, and `shutdown()` cancels `shutdown` and waits for it. The outbox relay is
/// one (`Relay::companion`).
///
/// A companion holds a clone of the bus, so a bus with companions stays alive until
/// `shutdown()` is called.
pub trait Companion: Send + 'static {
    /// Run until `shutdown` is cancelled.
    fn run(self: Box<Self>, bus: Bus, shutdown: CancellationToken) -> BoxFuture<'static, ()>;
}

type Connect = BoxFuture<'static, Result<Arc<dyn DynTransport>>>;

enum TransportSource {
    Ready(Arc<dyn DynTransport>),
    Pending(Connect),
}

/// Builds a [`Bus`]: the transport, the topics the service publishes, its subscriptions,
/// and options. `build()` validates everything and fails with a message that says what to
/// change.
///
/// ```no_run
/// # async fn f<T: tidings_core::Transport>(transport: T) -> tidings_core::Result<()> {
/// use tidings_core::{Bus, Codec, RetryPolicy};
/// let bus = Bus::builder("catalog")
///     .transport(transport)
///     .codec(Codec::MessagePack)
///     .retry(RetryPolicy::default().immediate(2))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct BusBuilder {
    service: String,
    transport: Option<TransportSource>,
    codec: Codec,
    limits: DecodeLimits,
    retry: RetryPolicy,
    namespace: Option<String>,
    topics: Vec<(&'static str, &'static [EventInfo])>,
    subscriptions: Vec<ErasedSubscription>,
    companions: Vec<Box<dyn Companion>>,
    problems: Vec<String>,
}

impl BusBuilder {
    /// The transport: `Memory::new()`, `RabbitMq::connect(url)`, ... — the one line that
    /// moves a service between backends.
    pub fn transport(self, transport: impl Transport) -> Self {
        self.transport_shared(Arc::new(transport))
    }

    /// A transport shared with other buses (several services in one process).
    pub fn transport_shared(mut self, transport: Arc<dyn DynTransport>) -> Self {
        self.transport = Some(TransportSource::Ready(transport));
        self
    }

    /// A transport that connects during `build()` (used by `transport_url`).
    pub fn transport_from<F>(mut self, connect: F) -> Self
    where
        F: Future<Output = Result<Arc<dyn DynTransport>>> + Send + 'static,
    {
        self.transport = Some(TransportSource::Pending(Box::pin(connect)));
        self
    }

    /// Declare that this service publishes the events of topic `T`.
    pub fn publishes<T: Topic>(mut self) -> Self {
        match self.topics.iter().find(|(n, _)| *n == T::NAME) {
            None => self.topics.push((T::NAME, T::events())),
            Some((_, events)) if *events == T::events() => {}
            Some(_) => self.problems.push(format!(
                "two different topic types are named `{}`: every topic needs its own #[topic(name = ..)]",
                T::NAME
            )),
        }
        self
    }

    /// Add a subscription.
    pub fn subscribe<T: Topic, S>(mut self, subscription: Subscription<T, S>) -> Self {
        self.subscriptions.push(subscription.into());
        self
    }

    /// Run `companion` with the bus: started by `build()`, stopped by `shutdown()`.
    pub fn with_companion(mut self, companion: impl Companion) -> Self {
        self.companions.push(Box::new(companion));
        self
    }

    /// The codec for published events (default MessagePack). Received events are decoded by
    /// their content type whatever this is.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Limits for decoding received payloads (size and nesting depth); the size limit also
    /// caps what this bus publishes.
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The retry policy of subscriptions that set none.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Prefix every broker name (topics and subscriptions) with `namespace.`, to keep
    /// environments or test runs apart on one broker.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    fn broker_name(&self, name: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_string(),
        }
    }

    fn validate(&self) -> Result<()> {
        let mut problems = self.problems.clone();
        if !valid_name(&self.service) {
            problems.push(format!(
                "service name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.service
            ));
        }
        if Codec::for_content_type(self.codec.content_type()).is_none() {
            problems.push(format!(
                "the {:?} codec is not compiled in: enable the matching feature of tidings (`json` or `msgpack`)",
                self.codec
            ));
        }
        if self.transport.is_none() {
            problems.push(
                "no transport: add `.transport(Memory::new())` (or RabbitMq, Kafka, ServiceBus) or `.transport_url(..)`".into(),
            );
        }
        // One wire name, one event, across every topic the service knows.
        let mut seen: HashMap<&str, (&str, &str)> = HashMap::new();
        let known = self
            .topics
            .iter()
            .map(|(t, events)| (*t, *events))
            .chain(self.subscriptions.iter().map(|s| (s.topic, s.topic_events)));
        let mut visited = HashSet::new();
        for (topic, events) in known {
            if !visited.insert(topic) {
                continue;
            }
            for e in events {
                if let Some((other_topic, other_type)) = seen.insert(e.name, (topic, e.type_name)) {
                    problems.push(format!(
                        "two events share the wire name `{}`: `{}` in topic `{}` and `{}` in topic `{}`; give each a distinct #[event(name = ..)]",
                        e.name, other_type, other_topic, e.type_name, topic
                    ));
                }
            }
        }
        let mut names = HashSet::new();
        for s in &self.subscriptions {
            problems.extend(s.errors.iter().cloned());
            if s.handlers.is_empty() {
                problems.push(format!(
                    "the subscription to `{}` has no handlers: add `.on(handler)` for the events it should handle",
                    s.topic
                ));
            }
            for (name, version) in s.upcasters.keys() {
                if !s.handlers.iter().any(|h| h.name == *name) {
                    problems.push(format!(
                        "an upcaster for `{name}` v{version} is registered but the subscription to `{}` has no handler for `{name}`",
                        s.topic
                    ));
                }
            }
            let name = s.name.clone().unwrap_or_else(|| self.service.clone());
            if !valid_name(&name) {
                problems.push(format!("subscription name {name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"));
            }
            if !names.insert((name.clone(), s.topic)) {
                problems.push(format!(
                    "two subscriptions named `{name}` to topic `{}`: give the second one `.named(..)`",
                    s.topic
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "cannot build the bus of `{}`: {}",
                self.service,
                problems.join("; ")
            )))
        }
    }

    /// Validate the registrations, connect the transport, provision the topology and start
    /// the consumers.
    pub async fn build(mut self) -> Result<Bus> {
        self.validate()?;
        let transport = match self.transport.take().expect("validated") {
            TransportSource::Ready(t) => t,
            TransportSource::Pending(connect) => connect.await?,
        };
        let capabilities = transport.capabilities_dyn();
        let service: Arc<str> = Arc::from(self.service.as_str());

        let mut topology = Topology::new(self.service.clone());
        let topics: Vec<(&'static str, String)> = self
            .topics
            .iter()
            .map(|(name, _)| (*name, self.broker_name(name)))
            .collect();
        for ((_, events), (_, broker)) in self.topics.iter().zip(&topics) {
            topology
                .publishes
                .push(TopicSpec::new(broker.clone(), events.to_vec()));
        }

        let mut dispatchers = Vec::new();
        let mut subscriptions = Vec::new();
        for s in std::mem::take(&mut self.subscriptions) {
            let topic = self.broker_name(s.topic);
            let name = self.broker_name(s.name.as_deref().unwrap_or(&self.service));
            let mut spec = SubscriptionSpec::new(
                self.service.clone(),
                name.clone(),
                topic.clone(),
                s.handlers.iter().map(|h| h.name.to_string()).collect(),
            );
            spec.prefetch = s
                .prefetch
                .unwrap_or(100)
                .max(s.concurrency.min(u16::MAX as usize) as u16);
            topology.subscriptions.push(spec.clone());
            subscriptions.push((s.topic, spec.clone()));
            dispatchers.push(Arc::new(Dispatcher {
                spec,
                handlers: s.handlers,
                upcasters: s.upcasters,
                policy: s.policy.unwrap_or(self.retry),
                concurrency: s.concurrency,
                limits: self.limits,
                delayed_redelivery: capabilities.delayed_redelivery,
                service: service.clone(),
                subscription: Arc::from(name.as_str()),
                topic: Arc::from(topic.as_str()),
                bus: OnceLock::new(),
            }));
        }

        transport.provision_dyn(&topology).await.map_err(|e| {
            e.context(format_args!(
                "provisioning the topology of `{}`",
                self.service
            ))
        })?;

        let inner = Arc::new(BusInner {
            service,
            namespace: self.namespace.clone(),
            transport: transport.clone(),
            codec: self.codec,
            max_message_size: self.limits.max_size.min(capabilities.max_message_size),
            topics,
            subscriptions,
            topology,
            reserved_header_prefixes: capabilities.reserved_header_prefixes,
            shutdown: CancellationToken::new(),
            consumers: TaskTracker::new(),
            closed: AtomicBool::new(false),
        });
        for dispatcher in dispatchers {
            let _ = dispatcher.bus.set(Arc::downgrade(&inner));
            let worker = Worker {
                dispatcher: dispatcher.clone(),
                shutdown: inner.shutdown.child_token(),
            };
            let run = transport
                .consume_dyn(&dispatcher.spec, worker)
                .await
                .map_err(|e| {
                    e.context(format_args!(
                        "subscribing `{}` to `{}`",
                        dispatcher.spec.name, dispatcher.spec.topic
                    ))
                });
            match run {
                Ok(run) => {
                    inner.consumers.spawn(run);
                }
                Err(e) => {
                    let bus = Bus { inner };
                    bus.shutdown().await;
                    return Err(e);
                }
            }
        }
        for companion in std::mem::take(&mut self.companions) {
            let bus = Bus {
                inner: inner.clone(),
            };
            inner
                .consumers
                .spawn(companion.run(bus, inner.shutdown.child_token()));
        }
        Ok(Bus { inner })
    }
}

impl fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusBuilder")
            .field("service", &self.service)
            .field("codec", &self.codec)
            .field("namespace", &self.namespace)
            .field(
                "topics",
                &self.topics.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("subscriptions", &self.subscriptions.len())
            .field("companions", &self.companions.len())
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
