//! [`Bus::health`](crate::Bus::health): whether each subscription is consuming, and what
//! an orchestrator's readiness and liveness probes need to know.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::error::Error;

/// The health of one bus: a report per subscription.
///
/// Serialises to JSON for a health endpoint (times in RFC 3339):
///
/// ```
/// use tidings_core::Bus;
///
/// /// The status code and body of a readiness endpoint.
/// fn ready(bus: &Bus) -> (u16, String) {
///     let health = bus.health();
///     let status = if health.is_ready() { 200 } else { 503 };
///     (status, serde_json::to_string(&health).expect("health serialises"))
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The service of the bus.
    pub service: String,
    /// Whether the bus was shut down.
    pub shut_down: bool,
    /// One report per subscription, in the order they were added.
    pub subscriptions: Vec<SubscriptionHealth>,
}

impl Health {
    /// Ready to take traffic: the bus runs and every subscription is consuming. Serve it as
    /// the readiness probe.
    pub fn is_ready(&self) -> bool {
        !self.shut_down
            && self
                .subscriptions
                .iter()
                .all(|s| s.state == SubscriptionState::Consuming)
    }

    /// Worth keeping alive: the bus runs and no subscription has stopped (a subscription
    /// that is reconnecting may still recover). Serve it as the liveness probe.
    pub fn is_live(&self) -> bool {
        !self.shut_down
            && !self
                .subscriptions
                .iter()
                .any(|s| s.state == SubscriptionState::Stopped)
    }
}

/// The health of one subscription.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionHealth {
    /// The subscription name (its queue or consumer group on the broker).
    pub subscription: String,
    /// The broker topic it consumes.
    pub topic: String,
    /// What its consumer is doing.
    pub state: SubscriptionState,
    /// Handlers running now.
    pub in_flight: usize,
    /// Deliveries settled since the bus started.
    pub handled: u64,
    /// When it last settled a delivery; `None` before the first.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_handled: Option<SystemTime>,
}

/// What a subscription's consumer is doing.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Taking deliveries from the broker.
    Consuming,
    /// Receiving failed and the consumer is trying again with backoff. It counts as
    /// consuming again once a delivery arrives or its receive has waited on the broker for
    /// a second without failing.
    Reconnecting {
        /// Since the first failure of this run of failures.
        #[serde(serialize_with = "rfc3339")]
        since: SystemTime,
        /// The last error, as shown to people (no secrets).
        last_error: String,
    },
    /// The consumer ended: the bus was shut down or the transport closed the subscription.
    Stopped,
}

/// The live counters of one subscription, updated by its consumer loop.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Set while the consumer is not simply consuming, so the hot path only checks it.
    troubled: AtomicBool,
    state: Mutex<SubscriptionState>,
    in_flight: AtomicUsize,
    /// Deliveries received, settled or not.
    received: AtomicU64,
    handled: AtomicU64,
    /// Unix milliseconds of the last settle; 0 before the first.
    last_handled_ms: AtomicU64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            troubled: AtomicBool::new(false),
            state: Mutex::new(SubscriptionState::Consuming),
            in_flight: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            last_handled_ms: AtomicU64::new(0),
        }
    }
}

impl Monitor {
    fn set(&self, state: SubscriptionState) {
        let troubled = state != SubscriptionState::Consuming;
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.troubled.store(troubled, Relaxed);
    }

    /// Whether the consumer is not simply consuming (reconnecting or stopped).
    #[inline]
    pub(crate) fn is_troubled(&self) -> bool {
        self.troubled.load(Relaxed)
    }

    /// A delivery arrived, or the consumer waits on the broker without failing.
    #[inline]
    pub(crate) fn consuming(&self) {
        if self.troubled.load(Relaxed) {
            self.set(SubscriptionState::Consuming);
        }
    }

    /// Receiving failed with `error`.
    pub(crate) fn reconnecting(&self, error: &Error) {
        let since = match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            SubscriptionState::Reconnecting { since, .. } => *since,
            _ => SystemTime::now(),
        };
        self.set(SubscriptionState::Reconnecting {
            since,
            last_error: error.to_string(),
        });
    }

    /// The consumer loop ended.
    pub(crate) fn stopped(&self) {
        self.set(SubscriptionState::Stopped);
    }

    /// A delivery was received and is being handled.
    #[inline]
    pub(crate) fn started(&self) {
        self.received.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// Deliveries received so far (`messaging.client.consumed.messages`).
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Deliveries being handled now (`tidings.handlers.in_flight`).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// A delivery was settled (or left to the broker) at `now`.
    #[inline]
    pub(crate) fn finished(&self, now: SystemTime) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.handled.fetch_add(1, Relaxed);
        let ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        self.last_handled_ms.store(ms.max(1), Relaxed);
    }

    pub(crate) fn report(&self, subscription: &str, topic: &str) -> SubscriptionHealth {
        let ms = self.last_handled_ms.load(Relaxed);
        SubscriptionHealth {
            subscription: subscription.to_string(),
            topic: topic.to_string(),
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            in_flight: self.in_flight(),
            handled: self.handled.load(Relaxed),
            last_handled: (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

fn rfc3339<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn rfc3339_opt<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, s),
        None => s.serialize_none(),
    }
}
