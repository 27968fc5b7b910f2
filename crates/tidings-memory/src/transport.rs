//! [`Memory`]: the hub handle that implements [`Transport`], the process-wide hubs behind
//! `memory://` URLs, and the quiescence probes the test harness uses.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tidings_core::{
    transport::{Capabilities, Scheduling, SubscriptionSpec, Topology, Transport},
    BrokerObject, DeadLetter, Envelope, Replay, Result,
};

use crate::config::{HubUrl, MemoryConfig};
use crate::subscriber::MemorySubscriber;
use crate::topology::{lock, Hub};
use crate::{dead_letter, error, publisher};

/// The in-memory transport: a hub of topics and subscription queues inside the process.
///
/// Every subscribing service gets its own queue per topic (filled from provisioning on,
/// so nothing published before a consumer attaches is lost); instances of one service
/// compete for its queue's envelopes; queues are bounded, so a slow handler slows its
/// publishers. Failed deliveries are redelivered after their delay, dead letters are kept
/// per subscription and can be listed and replayed. Nothing survives the process.
///
/// Clones share the hub. [`Memory::new`] makes a private hub; [`Memory::from_url`] with
/// `memory://` returns the process-wide default hub and with `memory://name` a
/// process-wide named one, so several services configured with the same URL meet.
#[derive(Clone)]
pub struct Memory {
    hub: Arc<Hub>,
}

/// The process-wide hubs reached through `memory://` URLs, by name (`""` is the default).
fn global_hubs() -> &'static Mutex<HashMap<String, Arc<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(Mutex::default)
}

impl Memory {
    /// A new private hub with the default limits (queues of 10 000 envelopes, 100 000
    /// dead letters per subscription, 1 MiB messages).
    pub fn new() -> Self {
        Memory::with_config(MemoryConfig::default())
    }

    /// A new private hub with other limits.
    ///
    /// ```
    /// use tidings_memory::{Memory, MemoryConfig};
    /// let memory = Memory::with_config(MemoryConfig::default().queue_capacity(100));
    /// # drop(memory);
    /// ```
    pub fn with_config(config: MemoryConfig) -> Self {
        Memory {
            hub: Arc::new(Hub::new(None, config)),
        }
    }

    /// The process-wide hub named by `url`: `memory://` is the default hub, `memory://name`
    /// a named one, created on first use and kept for the life of the process (envelopes
    /// left in its queues stay there, so tests sharing a named hub should use distinct
    /// names or drain what they publish). Options may follow:
    /// `memory://name?queue_capacity=1000&dead_letter_capacity=500&max_message_size=65536`.
    ///
    /// Fails with [`ErrorKind::Config`](tidings_core::ErrorKind::Config) for another
    /// scheme, a bad name or option, or options that differ from those the hub was created
    /// with.
    ///
    /// ```
    /// use tidings_memory::Memory;
    /// let a = Memory::from_url("memory://").unwrap();
    /// let b = Memory::from_url("memory://").unwrap();
    /// assert!(a.same_hub(&b));
    /// assert!(!a.same_hub(&Memory::from_url("memory://other").unwrap()));
    /// assert!(Memory::from_url("amqp://localhost").is_err());
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let HubUrl { name, config } = HubUrl::parse(url)?;
        let mut hubs = lock(global_hubs());
        if let Some(hub) = hubs.get(&name) {
            if let Some(wanted) = config {
                if wanted != hub.config {
                    return Err(error::config(format!(
                        "{url:?} asks for {wanted:?}, but the memory hub {name:?} already exists with {:?}: give every URL of one hub the same options",
                        hub.config
                    )));
                }
            }
            return Ok(Memory { hub: hub.clone() });
        }
        let hub = Arc::new(Hub::new(Some(name.clone()), config.unwrap_or_default()));
        hubs.insert(name, hub.clone());
        Ok(Memory { hub })
    }

    /// Whether `self` and `other` are handles to the same hub.
    pub fn same_hub(&self, other: &Memory) -> bool {
        Arc::ptr_eq(&self.hub, &other.hub)
    }

    /// How many envelope copies the hub has not settled yet: queued, delivered but not
    /// acknowledged or dead-lettered, or waiting out a retry delay. Each queue an
    /// envelope is published into counts once.
    pub fn pending(&self) -> usize {
        self.hub.pending.get()
    }

    /// Resolves once [`pending`](Self::pending) is zero: every queue of the hub drained,
    /// every delivery settled, no retry waiting. Events published by handlers are counted
    /// before the handler's own delivery is acknowledged, so a chain of handlers keeps the
    /// hub busy until its end. Resolves at once if the hub is idle already; envelopes in
    /// a queue that no consumer reads keep it from ever resolving.
    pub fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        self.hub.pending.clone().idle()
    }

    /// A snapshot of every subscription queue of the hub, sorted by name.
    pub fn queues(&self) -> Vec<QueueStats> {
        self.hub
            .all_queues()
            .iter()
            .map(|q| QueueStats {
                subscription: q.name.clone(),
                topic: q.topic.clone(),
                waiting: q.waiting(),
                dead_letters: lock(&q.dead).len(),
            })
            .collect()
    }
}

impl Memory {
    /// Put a message into `topic` as another client of a broker would: headers and bytes
    /// as given, not an envelope tidings published. Every subscription queue bound to the
    /// topic whose events include the `ce_type` header's value takes a copy (every queue
    /// when there is no `ce_type`), and its subscriber hands it to the core as received
    /// (`Delivery::from_wire`), exactly as the broker transports do: a valid envelope in
    /// CloudEvents binary mode is handled, anything else is dead-lettered with the reason.
    /// The hub's size limit does not apply (it limits what tidings publishes). For tests of
    /// foreign or broken input; resolves once every copy is queued.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings_core::Result<()> {
    /// use tidings_core::transport::{SubscriptionSpec, Topology, Transport};
    /// use tidings_memory::Memory;
    /// let memory = Memory::new();
    /// let mut topology = Topology::new("catalog");
    /// topology.subscriptions.push(SubscriptionSpec::new("catalog", "catalog", "lending", vec![]));
    /// memory.provision(&topology).await?;
    /// memory
    ///     .inject_raw("lending", vec![("ce_type".into(), "lending.book-borrowed".into())], &b"garbage"[..])
    ///     .await?;
    /// assert_eq!(memory.queues()[0].waiting, 1);
    /// # Ok(()) }
    /// ```
    pub async fn inject_raw(
        &self,
        topic: &str,
        headers: Vec<(String, String)>,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        publisher::inject_raw(&self.hub, topic, headers, payload.into()).await
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hub: &dyn fmt::Debug = match &self.hub.name {
            None => &"private",
            Some(name) if name.is_empty() => &"memory://",
            Some(name) => name,
        };
        f.debug_struct("Memory")
            .field("hub", hub)
            .field("queue_capacity", &self.hub.config.queue_capacity)
            .field(
                "dead_letter_capacity",
                &self.hub.config.dead_letter_capacity,
            )
            .field("max_message_size", &self.hub.config.max_message_size)
            .field("pending", &self.pending())
            .finish()
    }
}

/// The state of one subscription queue, from [`Memory::queues`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The subscription name.
    pub subscription: String,
    /// The topic the queue is bound to.
    pub topic: String,
    /// Envelopes waiting to be delivered (not counting those delivered and unsettled or
    /// waiting out a retry delay).
    pub waiting: usize,
    /// Dead letters kept.
    pub dead_letters: usize,
}

impl Transport for Memory {
    type Subscriber = MemorySubscriber;

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.system = "memory";
        c.delayed_redelivery = true;
        c.ordering_key = true;
        c.competing_consumers = true;
        c.max_message_size = self.hub.config.max_message_size;
        // The hub keeps no header names for itself.
        c.reserved_header_prefixes = &[];
        c.backlog = true;
        // Early envelopes wait on a tokio timer.
        c.scheduling = Scheduling::new(Duration::from_millis(100));
        c
    }

    /// Create a queue per subscription (idempotent), bound to its topic and taking the
    /// wire names in [`SubscriptionSpec::events`] (all of the topic's if empty);
    /// provisioning again replaces the filter for later publishes.
    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.hub.provision(topology);
        Ok(())
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        publisher::publish(&self.hub, topic, envelopes).await
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<MemorySubscriber> {
        Ok(MemorySubscriber {
            queue: self.hub.queue(spec)?,
        })
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(dead_letter::list(&*self.hub.queue(spec)?, limit))
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        dead_letter::replay(&*self.hub.queue(spec)?, which).await
    }

    async fn dead_letter(
        &self,
        spec: &SubscriptionSpec,
        id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>> {
        Ok(dead_letter::find(&*self.hub.queue(spec)?, id))
    }

    async fn purge_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        Ok(dead_letter::purge(&*self.hub.queue(spec)?, which))
    }

    /// The envelopes waiting in the subscription's queue to be delivered (redeliveries
    /// included), as [`QueueStats::waiting`] counts them: not those delivered and not yet
    /// settled, waiting out a retry delay, or dead-lettered.
    async fn backlog(&self, spec: &SubscriptionSpec) -> Result<Option<u64>> {
        Ok(Some(self.hub.queue(spec)?.waiting() as u64))
    }

    /// Remove the subscription's queue with its envelopes and dead letters, and unbind it;
    /// its subscribers end.
    async fn remove_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.hub.remove_subscription(spec);
        Ok(())
    }

    /// Every object provisioning `topology` made on the hub: its topics, and per
    /// subscription a `queue` named `<subscription>.<topic>` and a `dead-letter list`
    /// named `<subscription>.<topic>.dlq`.
    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        Hub::broker_objects(topology)
    }

    /// Remove the subscription queues of `topology` with their envelopes and dead
    /// letters, and its topics: queues of other topologies bound to those topics stop
    /// receiving until they are provisioned again. Subscribers of a removed queue end;
    /// [`Memory::queues`] no longer lists it. What is gone already is skipped.
    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.hub.teardown(topology);
        Ok(())
    }
}
