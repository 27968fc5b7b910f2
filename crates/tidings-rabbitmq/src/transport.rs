//! [`RabbitMq`]: the transport value, its shared connection and how it recovers.
//!
//! One AMQP connection per `RabbitMq` value (clones share it), opened on first use. When
//! it drops, the next operation that needs it reconnects with exponential backoff and
//! declares every topology provisioned so far again before anything else uses the new
//! connection. Publishers wait for that within their deadline; subscribers report the
//! failure to the bus's consumer loop, which asks again after a pause.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tidings_core::transport::connect_within;
use tidings_core::{
    transport::{Capabilities, Scheduling, SubscriptionSpec, Topology, Transport},
    BrokerObject, DeadLetter, Error, ErrorKind, Replay, Result,
};
use tokio::time::Instant;

use crate::config::{check_name, scrub, RabbitMqConfig};
use crate::dead_letter;
use crate::error::{code, from_lapin};
use crate::publisher::Publisher;
use crate::subscriber::RabbitMqSubscriber;
use crate::topology::{self, QueueNames};

/// The RabbitMQ transport: give it to `Bus::builder(..).transport(..)`.
///
/// Cheap to clone; clones share one connection. [`new`](Self::new) and
/// [`from_url`](Self::from_url) do no I/O: the connection opens when the bus provisions
/// its topology in `build()`, which fails with a clear error if the broker cannot be
/// reached within the connect timeout. [`connect`](Self::connect) opens it at once.
///
/// ```no_run
/// # async fn run() -> tidings_core::Result<()> {
/// use tidings_core::Bus;
/// use tidings_rabbitmq::RabbitMq;
/// let bus = Bus::builder("lending")
///     .transport(RabbitMq::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMq {
    pub(crate) shared: Arc<Shared>,
}

impl RabbitMq {
    /// The transport with `config` (TLS, queue type, timeouts). No I/O: the URL is
    /// checked and the connection opened when the bus first needs it (`build()`), which
    /// reports a bad URL as an [`ErrorKind::Config`] error.
    pub fn new(config: RabbitMqConfig) -> Self {
        RabbitMq {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The transport for the broker at `url` with the default configuration, the URL
    /// checked at once: an URL that is not `amqp://` or `amqps://`, or has an unknown
    /// option, is an [`ErrorKind::Config`] error. No I/O. Used by `tidings::connect` for
    /// `transport_url("amqp://...")`.
    pub fn from_url(url: &str) -> Result<Self> {
        let config = RabbitMqConfig::new(url);
        config.uri()?;
        Ok(Self::new(config))
    }

    /// The transport with `config`, connected now: one attempt within the connect timeout
    /// ([`RabbitMqConfig::connect_timeout`]). A bad URL is an [`ErrorKind::Config`] error,
    /// refused credentials [`ErrorKind::Unauthorized`], and a broker that refuses the
    /// connection or does not answer in time [`ErrorKind::Unavailable`] (retryable) naming
    /// its address, password hidden.
    ///
    /// ```no_run
    /// # async fn run() -> tidings_core::Result<()> {
    /// use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
    /// let config = RabbitMqConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f");
    /// let transport = RabbitMq::connect(config).await?;
    /// assert!(transport.is_connected());
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: RabbitMqConfig) -> Result<Self> {
        let transport = Self::new(config);
        // The first connection is one attempt within the connect timeout (or the publish
        // timeout, when that is shorter), never retried.
        transport
            .shared
            .connection(transport.shared.deadline())
            .await?;
        Ok(transport)
    }

    /// The configuration.
    pub fn config(&self) -> &RabbitMqConfig {
        &self.shared.config
    }

    /// How many times the transport has (re)connected so far; grows by one on every
    /// recovery. Useful in tests and health checks.
    pub fn connection_generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }

    /// Whether the connection is currently open.
    pub fn is_connected(&self) -> bool {
        self.shared.current().is_some()
    }
}

impl fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMq")
            .field("url", &self.shared.redacted)
            .field("connected", &self.is_connected())
            .field("generation", &self.connection_generation())
            .finish_non_exhaustive()
    }
}

/// A live connection and the number of the (re)connect that opened it.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) connection: Arc<Connection>,
    pub(crate) generation: u64,
}

/// What all clones of a `RabbitMq` share.
pub(crate) struct Shared {
    pub(crate) config: RabbitMqConfig,
    pub(crate) redacted: String,
    current: Mutex<Option<Live>>,
    reconnecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Every topology provisioned so far, declared again after each reconnect.
    topologies: Mutex<Vec<Topology>>,
    /// Exchanges known to exist on the current connection (generation, names).
    exchanges: Mutex<(u64, HashSet<String>)>,
    /// Delay queues declared on the current connection (generation, names).
    delay_queues: Mutex<(u64, HashSet<String>)>,
    pub(crate) publisher: Publisher,
}

impl Shared {
    fn new(config: RabbitMqConfig) -> Self {
        Shared {
            redacted: config.redacted_url(),
            publisher: Publisher::new(config.max_in_flight),
            config,
            current: Mutex::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            topologies: Mutex::new(Vec::new()),
            exchanges: Mutex::new((0, HashSet::new())),
            delay_queues: Mutex::new((0, HashSet::new())),
        }
    }

    /// The deadline of an operation starting now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.config.publish_timeout
    }

    /// The open connection, if there is one.
    pub(crate) fn current(&self) -> Option<Live> {
        let current = self.current.lock().expect("connection lock");
        current
            .as_ref()
            .filter(|live| live.connection.status().connected())
            .cloned()
    }

    /// The open connection, connecting if there is none. The first connection of the
    /// transport is one attempt within the connect timeout, so an unreachable broker is
    /// reported at once; a reconnect after a drop tries again with backoff until
    /// `deadline`. After a reconnect every provisioned topology has been declared again.
    pub(crate) async fn connection(&self, deadline: Instant) -> Result<Live> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let Ok(_guard) = tokio::time::timeout_at(deadline, self.reconnecting.lock()).await else {
            return Err(self.unreachable(None));
        };
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let first = self.generation.load(Ordering::Relaxed) == 0;
        let mut backoff = self.config.reconnect.backoff();
        loop {
            let error = match self.connect_once(deadline).await {
                Ok(live) => return Ok(live),
                Err(e) if first || !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let delay = backoff.next().unwrap_or(self.config.reconnect.max_delay);
            tracing::warn!(
                error = %error, retry_in = ?delay,
                "cannot reconnect to RabbitMQ; trying again"
            );
            if Instant::now() + delay >= deadline {
                return Err(self.unreachable(Some(error)));
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The error of a reconnect that gave up; `last` (the last attempt's error) names the
    /// address already.
    fn unreachable(&self, last: Option<Error>) -> Error {
        match last {
            Some(last) => Error::new(
                ErrorKind::Unavailable,
                format!(
                    "RabbitMQ is unreachable: gave up reconnecting after {:?}",
                    self.config.publish_timeout
                ),
            )
            .with_source(last),
            None => Error::new(
                ErrorKind::Unavailable,
                format!(
                    "RabbitMQ at {} is unreachable: gave up waiting for the reconnect after {:?}",
                    self.redacted, self.config.publish_timeout
                ),
            ),
        }
    }

    /// One connection attempt through [`connect_within`]: within the connect timeout (or
    /// what is left until `deadline`), failures are `Unavailable` naming the address once.
    async fn connect_once(&self, deadline: Instant) -> Result<Live> {
        let uri = self.config.uri()?;
        let name = self
            .config
            .connection_name
            .clone()
            .unwrap_or_else(|| "tidings".into());
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from(name));
        let runtime = lapin::runtime::default_runtime().map_err(|e| {
            from_lapin(
                e,
                "lapin has no tokio runtime: connect from inside a tokio runtime",
            )
        })?;
        let timeout = self
            .config
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(10));
        let connecting = async {
            Connection::connect_uri_with_config(
                uri,
                properties,
                self.config.tls.to_lapin(),
                runtime,
            )
            .await
            .map_err(|e| {
                let e = from_lapin(e, "opening the AMQP connection");
                // lapin's messages never carry the URL or the password, but be sure.
                let shown = e.to_string();
                let scrubbed = scrub(&shown, &self.config.url);
                if scrubbed == shown {
                    e
                } else {
                    Error::new(e.kind(), scrubbed)
                }
            })
        };
        let connection = connect_within(&self.redacted, timeout, connecting).await?;
        // Declare the topology again before anyone uses the new connection.
        let topologies = self.topologies.lock().expect("topologies lock").clone();
        if !topologies.is_empty() {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| from_lapin(e, "opening a channel to declare the topology"))?;
            for topology in &topologies {
                topology::declare(&channel, topology, &self.config).await?;
            }
            let _ = channel.close(200, "declared".into()).await;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let live = Live {
            connection: Arc::new(connection),
            generation,
        };
        *self.current.lock().expect("connection lock") = Some(live.clone());
        if generation > 1 {
            tracing::info!(url = %self.redacted, generation, "reconnected to RabbitMQ; topology declared again");
        } else {
            tracing::debug!(url = %self.redacted, "connected to RabbitMQ");
        }
        Ok(live)
    }

    /// A new channel on the open connection (reconnecting if needed).
    pub(crate) async fn channel(&self, deadline: Instant) -> Result<(Channel, u64)> {
        let live = self.connection(deadline).await?;
        match live.connection.create_channel().await {
            Ok(channel) => Ok((channel, live.generation)),
            Err(e) => Err(from_lapin(e, "opening a channel")),
        }
    }

    /// Make sure the exchange `name` exists before publishing to it (checked once per
    /// connection), so that a publish to an unknown topic fails with
    /// [`ErrorKind::NotFound`] instead of closing the shared publishing channel.
    pub(crate) async fn check_exchange(&self, name: &str, deadline: Instant) -> Result<()> {
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let known = self.exchanges.lock().expect("exchanges lock");
            if known.0 == generation && known.1.contains(name) {
                return Ok(());
            }
        }
        check_name("topic", name)?;
        let (channel, generation) = self.channel(deadline).await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match channel
            .exchange_declare(name.into(), ExchangeKind::Topic, passive, FieldTable::default())
            .await
        {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                self.remember_exchange(name, generation);
                Ok(())
            }
            Err(e) if crate::error::amqp_error(&e).map(|a| a.get_id()) == Some(code::NOT_FOUND) => {
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "the topic exchange `{name}` does not exist on RabbitMQ at {}: declare the topic with `.publishes::<T>()` so that `build()` creates it",
                        self.redacted
                    ),
                ))
            }
            Err(e) => Err(from_lapin(e, format_args!("checking that the exchange `{name}` exists"))),
        }
    }

    fn remember_exchange(&self, name: &str, generation: u64) {
        let mut known = self.exchanges.lock().expect("exchanges lock");
        if known.0 != generation {
            *known = (generation, HashSet::new());
        }
        known.1.insert(name.to_string());
    }

    /// Declare the wait queue `name` of a subscription, of the bucket `ttl_ms`, once per
    /// connection.
    pub(crate) async fn ensure_delay_queue(
        &self,
        names: &QueueNames,
        name: &str,
        ttl_ms: u64,
        deadline: Instant,
    ) -> Result<()> {
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let known = self.delay_queues.lock().expect("delay queues lock");
            if known.0 == generation && known.1.contains(name) {
                return Ok(());
            }
        }
        let (channel, generation) = self.channel(deadline).await?;
        topology::declare_delay_queue(&channel, names, name, ttl_ms).await?;
        let _ = channel.close(200, "declared".into()).await;
        let mut known = self.delay_queues.lock().expect("delay queues lock");
        if known.0 != generation {
            *known = (generation, HashSet::new());
        }
        known.1.insert(name.to_string());
        Ok(())
    }

    /// Forget that the wait queue `name` was declared (the broker said it is gone), so
    /// the next use declares it again.
    pub(crate) fn forget_delay_queue(&self, name: &str) {
        self.delay_queues
            .lock()
            .expect("delay queues lock")
            .1
            .remove(name);
    }

    /// Declare every topology provisioned so far again (a queue was deleted under us).
    pub(crate) async fn redeclare(&self, deadline: Instant) -> Result<()> {
        let topologies = self.topologies.lock().expect("topologies lock").clone();
        let (channel, _) = self.channel(deadline).await?;
        for topology in &topologies {
            topology::declare(&channel, topology, &self.config).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    async fn provision(&self, topology: &Topology) -> Result<()> {
        for t in &topology.publishes {
            check_name("topic", &t.name)?;
        }
        for s in &topology.subscriptions {
            let names = QueueNames::of(s);
            check_name("queue", &names.dead_letter_exchange)?;
            check_name("queue", &names.delay(Duration::from_secs(u32::MAX as u64)))?;
        }
        // Remember it first: a reconnect from here on declares it too.
        {
            let mut all = self.topologies.lock().expect("topologies lock");
            if !all.iter().any(|t| same_topology(t, topology)) {
                all.push(topology.clone());
            }
        }
        let deadline = self.deadline();
        let live = self.connection(deadline).await?;
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(|e| from_lapin(e, "opening a channel to declare the topology"))?;
        let declared = topology::declare(&channel, topology, &self.config).await;
        if let Err(e) = declared {
            // Do not redeclare a topology the broker refuses after every reconnect.
            if !e.is_retryable() {
                self.topologies
                    .lock()
                    .expect("topologies lock")
                    .retain(|t| !same_topology(t, topology));
            }
            return Err(e);
        }
        let _ = channel.close(200, "declared".into()).await;
        for t in &topology.publishes {
            self.remember_exchange(&t.name, live.generation);
        }
        for s in &topology.subscriptions {
            self.remember_exchange(&s.topic, live.generation);
        }
        Ok(())
    }
}

impl Shared {
    /// Forget `topology` (no reconnect declares it again) and what is known to exist on
    /// the broker, then delete its objects.
    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.topologies
            .lock()
            .expect("topologies lock")
            .retain(|t| !same_topology(t, topology));
        self.exchanges.lock().expect("exchanges lock").1.clear();
        self.delay_queues
            .lock()
            .expect("delay queues lock")
            .1
            .clear();
        topology::teardown(self, topology).await
    }
}

/// How late a scheduled event reaches a handler that keeps up: each hop through a wait
/// queue adds the broker's expiry and delivery latency (RabbitMQ checks expiry on a
/// timer; measured late by well under this, see `tests/scheduling.rs`).
const SCHEDULING_TOLERANCE: Duration = Duration::from_millis(500);

/// The furthest ahead an event may be scheduled: RabbitMQ's largest TTL, 2^32 - 1 ms
/// (about 49.7 days).
const MAX_DELAY: Duration = Duration::from_millis(u32::MAX as u64);

fn same_topology(a: &Topology, b: &Topology) -> bool {
    a.service == b.service && a.publishes == b.publishes && a.subscriptions == b.subscriptions
}

impl Transport for RabbitMq {
    type Subscriber = RabbitMqSubscriber;

    fn capabilities(&self) -> Capabilities {
        let single_active = self.shared.config.single_active_consumer;
        let mut c = Capabilities::default();
        c.system = "rabbitmq";
        c.delayed_redelivery = true;
        c.ordering_key = single_active;
        // With a single active consumer, instances stand by instead of sharing.
        c.competing_consumers = !single_active;
        c.max_message_size = self.shared.config.max_message_size;
        // `x-` headers are the broker's (x-death, x-delivery-count, x-match, ...).
        c.reserved_header_prefixes = &["x-"];
        c.connect_timeout = Some(self.shared.config.connect_timeout);
        c.backlog = true;
        c.scheduling = Scheduling::new(SCHEDULING_TOLERANCE).max_delay(MAX_DELAY);
        c
    }

    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.shared.provision(topology).await
    }

    async fn publish(&self, topic: &str, envelopes: Vec<tidings_core::Envelope>) -> Result<()> {
        crate::publisher::publish_to_topic(&self.shared, topic, envelopes).await
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<Self::Subscriber> {
        RabbitMqSubscriber::start(self.shared.clone(), spec).await
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        dead_letter::dead_letters(&self.shared, spec, limit).await
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::replay_dead_letters(&self.shared, spec, which).await
    }

    async fn purge_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::purge_dead_letters(&self.shared, spec, which).await
    }

    /// The messages ready in the subscription's work queue (see [`QueueNames`]), not
    /// counting those delivered and not yet acknowledged or waiting out a retry delay.
    ///
    /// [`QueueNames`]: crate::QueueNames
    async fn backlog(&self, spec: &SubscriptionSpec) -> Result<Option<u64>> {
        topology::backlog(&self.shared, spec).await
    }

    async fn remove_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        topology::remove_subscription(&self.shared, spec).await
    }

    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        topology::broker_objects(topology)
    }

    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.shared.teardown(topology).await
    }
}
