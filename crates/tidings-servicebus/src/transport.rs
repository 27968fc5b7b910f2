//! The transport: [`ServiceBus`], its construction and connection check, and its
//! [`Transport`] implementation, which hands each job to its module (topology, publisher,
//! subscriber, dead letters).

use std::sync::Arc;
use std::time::Duration;

use tidings_core::transport::{connect_within, Scheduling};
use tidings_core::{
    transport::{Capabilities, SubscriptionSpec, Topology, Transport},
    BrokerObject, DeadLetter, Envelope, ErrorKind, Replay, Result,
};

use crate::client::Rest;
use crate::config::ServiceBusConfig;
use crate::subscriber::{self, ServiceBusSubscriber};
use crate::{dead_letter, publisher, wire};

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

    /// A transport (without contacting the namespace, like [`new`](Self::new)) from
    /// `servicebus://<namespace>?key_name=..&key=..` (see [`ServiceBusConfig::from_url`])
    /// or a connection string `Endpoint=sb://...;SharedAccessKeyName=..;SharedAccessKey=..`
    /// (see [`ServiceBusConfig::from_connection_string`]).
    pub fn from_url(url: &str) -> Result<Self> {
        // A URL starts with its scheme; a connection string with `Endpoint=sb://`.
        let is_url = url
            .split_once("://")
            .is_some_and(|(scheme, _)| !scheme.contains(['=', ';']));
        let config = if is_url {
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
}

impl Transport for ServiceBus {
    type Subscriber = ServiceBusSubscriber;

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.system = "servicebus";
        c.delayed_redelivery = self.shared.config.scheduled_retries;
        c.ordering_key = false;
        c.competing_consumers = true;
        c.max_message_size = self.shared.config.max_message_size;
        c.reserved_header_prefixes = wire::RESERVED_PREFIXES;
        c.connect_timeout = Some(self.shared.config.connect_timeout);
        c.backlog = true;
        // ScheduledEnqueueTimeUtc has whole seconds (rounded up) and a receive may wait for
        // the next long poll.
        c.scheduling = Scheduling::new(Duration::from_secs(2));
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
        Ok(subscriber::start(self.shared.clone(), spec))
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        dead_letter::list(&self.shared.rest, spec, limit).await
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::replay(&self.shared.rest, spec, which).await
    }

    async fn purge_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::purge(&self.shared.rest, spec, which).await
    }

    /// The subscription's `ActiveMessageCount` (its `CountDetails`, through the management
    /// API): messages locked by a receiver count until they are completed; scheduled
    /// retries and dead letters do not.
    async fn backlog(&self, spec: &SubscriptionSpec) -> Result<Option<u64>> {
        crate::topology::backlog(&self.shared.rest, spec).await
    }

    async fn remove_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        crate::topology::remove_subscription(&self.shared.rest, spec).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_takes_urls_and_connection_strings() {
        let t = ServiceBus::from_url("ServiceBus://dev?key_name=a&key=b").unwrap();
        assert_eq!(t.config().namespace(), "dev");
        let t = ServiceBus::from_url(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b",
        )
        .unwrap();
        assert_eq!(t.config().namespace(), "contoso");
        let err = ServiceBus::from_url("amqp://dev").unwrap_err();
        assert!(err.to_string().contains("takes servicebus://"), "{err}");
    }
}
