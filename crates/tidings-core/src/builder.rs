//! Building a bus: the transport, the topics a service publishes, its subscriptions and
//! companions; `build()` validates the registrations, provisions the topology and starts
//! the consumers.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, BusInner};
use crate::codec::{Codec, DecodeLimits};
use crate::companion::{Companion, Shutdown};
use crate::consumer::{Dispatcher, Worker};
use crate::error::{Error, Result};
use crate::event::{EventInfo, Topic};
use crate::health::Monitor;
use crate::retry::RetryPolicy;
use crate::subscription::{ErasedSubscription, Subscription};
use crate::telemetry::metrics::{Labels, Metrics, SubscriptionMetrics};
use crate::topology::{SubscriptionSpec, TopicSpec, Topology};
use crate::transport::{DynTransport, Transport};

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
/// # async fn f<T: tidings_core::transport::Transport>(transport: T) -> tidings_core::Result<()> {
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
    claims: crate::claim_check::Claims,
    problems: Vec<String>,
    catalog_sources: crate::catalog::Sources,
}

impl BusBuilder {
    pub(crate) fn new(service: String) -> Self {
        BusBuilder {
            service,
            transport: None,
            codec: Codec::default(),
            limits: DecodeLimits::default(),
            retry: RetryPolicy::default(),
            namespace: None,
            topics: Vec::new(),
            subscriptions: Vec::new(),
            companions: Vec::new(),
            claims: Default::default(),
            problems: Vec::new(),
            catalog_sources: Default::default(),
        }
    }

    /// The transport: `Memory::new()`, `RabbitMq::from_url(url)?`, ... — the one line that
    /// moves a service between backends.
    pub fn transport<T: Transport>(self, transport: T) -> Self {
        let mut builder = self.transport_shared(Arc::new(transport));
        builder.catalog_sources.transport = crate::catalog::TransportInfo::from_type::<T>();
        builder
    }

    /// A transport shared with other buses (several services in one process).
    pub fn transport_shared(mut self, transport: Arc<dyn DynTransport>) -> Self {
        self.transport = Some(TransportSource::Ready(transport));
        self.catalog_sources.transport = Default::default();
        self
    }

    /// Record the transport's URL for the [catalog](Self::catalog), which shows it with
    /// passwords and keys masked; `transport_url` calls it.
    pub fn describe_transport(mut self, url: &str) -> Self {
        self.catalog_sources.transport = crate::catalog::TransportInfo::from_url(url);
        self
    }

    /// The service's [catalog](crate::catalog): what this bus will publish and handle,
    /// with payload schemas, retry policies and the transport (redacted). Needs no broker,
    /// so a test or a `--catalog` flag can write it without running anything;
    /// [`Bus::catalog`] is the same for a built bus.
    pub fn catalog(&self) -> crate::catalog::ServiceCatalog {
        crate::catalog::BusParts {
            service: &self.service,
            namespace: self.namespace.as_deref(),
            codec: self.codec.content_type(),
            retry: &self.retry,
            topics: &self.topics,
            subscriptions: &self.subscriptions,
            sources: &self.catalog_sources,
        }
        .catalog()
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
            None => {
                self.topics.push((T::NAME, T::events()));
                let schemas: crate::catalog::TopicSchemas = T::event_schema;
                self.catalog_sources.topic_schemas.insert(T::NAME, schemas);
            }
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

    /// Send payloads too large for the broker through `claim_check`'s store, and fetch
    /// claim-checked payloads from it before handlers run (see [`ClaimCheck`](crate::ClaimCheck)).
    /// Publishers and subscribers of a topic need a claim check on the same store and
    /// prefix. The bus also sweeps the store of payloads past the retention.
    #[cfg(feature = "claim-check")]
    pub fn claim_check(mut self, claim_check: crate::ClaimCheck) -> Self {
        self.claims = Some(Arc::new(claim_check));
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
        let catalog = self.catalog();
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
        let broker_topics: Vec<&str> = topics.iter().map(|(_, b)| b.as_str()).collect();
        let metrics = Metrics::new(capabilities.system, &service, &broker_topics);
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
            let monitor = Arc::new(Monitor::default());
            let labels = Labels {
                system: capabilities.system,
                service: &service,
                topic: &topic,
                subscription: Some(&name),
            };
            let wire_names: Vec<&'static str> = s.handlers.iter().map(|h| h.name).collect();
            let subscription_metrics = SubscriptionMetrics::new(&labels, &wire_names, &monitor);
            dispatchers.push(Arc::new(Dispatcher {
                spec,
                handlers: s.handlers,
                upcasters: s.upcasters,
                policy: s.policy.unwrap_or(self.retry),
                concurrency: s.concurrency,
                limits: self.limits,
                claims: self.claims.clone(),
                delayed_redelivery: capabilities.delayed_redelivery,
                service: service.clone(),
                subscription: Arc::from(name.as_str()),
                topic: Arc::from(topic.as_str()),
                bus: OnceLock::new(),
                system: capabilities.system,
                metrics: subscription_metrics,
                monitor,
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
            catalog,
            reserved_header_prefixes: capabilities.reserved_header_prefixes,
            scheduling: capabilities.scheduling,
            shutdown: CancellationToken::new(),
            consumers: TaskTracker::new(),
            closed: AtomicBool::new(false),
            system: capabilities.system,
            metrics,
            dispatchers: dispatchers.clone(),
            claims: self.claims.clone(),
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
                    let bus = Bus::from_inner(inner);
                    bus.shutdown().await;
                    return Err(e);
                }
            }
        }
        #[cfg(feature = "claim-check")]
        if let Some(cc) = &self.claims {
            inner.consumers.spawn(crate::claim_check::sweeper(
                cc.clone(),
                inner.shutdown.child_token(),
            ));
        }
        for companion in std::mem::take(&mut self.companions) {
            let bus = Bus::from_inner(inner.clone());
            inner
                .consumers
                .spawn(companion.run(bus, Shutdown::from_token(inner.shutdown.child_token())));
        }
        Ok(Bus::from_inner(inner))
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
