//! [`Kafka`]: the transport value handed to `Bus::builder(..).transport(..)`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tidings_core::{
    transport::{
        connect_within, Capabilities, Scheduling, SubscriptionSpec, TopicSpec, Topology, Transport,
    },
    BrokerObject, DeadLetter, Envelope, Error, ErrorKind, Replay, Result,
};

use crate::config::KafkaConfig;

/// How late after its time a scheduled event may reach its handler on a subscription
/// that keeps up.
const SCHEDULING_TOLERANCE: Duration = Duration::from_millis(500);
use crate::error::from_kafka;
use crate::subscriber::KafkaSubscriber;
use crate::{backlog, dead_letter, publisher, topology};

/// The Kafka transport: one idempotent producer shared by every bus that uses this value,
/// and one consumer (in the group named after the subscription) per subscription.
///
/// Cloning is cheap and shares the producer.
///
/// ```no_run
/// # async fn run() -> tidings_core::Result<()> {
/// use tidings_kafka::{Kafka, KafkaConfig};
/// // Fails with `ErrorKind::Unavailable` unless the brokers answer within the connect timeout.
/// let kafka = Kafka::connect(KafkaConfig::new("127.0.0.1:9092").partitions(6)).await?;
/// // No I/O: the brokers are first asked by `build()`.
/// let same = Kafka::from_url("kafka://127.0.0.1:9092?partitions=6")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Kafka {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    producer: FutureProducer,
}

impl Kafka {
    /// A transport with `config`. Creates the producer (it connects in the background);
    /// fails only on invalid settings. `Bus::builder(..).build()` is where the brokers are
    /// first asked; [`Kafka::connect`] asks them at once.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let producer = publisher::create_producer(&config)?;
        Ok(Kafka {
            inner: Arc::new(Inner { config, producer }),
        })
    }

    /// A transport with `config` whose brokers answered: one metadata request, which
    /// fails with `ErrorKind::Unavailable` (retryable), naming the brokers, when no broker
    /// answers within [`KafkaConfig::connect_timeout`]. Refused credentials are
    /// `ErrorKind::Unauthorized`.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        let kafka = Kafka::new(config)?;
        check_brokers(kafka.config()).await?;
        Ok(kafka)
    }

    /// A transport from a `kafka://host:port[,host:port]?partitions=3` URL; see
    /// [`KafkaConfig::from_url`] for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        Kafka::new(KafkaConfig::from_url(url)?)
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Transport for Kafka {
    type Subscriber = KafkaSubscriber;

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.system = "kafka";
        c.delayed_redelivery = true;
        c.ordering_key = true;
        c.competing_consumers = true;
        c.max_message_size = self.inner.config.max_message_size;
        // Kafka keeps no record header names for itself.
        c.reserved_header_prefixes = &[];
        c.connect_timeout = Some(self.inner.config.connect_timeout);
        c.backlog = true;
        // A scheduled event that arrives early waits in the subscription's retry topic,
        // held by the poll thread until due (earliest first, never behind a later one), so
        // it is as late as the poll thread's wake-up and the hand-over to the handler:
        // tens of milliseconds measured on tansu (`scheduled_events_are_not_held_behind_
        // later_ones`), with margin. It can be due no later than the retry topic keeps it.
        c.scheduling = Scheduling::new(SCHEDULING_TOLERANCE).max_delay(topology::RETRY_RETENTION);
        c
    }

    async fn provision(&self, topology: &Topology) -> Result<()> {
        topology::provision(&self.inner.config, topology).await
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        let inner = &self.inner;
        let sent = publisher::publish(
            &inner.producer,
            inner.config.max_message_size,
            topic,
            &envelopes,
        )
        .await;
        match sent {
            // The topic went missing (a broker that lost its data on restart): declare it
            // again and send once more. Records that did arrive may arrive twice.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(%topic, error = %e, "the Kafka topic is gone; creating it again");
                let mut topology = Topology::new("");
                topology.publishes.push(TopicSpec::new(topic, Vec::new()));
                topology::provision(&inner.config, &topology).await?;
                publisher::publish(
                    &inner.producer,
                    inner.config.max_message_size,
                    topic,
                    &envelopes,
                )
                .await
            }
            other => other,
        }
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<KafkaSubscriber> {
        KafkaSubscriber::start(&self.inner.config, spec, self.inner.producer.clone())
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        dead_letter::list(&self.inner.config, spec, limit).await
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::replay(&self.inner.config, &self.inner.producer, spec, which).await
    }

    async fn dead_letter(
        &self,
        spec: &SubscriptionSpec,
        id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>> {
        dead_letter::find(&self.inner.config, spec, id).await
    }

    async fn purge_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::purge(&self.inner.config, &self.inner.producer, spec, which).await
    }

    /// The lag of the subscription's consumer group over the topic and the subscription's
    /// retry topic: records not yet committed, retries waiting for their due time
    /// included, dead letters not. A partition the group never committed counts from
    /// where its subscriber would start ([`KafkaConfig::start_from`]).
    async fn backlog(&self, spec: &SubscriptionSpec) -> Result<Option<u64>> {
        backlog::backlog(&self.inner.config, spec).await.map(Some)
    }

    async fn remove_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        topology::remove_subscription(&self.inner.config, spec).await
    }

    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        topology::broker_objects(topology)
    }

    async fn teardown(&self, topology: &Topology) -> Result<()> {
        topology::teardown(&self.inner.config, topology).await
    }
}

/// Ask the brokers for their metadata, on a short-lived client, within the connect
/// timeout: the first contact of [`Kafka::connect`], provisioning, teardown and dead-letter
/// listing (librdkafka connects in the background, so nothing else would notice a broker
/// that is away). A broker that is down or does not answer in time is `Unavailable`,
/// naming the brokers' address once ([`connect_within`]).
pub(crate) async fn check_brokers(config: &KafkaConfig) -> Result<()> {
    let timeout = config.connect_timeout;
    let client_config = config.client_config();
    let check = async move {
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = client_config
                .create()
                .map_err(|e| from_kafka("creating a Kafka client", e))?;
            client
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| from_kafka("asking the Kafka brokers for their metadata", e))
        })
        .await
        .map_err(|e| Error::backend("asking the Kafka brokers for their metadata", e))?
    };
    connect_within(&config.address(), timeout, check).await
}
