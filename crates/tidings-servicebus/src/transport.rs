//! The transport: [`ServiceBus`], its capabilities, provisioning, publishing, subscribing,
//! and the dead-letter subqueue (listing and replay).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use tidings_core::transport::connect_within;
use tidings_core::{
    transport::{attrs, Capabilities, SubscriptionSpec, Topology, Transport},
    BrokerObject, DeadLetter, DeadLetterInfo, Envelope, Error, ErrorKind, Replay, Result,
};

use crate::client::Rest;
use crate::config::ServiceBusConfig;
use crate::publisher;
use crate::subscriber::{self, ServiceBusSubscriber, Target};
use crate::topology::{dead_letter_path, subscription_path};
use crate::wire::Received;
use crate::wire::{self, Resend};

/// What the transport's parts share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServiceBusConfig,
    pub(crate) rest: Rest,
    /// Set once the namespace answered the first request.
    connected: tokio::sync::OnceCell<()>,
}

/// The Azure Service Bus transport, over the Service Bus REST API.
///
/// Cheap to clone. See the [crate docs](crate) for the mapping and the guarantees.
#[derive(Debug, Clone)]
pub struct ServiceBus {
    shared: Arc<Shared>,
}

impl ServiceBus {
    /// A transport for the namespace and policy in `config`, without contacting it
    /// (`build()` does, through `provision`). Fails only if the HTTP client cannot be
    /// built.
    pub fn new(config: ServiceBusConfig) -> Result<Self> {
        let rest = Rest::new(&config)?;
        Ok(ServiceBus {
            shared: Arc::new(Shared {
                config,
                rest,
                connected: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// A transport for `config` whose namespace answered: [`new`](Self::new), then one
    /// request within the [connect timeout](ServiceBusConfig::connect_timeout). A
    /// namespace that does not answer in time is
    /// [`ErrorKind::Unavailable`](tidings_core::ErrorKind::Unavailable) (retryable),
    /// naming its address (the endpoint, if set) and the cause.
    pub async fn connect(config: ServiceBusConfig) -> Result<Self> {
        let transport = Self::new(config)?;
        transport.check_connection().await?;
        Ok(transport)
    }

    /// The first request of this transport, within the connect timeout
    /// (`tidings_core::transport::connect_within`); later calls return at once.
    async fn check_connection(&self) -> Result<()> {
        let shared = &self.shared;
        shared
            .connected
            .get_or_try_init(|| {
                connect_within(
                    &shared.rest.address,
                    shared.config.connect_timeout,
                    shared.rest.probe(),
                )
            })
            .await
            .map(|_| ())
    }

    /// From `servicebus://<namespace>?key_name=..&key=..` (see
    /// [`ServiceBusConfig::from_url`]) or a connection string
    /// `Endpoint=sb://...;SharedAccessKeyName=..;SharedAccessKey=..`.
    pub fn from_url(url: &str) -> Result<Self> {
        let config = if url.starts_with("servicebus://") {
            ServiceBusConfig::from_url(url)?
        } else {
            ServiceBusConfig::from_connection_string(url)?
        };
        Self::new(config)
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceBusConfig {
        &self.shared.config
    }

    fn target(spec: &SubscriptionSpec) -> Target {
        Target {
            spec: spec.clone(),
            topic: Arc::from(spec.topic.as_str()),
            subscription: Arc::from(spec.name.as_str()),
        }
    }

    /// Peek-lock up to `limit` messages of the dead-letter subqueue, oldest first, holding
    /// their locks (on an error, the ones held are unlocked).
    async fn lock_dead_letters(
        &self,
        spec: &SubscriptionSpec,
        limit: usize,
    ) -> Result<Vec<(Received, String)>> {
        let queue = dead_letter_path(&spec.topic, &spec.name);
        let mut seen = HashSet::new();
        let mut held: Vec<(Received, String)> = Vec::new();
        while held.len() < limit {
            match self.shared.rest.peek_lock(&queue, Duration::ZERO).await {
                Ok(None) => break,
                Ok(Some((m, lock_uri))) => {
                    if !seen.insert(m.sequence_number) {
                        // A lock of this walk expired and the message came round again.
                        self.unlock_all([lock_uri]).await;
                        break;
                    }
                    held.push((m, lock_uri));
                }
                Err(e) => {
                    self.unlock_all(held.into_iter().map(|(_, l)| l)).await;
                    return Err(e);
                }
            }
        }
        held.sort_by_key(|(m, _)| m.sequence_number);
        Ok(held)
    }

    async fn unlock_all(&self, locks: impl IntoIterator<Item = String>) {
        for lock_uri in locks {
            let unlocked = self
                .shared
                .rest
                .expect(
                    Method::PUT,
                    &lock_uri,
                    &[],
                    None,
                    &[200],
                    "unlocking a dead letter",
                )
                .await;
            if let Err(e) = unlocked {
                tracing::debug!(error = %e, "unlocking a dead letter failed; its lock will expire");
            }
        }
    }
}

/// A dead letter's envelope and details: ours from the `tidings-dlq-*` properties, or
/// Service Bus's own `DeadLetterReason` for messages it parked by itself.
fn dead_letter_of(m: &Received, spec: &SubscriptionSpec) -> DeadLetter {
    let mut env = m.envelope();
    if env.header(attrs::DLQ_REASON).is_none() {
        let reason = m.property("deadletterreason").unwrap_or("unknown");
        let description = m.property("deadlettererrordescription").unwrap_or("");
        DeadLetterInfo::new(
            format!("dead-lettered by Service Bus: {reason}: {description}"),
            0,
            Arc::from(spec.service.as_str()),
            Arc::from(spec.name.as_str()),
            Arc::from(spec.topic.as_str()),
        )
        .stamp(&mut env);
    }
    DeadLetter::from_envelope(env).expect("the reason header was just set")
}

/// The envelope to replay: without the dead-letter details of tidings or Service Bus.
fn for_replay(m: &Received) -> Envelope {
    let mut env = m.envelope();
    DeadLetterInfo::clear(&mut env);
    for h in [
        "deadletterreason",
        "deadlettererrordescription",
        "deadlettersource",
    ] {
        env.remove_header(h);
    }
    env
}

impl Transport for ServiceBus {
    type Subscriber = ServiceBusSubscriber;

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.delayed_redelivery = self.shared.config.scheduled_retries;
        c.ordering_key = false;
        c.competing_consumers = true;
        c.max_message_size = self.shared.config.max_message_size;
        c.reserved_header_prefixes = wire::RESERVED_PREFIXES;
        c.connect_timeout = Some(self.shared.config.connect_timeout);
        c
    }

    /// Checks that the namespace answers (once per transport, within the connect
    /// timeout), then creates what is missing.
    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.check_connection().await?;
        crate::topology::provision(&self.shared.rest, &self.shared.config, topology).await
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        let rest = &self.shared.rest;
        match publisher::publish(rest, topic, envelopes.clone()).await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.shared.config.provision => {
                // The topic vanished (deleted, or a development server restarted): declare
                // it again and send once more.
                tracing::info!(topic, "the topic is missing; declaring it again");
                crate::topology::ensure_topic(rest, topic)
                    .await
                    .map_err(|_| e)?;
                publisher::publish(rest, topic, envelopes).await
            }
            other => other,
        }
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<ServiceBusSubscriber> {
        Ok(subscriber::start(self.shared.clone(), Self::target(spec)))
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        let held = self.lock_dead_letters(spec, limit).await?;
        let out = held.iter().map(|(m, _)| dead_letter_of(m, spec)).collect();
        self.unlock_all(held.into_iter().map(|(_, l)| l)).await;
        Ok(out)
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        let rest = &self.shared.rest;
        let held = self.lock_dead_letters(spec, usize::MAX).await?;
        let mut moved = 0usize;
        let mut rest_of = held.into_iter();
        let mut keep = Vec::new();
        let mut failure = None;
        for (m, lock_uri) in rest_of.by_ref() {
            let env = for_replay(&m);
            if !which.selects(&env.id) {
                keep.push(lock_uri);
                continue;
            }
            let replayed = async {
                let out = wire::encode(
                    &env,
                    Resend {
                        to: Some(&spec.name),
                        scheduled: None,
                        extra: Vec::new(),
                    },
                )?;
                publisher::send_one(rest, &spec.topic, out)
                    .await
                    .map_err(|e: Error| e.context("replaying a dead letter"))?;
                rest.expect(
                    Method::DELETE,
                    &lock_uri,
                    &[],
                    None,
                    &[200],
                    "completing a replayed dead letter",
                )
                .await
                .map(|_| ())
            }
            .await;
            match replayed {
                Ok(()) => moved += 1,
                Err(e) => {
                    keep.push(lock_uri);
                    failure = Some(e);
                    break;
                }
            }
        }
        keep.extend(rest_of.map(|(_, l)| l));
        self.unlock_all(keep).await;
        match failure {
            Some(e) => Err(e.context(format_args!("after replaying {moved}"))),
            None => Ok(moved),
        }
    }

    /// Per topic a `topic`; per subscription a `subscription`
    /// (`<topic>/subscriptions/<name>`), its `rule` (`.../rules/tidings`) and its
    /// `dead-letter subqueue` (`.../$DeadLetterQueue`).
    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        crate::topology::broker_objects(topology)
    }

    /// Deletes the subscriptions, then the topics, through the management API (the
    /// policy needs the Manage right); entities already gone are skipped.
    async fn teardown(&self, topology: &Topology) -> Result<()> {
        crate::topology::teardown(&self.shared.rest, topology).await
    }
}
