//! [`Recording`]: a transport wrapper that remembers every envelope it published, with
//! typed assertions over them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tidings_core::{
    transport::{Capabilities, SubscriptionSpec, Topology, Transport},
    BrokerObject, Codec, DeadLetter, DecodeLimits, Envelope, Event, Replay, Result,
};
use uuid::Uuid;

/// A transport that records every envelope published through it successfully, in publish
/// order, and delegates everything to `T`.
///
/// The assertions decode recorded envelopes by their content type, so they work whatever
/// codec the publishing bus uses.
pub struct Recording<T> {
    inner: T,
    log: Mutex<Vec<Recorded>>,
}

/// One recorded envelope and the topic it went to.
#[derive(Debug, Clone)]
struct Recorded {
    topic: Arc<str>,
    envelope: Envelope,
}

impl<T: Transport> Recording<T> {
    /// Wrap `inner`.
    pub fn new(inner: T) -> Self {
        Recording {
            inner,
            log: Mutex::default(),
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn log(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every envelope published so far, oldest first.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.log().iter().map(|r| r.envelope.clone()).collect()
    }

    /// Every envelope published to broker topic `topic` so far, oldest first.
    pub fn envelopes_to(&self, topic: &str) -> Vec<Envelope> {
        self.log()
            .iter()
            .filter(|r| &*r.topic == topic)
            .map(|r| r.envelope.clone())
            .collect()
    }

    /// Forget everything recorded so far.
    pub fn clear(&self) {
        self.log().clear();
    }

    /// Every `E` published so far, oldest first, decoded.
    ///
    /// Panics if a recorded `E` does not decode as `E`.
    #[track_caller]
    pub fn published<E: Event>(&self) -> Vec<E> {
        self.log()
            .iter()
            .filter(|r| r.envelope.event_type == E::NAME)
            .map(|r| decode::<E>(&r.envelope))
            .collect()
    }

    /// The most recently published `E`, decoded.
    ///
    /// Panics, listing the wire names that were published, if no `E` was.
    #[track_caller]
    pub fn assert_published<E: Event>(&self) -> E {
        let log = self.log();
        match log.iter().rev().find(|r| r.envelope.event_type == E::NAME) {
            Some(r) => decode::<E>(&r.envelope),
            None => panic!(
                "expected `{}` ({}) to have been published, but it was not; {}",
                E::NAME,
                std::any::type_name::<E>(),
                describe(&log)
            ),
        }
    }

    /// Panics if an `E` was published, saying how many and their ids.
    #[track_caller]
    pub fn assert_not_published<E: Event>(&self) {
        let log = self.log();
        let ids: Vec<String> = log
            .iter()
            .filter(|r| r.envelope.event_type == E::NAME)
            .map(|r| r.envelope.id.to_string())
            .collect();
        if !ids.is_empty() {
            panic!(
                "expected no `{}` ({}) to have been published, but {} {} published (ids {})",
                E::NAME,
                std::any::type_name::<E>(),
                ids.len(),
                if ids.len() == 1 { "was" } else { "were" },
                ids.join(", ")
            );
        }
    }
}

/// Removes the envelopes of a publish that failed or was abandoned from the log.
struct Unrecord<'a> {
    log: &'a Mutex<Vec<Recorded>>,
    ids: Vec<Uuid>,
}

impl Drop for Unrecord<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.retain(|r| !self.ids.contains(&r.envelope.id));
        }
    }
}

/// "published: a, b, c" or "nothing was published".
fn describe(log: &[Recorded]) -> String {
    if log.is_empty() {
        return "nothing was published".to_string();
    }
    let names: Vec<String> = log
        .iter()
        .map(|r| format!("`{}` to `{}`", r.envelope.event_type, r.topic))
        .collect();
    format!("published, oldest first: {}", names.join(", "))
}

#[track_caller]
fn decode<E: Event>(envelope: &Envelope) -> E {
    let Some(codec) = Codec::for_content_type(&envelope.content_type) else {
        panic!(
            "recorded `{}` (id {}) has content type `{}`, for which no codec is compiled in",
            envelope.event_type, envelope.id, envelope.content_type
        )
    };
    match codec.decode::<E>(&envelope.payload, DecodeLimits::default()) {
        Ok(event) => event,
        Err(e) => panic!(
            "recorded `{}` v{} (id {}) does not decode as {} v{}: {e}",
            envelope.event_type,
            envelope.version,
            envelope.id,
            std::any::type_name::<E>(),
            E::VERSION
        ),
    }
}

impl<T: Transport> Transport for Recording<T> {
    type Subscriber = T::Subscriber;

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.inner.provision(topology).await
    }

    /// Publish through the wrapped transport. The envelopes are recorded as the publish
    /// starts, so the log keeps publish order even when a handler's follow-up event is
    /// confirmed first, and removed again if the publish fails or is abandoned.
    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        let topic_name: Arc<str> = Arc::from(topic);
        self.log().extend(envelopes.iter().map(|envelope| Recorded {
            topic: topic_name.clone(),
            envelope: envelope.clone(),
        }));
        let mut unrecord = Unrecord {
            log: &self.log,
            ids: envelopes.iter().map(|e| e.id).collect(),
        };
        self.inner.publish(topic, envelopes).await?;
        unrecord.ids.clear();
        Ok(())
    }

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<T::Subscriber> {
        self.inner.subscribe(spec).await
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(spec, limit).await
    }

    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        self.inner.replay_dead_letters(spec, which).await
    }

    async fn dead_letter(
        &self,
        spec: &SubscriptionSpec,
        id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>> {
        self.inner.dead_letter(spec, id).await
    }

    async fn purge_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        self.inner.purge_dead_letters(spec, which).await
    }

    async fn backlog(&self, spec: &SubscriptionSpec) -> Result<Option<u64>> {
        self.inner.backlog(spec).await
    }

    async fn remove_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.inner.remove_subscription(spec).await
    }

    fn broker_objects(&self, topology: &Topology) -> Vec<BrokerObject> {
        self.inner.broker_objects(topology)
    }

    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.inner.teardown(topology).await
    }
}

impl<T: fmt::Debug> fmt::Debug for Recording<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recorded = self.log.lock().map(|l| l.len()).unwrap_or_default();
        f.debug_struct("Recording")
            .field("inner", &self.inner)
            .field("recorded", &recorded)
            .finish()
    }
}
