//! The hub's topology: topics and the subscription queues bound to them with their event
//! filters; provisioning, broker objects and teardown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use rustc_hash::FxHashMap;
use tidings_core::{
    transport::{SubscriptionSpec, Topology},
    BrokerObject, Result,
};

use crate::config::MemoryConfig;
use crate::error;
use crate::queue::{Pending, Queue};
use crate::wire::Body;

/// Lock a mutex, ignoring poisoning: no code panics while holding these locks, and the
/// data stays consistent if some did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One memory hub: its queues and the topics they are bound to.
pub(crate) struct Hub {
    /// `None` for a private hub, `Some("")` for the default process-wide hub.
    pub(crate) name: Option<String>,
    pub(crate) config: MemoryConfig,
    pub(crate) pending: Arc<Pending>,
    /// Topic name → the queues bound to it, an immutable snapshot replaced on provision.
    /// FxHash: topic names are short and trusted, and this lookup is on every publish.
    topics: RwLock<FxHashMap<String, Bindings>>,
    /// (subscription name, topic) → queue.
    queues: Mutex<HashMap<(String, String), Arc<Queue>>>,
}

/// The queues bound to one topic.
pub(crate) type Bindings = Arc<[Binding]>;

/// A queue bound to a topic with the wire names it takes.
pub(crate) struct Binding {
    pub(crate) queue: Arc<Queue>,
    pub(crate) filter: Arc<Filter>,
}

impl Hub {
    pub(crate) fn new(name: Option<String>, config: MemoryConfig) -> Self {
        Hub {
            name,
            config,
            pending: Arc::new(Pending::default()),
            topics: RwLock::default(),
            queues: Mutex::default(),
        }
    }

    /// The queues bound to `topic`, if any.
    pub(crate) fn bindings(&self, topic: &str) -> Option<Bindings> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }

    /// Create the queues of `topology` (idempotent) and set their filters.
    pub(crate) fn provision(&self, topology: &Topology) {
        let mut queues = lock(&self.queues);
        let mut touched = HashSet::new();
        for spec in &topology.subscriptions {
            let queue = queues
                .entry((spec.name.clone(), spec.topic.clone()))
                .or_insert_with(|| Arc::new(Queue::new(spec, &self.config, self.pending.clone())));
            *lock(&queue.filter) = Arc::new(Filter::new(&spec.events));
            touched.insert(spec.topic.as_str());
        }
        // Lock order: queues, then topics (publish takes only topics).
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for topic in touched {
            let mut bound: Vec<&Arc<Queue>> =
                queues.values().filter(|q| q.topic == topic).collect();
            bound.sort_by(|a, b| a.name.cmp(&b.name));
            let bindings: Bindings = bound
                .into_iter()
                .map(|q| Binding {
                    queue: q.clone(),
                    filter: lock(&q.filter).clone(),
                })
                .collect();
            topics.insert(topic.to_string(), bindings);
        }
    }

    /// Remove the queue of `spec` alone (with its envelopes and dead letters) and unbind
    /// it from its topic; the topic and the other queues stay.
    pub(crate) fn remove_subscription(&self, spec: &SubscriptionSpec) {
        let removed = {
            let mut queues = lock(&self.queues);
            let removed = queues.remove(&(spec.name.clone(), spec.topic.clone()));
            if let Some(queue) = &removed {
                // Lock order: queues, then topics.
                let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(bindings) = topics.get(&spec.topic) {
                    let kept: Bindings = bindings
                        .iter()
                        .filter(|b| !Arc::ptr_eq(&b.queue, queue))
                        .map(|b| Binding {
                            queue: b.queue.clone(),
                            filter: b.filter.clone(),
                        })
                        .collect();
                    topics.insert(spec.topic.clone(), kept);
                }
            }
            removed
        };
        if let Some(queue) = removed {
            queue.close();
        }
    }

    /// The queue of a provisioned subscription.
    pub(crate) fn queue(&self, spec: &SubscriptionSpec) -> Result<Arc<Queue>> {
        lock(&self.queues)
            .get(&(spec.name.clone(), spec.topic.clone()))
            .cloned()
            .ok_or_else(|| error::not_provisioned(&spec.name, &spec.topic))
    }

    /// What provisioning `topology` makes on the hub: its topics, and per subscription
    /// its queue and dead-letter list, sorted.
    pub(crate) fn broker_objects(topology: &Topology) -> Vec<BrokerObject> {
        let mut objects: Vec<BrokerObject> = topology
            .topic_names()
            .into_iter()
            .map(|t| BrokerObject::new("topic", t))
            .collect();
        for spec in &topology.subscriptions {
            objects.push(BrokerObject::new("queue", spec.queue_name()));
            objects.push(BrokerObject::new(
                "dead-letter list",
                spec.dead_letter_queue_name(),
            ));
        }
        objects.sort();
        objects.dedup();
        objects
    }

    /// Remove the queues of `topology` (their envelopes and dead letters with them) and
    /// its topics (every queue bound to them stops receiving until provisioned again).
    /// What is gone already is skipped. Subscribers of a removed queue see it end;
    /// deliveries they still hold settle into nothing.
    pub(crate) fn teardown(&self, topology: &Topology) {
        let removed: Vec<Arc<Queue>> = {
            let mut queues = lock(&self.queues);
            let removed = topology
                .subscriptions
                .iter()
                .filter_map(|spec| queues.remove(&(spec.name.clone(), spec.topic.clone())))
                .collect();
            // Lock order: queues, then topics.
            let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
            for topic in topology.topic_names() {
                topics.remove(topic);
            }
            removed
        };
        for queue in removed {
            queue.close();
        }
    }

    /// Every queue, sorted by name.
    pub(crate) fn all_queues(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<_> = lock(&self.queues).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.topic.cmp(&b.topic)));
        all
    }
}

/// Which wire names a queue takes, like the bindings of a RabbitMQ queue. An empty list
/// takes every event of the topic.
pub(crate) enum Filter {
    All,
    Few(Box<[Box<str>]>),
    Many(HashSet<Box<str>>),
}

impl Filter {
    pub(crate) fn new(events: &[String]) -> Self {
        match events.len() {
            0 => Filter::All,
            1..=16 => Filter::Few(events.iter().map(|e| e.as_str().into()).collect()),
            _ => Filter::Many(events.iter().map(|e| e.as_str().into()).collect()),
        }
    }

    /// Whether the queue takes `body`: by its wire name; a raw message that names none
    /// goes to every queue of the topic.
    #[inline]
    pub(crate) fn takes(&self, body: &Body) -> bool {
        body.event_type().is_none_or(|t| self.matches(t))
    }

    /// Whether the queue takes events named `event_type`.
    #[inline]
    pub(crate) fn matches(&self, event_type: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Few(names) => names.iter().any(|n| **n == *event_type),
            Filter::Many(names) => names.contains(event_type),
        }
    }
}
