//! The bus: one service's handle for publishing and for running its subscriptions (built
//! by [`BusBuilder`](crate::BusBuilder) in `builder.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::builder::BusBuilder;
use crate::codec::Codec;
use crate::consumer::Dispatcher;
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Publishable, Topic};
use crate::health::Health;
use crate::telemetry::{
    self,
    metrics::{Labels, Metrics},
};
use crate::topology::{BrokerObject, DeadLetter, Replay, SubscriptionSpec, Topology};
use crate::transport::DynTransport;

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
    deliver_at: Option<SystemTime>,
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
    /// Deliver the event no earlier than `at`: subscribers' handlers see it from then on
    /// (within the transport's [`Scheduling::tolerance`](crate::transport::Scheduling)).
    /// A time that has passed publishes at once; one further ahead than the transport's
    /// [`Scheduling::max_delay`](crate::transport::Scheduling) is refused on publish. The
    /// outbox keeps the time, so an event enqueued with it is relayed at once and
    /// delivered at its time.
    ///
    /// A scheduled event leaves its ordering key's order: the key's events published after
    /// it but due sooner are handled before it.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tidings_core::PublishOptions;
    /// let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
    /// let options = PublishOptions::new().deliver_at(tomorrow);
    /// ```
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.deliver_at = Some(at);
        self
    }
    /// [`deliver_at`](Self::deliver_at) `delay` from now.
    pub fn deliver_after(self, delay: Duration) -> Self {
        self.deliver_at(SystemTime::now() + delay)
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
    pub(crate) service: Arc<str>,
    pub(crate) namespace: Option<String>,
    pub(crate) transport: Arc<dyn DynTransport>,
    pub(crate) codec: Codec,
    pub(crate) max_message_size: usize,
    /// (topic NAME, broker topic name) for each declared topic.
    pub(crate) topics: Vec<(&'static str, String)>,
    /// (topic NAME, spec) for each subscription.
    pub(crate) subscriptions: Vec<(&'static str, SubscriptionSpec)>,
    /// What the bus provisioned, for `broker_objects` and `teardown`.
    pub(crate) topology: Topology,
    /// What the bus publishes and handles, for [`Bus::catalog`].
    pub(crate) catalog: crate::catalog::ServiceCatalog,
    /// Header prefixes the transport's broker keeps for itself.
    pub(crate) reserved_header_prefixes: &'static [&'static str],
    /// What the transport offers for scheduled publishing.
    pub(crate) scheduling: crate::schedule::Scheduling,
    pub(crate) shutdown: CancellationToken,
    pub(crate) consumers: TaskTracker,
    pub(crate) closed: AtomicBool,
    /// `messaging.system` of the transport, for spans and metrics.
    pub(crate) system: &'static str,
    pub(crate) metrics: Metrics,
    /// The subscriptions' consumers, for `health`.
    pub(crate) dispatchers: Vec<Arc<Dispatcher>>,
    /// Where payloads over the claim-check threshold go.
    pub(crate) claims: crate::claim_check::Claims,
}

impl Bus {
    /// Start building the bus of `service` (the bounded context's name, e.g. `"catalog"`).
    pub fn builder(service: impl Into<String>) -> BusBuilder {
        BusBuilder::new(service.into())
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
        self.send(topic, vec![envelope], true).await.map_err(|e| {
            e.context(format_args!(
                "publishing `{}` to `{topic}`",
                event.event_name()
            ))
        })?;
        Ok(id)
    }

    /// Publish one event to be handled no earlier than `at` (see
    /// [`PublishOptions::deliver_at`]), returning its envelope id once the transport
    /// confirmed it.
    ///
    /// ```no_run
    /// # use tidings_core::{Bus, Event, Result};
    /// # async fn demo<E: tidings_core::Publishable>(bus: &Bus, reminder: E) -> Result<()> {
    /// use std::time::{Duration, SystemTime};
    /// let due = SystemTime::now() + Duration::from_secs(14 * 24 * 3600);
    /// bus.publish_at(reminder, due).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_at<P: Publishable>(&self, event: P, at: SystemTime) -> Result<Uuid> {
        self.publish_with(event, PublishOptions::default().deliver_at(at))
            .await
    }

    /// Publish one event to be handled no earlier than `delay` from now (see
    /// [`PublishOptions::deliver_after`]).
    pub async fn publish_after<P: Publishable>(&self, event: P, delay: Duration) -> Result<Uuid> {
        self.publish_with(event, PublishOptions::default().deliver_after(delay))
            .await
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
            self.send(topic, envelopes, true)
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
        self.send(topic, envelopes, false)
            .await
            .map_err(|e| e.context(format_args!("publishing to `{topic}`")))
    }

    /// Publish envelopes just built for this publish (by converters) to a broker topic by
    /// name: like [`publish_envelopes_to`](Self::publish_envelopes_to), but they take the
    /// send span's trace context, as a [`publish`](Self::publish) would.
    pub(crate) async fn publish_built_to(
        &self,
        topic: &str,
        envelopes: Vec<Envelope>,
    ) -> Result<()> {
        self.check_open()?;
        self.send(topic, envelopes, true)
            .await
            .map_err(|e| e.context(format_args!("publishing to `{topic}`")))
    }

    /// Hand `envelopes` to the transport inside a `send` span, measured. `fresh` envelopes
    /// were built for this publish and take the span's trace context; others (relayed from
    /// the outbox) keep the one they carry.
    async fn send(&self, topic: &str, mut envelopes: Vec<Envelope>, fresh: bool) -> Result<()> {
        let inner = &self.inner;
        crate::claim_check::check_in(&inner.claims, inner.max_message_size, &mut envelopes).await?;
        for env in &envelopes {
            self.check_size(env)?;
        }
        let span = telemetry::send_span(inner.system, &inner.service, topic, &envelopes);
        telemetry::inject(&span, &mut envelopes, fresh);
        let count = envelopes.len();
        let started = Metrics::clock();
        let publishing = inner.transport.publish_dyn(topic, envelopes);
        let result = if span.is_none() {
            publishing.await
        } else {
            publishing.instrument(span.clone()).await
        };
        if let Err(e) = &result {
            telemetry::record_failure(&span, e.kind().as_str());
        }
        let labels = Labels {
            system: inner.system,
            service: &inner.service,
            topic,
            subscription: None,
        };
        inner.metrics.sent(
            &labels,
            count,
            started.map(|s| s.elapsed()).unwrap_or_default(),
            result.as_ref().err(),
        );
        result
    }

    /// Whether each subscription is consuming, reconnecting or stopped, with its handlers in
    /// flight and when it last handled an event: what readiness and liveness probes serve.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        Health {
            service: inner.service.to_string(),
            shut_down: inner.closed.load(Ordering::Relaxed),
            subscriptions: inner
                .dispatchers
                .iter()
                .map(|d| d.monitor.report(&d.subscription, &d.topic))
                .collect(),
        }
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
        crate::transport::wire::check_custom_headers(
            &options.headers,
            self.inner.reserved_header_prefixes,
        )
        .map_err(|e| e.context(format_args!("publishing `{}`", event.event_name())))?;
        env.headers = options.headers;
        env.correlation_id = options.correlation_id;
        env.causation_id = options.causation_id;
        env.traceparent = options.traceparent;
        env.tracestate = options.tracestate;
        if let Some(at) = options.deliver_at {
            crate::schedule::stamp(&mut env, at, &self.inner.scheduling)?;
        }
        telemetry::capture_current(&mut env);
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
        let limit =
            crate::claim_check::size_limit(&self.inner.claims, env, self.inner.max_message_size);
        if size > limit {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "`{}` encodes to about {size} bytes, over the limit of {limit} bytes: publish a reference to the data instead of the data, or configure a claim check",
                    env.event_type
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

    /// The dead letter with envelope id `id` of this service's subscription to `T`, without
    /// removing it; `None` if there is none.
    pub async fn dead_letter<T: Topic>(&self, id: uuid::Uuid) -> Result<Option<DeadLetter>> {
        let spec = self.subscription_spec::<T>(None)?;
        self.inner.transport.dead_letter_dyn(spec, id).await
    }

    /// Delete the selected dead letters of this service's subscription to `T` for good
    /// (nothing else: not the subscription's pending events, not other dead letters);
    /// returns how many were deleted.
    pub async fn purge_dead_letters<T: Topic>(&self, which: Replay) -> Result<usize> {
        let spec = self.subscription_spec::<T>(None)?;
        self.inner
            .transport
            .purge_dead_letters_dyn(spec, &which)
            .await
    }

    /// Like [`purge_dead_letters`](Self::purge_dead_letters) for a named subscription.
    pub async fn purge_dead_letters_named<T: Topic>(
        &self,
        name: &str,
        which: Replay,
    ) -> Result<usize> {
        let spec = self.subscription_spec::<T>(Some(name))?;
        self.inner
            .transport
            .purge_dead_letters_dyn(spec, &which)
            .await
    }

    /// What this bus provisioned: the topics it publishes to and its subscriptions.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The service's [catalog](crate::catalog): the topics it publishes, its
    /// subscriptions with the events and versions they handle and upcast, payload
    /// schemas, retry policies and the transport (redacted). `bus.catalog().to_json()` is
    /// the file `tidings` reads.
    pub fn catalog(&self) -> &crate::catalog::ServiceCatalog {
        &self.inner.catalog
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
