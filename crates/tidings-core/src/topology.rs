//! What a transport provisions: the topics a service publishes to and the subscriptions it
//! consumes, with the broker names every transport derives from them (ARCHITECTURE.md, "How topics map onto each broker").

use std::sync::Arc;
use std::time::SystemTime;

use crate::envelope::{attrs, Envelope};
use crate::event::EventInfo;

/// Everything one bus needs from the broker; passed to `Transport::provision`.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// The service (bounded context) name.
    pub service: String,
    /// Topics this service publishes to.
    pub publishes: Vec<TopicSpec>,
    /// Subscriptions this service consumes.
    pub subscriptions: Vec<SubscriptionSpec>,
}

impl Topology {
    /// An empty topology for `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Topology {
            service: service.into(),
            ..Default::default()
        }
    }

    /// The broker names of every topic the topology touches, published to or subscribed
    /// to, sorted and without repeats.
    pub fn topic_names(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.publishes.iter().map(|t| t.name.as_str()).collect();
        topics.extend(self.subscriptions.iter().map(|s| s.topic.as_str()));
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// A topic as the broker sees it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The broker name of the topic (the topic's name, prefixed by the bus namespace if set).
    pub name: String,
    /// The events of the topic.
    pub events: Vec<EventInfo>,
}

impl TopicSpec {
    /// A topic spec.
    pub fn new(name: impl Into<String>, events: Vec<EventInfo>) -> Self {
        TopicSpec {
            name: name.into(),
            events,
        }
    }
}

/// One service's durable interest in some events of one topic.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The subscribing service.
    pub service: String,
    /// The subscription's name: the service name unless set with `Subscription::named`
    /// (prefixed by the bus namespace if set). Instances sharing it compete.
    pub name: String,
    /// The broker name of the topic.
    pub topic: String,
    /// Wire names the subscription has handlers for; transports that can filter on the
    /// broker deliver only these, the others deliver everything and the bus skips the rest.
    pub events: Vec<String>,
    /// How many deliveries the broker may push ahead of acknowledgements.
    pub prefetch: u16,
}

impl SubscriptionSpec {
    /// A subscription spec with a prefetch of 100.
    pub fn new(
        service: impl Into<String>,
        name: impl Into<String>,
        topic: impl Into<String>,
        events: Vec<String>,
    ) -> Self {
        SubscriptionSpec {
            service: service.into(),
            name: name.into(),
            topic: topic.into(),
            events,
            prefetch: 100,
        }
    }

    /// The queue name: `<subscription>.<topic>` (`catalog.lending`).
    pub fn queue_name(&self) -> String {
        format!("{}.{}", self.name, self.topic)
    }

    /// The dead-letter queue name: `<subscription>.<topic>.dlq` (`catalog.lending.dlq`).
    pub fn dead_letter_queue_name(&self) -> String {
        self.object_name("dlq")
    }

    /// The name of another broker object of the subscription:
    /// `<subscription>.<topic>.<suffix>` (`catalog.lending.retry`). Every transport names
    /// what it creates for a subscription this way, where the broker's names are flat.
    pub fn object_name(&self, suffix: &str) -> String {
        format!("{}.{}.{suffix}", self.name, self.topic)
    }

    /// Whether the subscription handles `event_type`.
    pub fn handles(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }
}

/// Why an envelope was dead-lettered, and where it came from. Written into the dead
/// letter's headers ([`attrs::DLQ_REASON`] and friends) by every transport.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// The failure reason: the handler's error, or why the envelope could not be decoded.
    pub reason: String,
    /// How many times the handler ran; 0 for envelopes that could not be decoded.
    pub attempts: u32,
    /// The subscribing service.
    pub service: Arc<str>,
    /// The subscription.
    pub subscription: Arc<str>,
    /// The topic the envelope was published to.
    pub topic: Arc<str>,
    /// When it was dead-lettered.
    pub time: SystemTime,
}

impl DeadLetterInfo {
    /// Dead-letter details stamped now.
    pub fn new(
        reason: impl Into<String>,
        attempts: u32,
        service: Arc<str>,
        subscription: Arc<str>,
        topic: Arc<str>,
    ) -> Self {
        DeadLetterInfo {
            reason: reason.into(),
            attempts,
            service,
            subscription,
            topic,
            time: SystemTime::now(),
        }
    }

    /// Write the details into `envelope`'s headers.
    pub fn stamp(&self, envelope: &mut Envelope) {
        envelope.set_header(attrs::DLQ_REASON, self.reason.clone());
        envelope.set_header(attrs::DLQ_ATTEMPTS, self.attempts.to_string());
        envelope.set_header(attrs::DLQ_SERVICE, self.service.to_string());
        envelope.set_header(attrs::DLQ_SUBSCRIPTION, self.subscription.to_string());
        envelope.set_header(attrs::DLQ_TOPIC, self.topic.to_string());
        envelope.set_header(
            attrs::DLQ_TIME,
            humantime::format_rfc3339_micros(self.time).to_string(),
        );
    }

    /// The dead letter every transport parks: a copy of `envelope` with the details
    /// written into its headers and no redelivery attempt carried over.
    pub fn stamped(&self, envelope: &Envelope) -> Envelope {
        let mut parked = envelope.clone();
        parked.remove_header(attrs::ATTEMPT);
        self.stamp(&mut parked);
        parked
    }

    /// Read the details back from a dead letter's headers (`None` if the reason is missing).
    pub fn from_headers(envelope: &Envelope) -> Option<Self> {
        let get = |n: &str| envelope.header(n).unwrap_or_default();
        let reason = envelope.header(attrs::DLQ_REASON)?.to_string();
        Some(DeadLetterInfo {
            reason,
            attempts: get(attrs::DLQ_ATTEMPTS).parse().unwrap_or(0),
            service: Arc::from(get(attrs::DLQ_SERVICE)),
            subscription: Arc::from(get(attrs::DLQ_SUBSCRIPTION)),
            topic: Arc::from(get(attrs::DLQ_TOPIC)),
            time: humantime::parse_rfc3339_weak(get(attrs::DLQ_TIME)).unwrap_or(envelope.time),
        })
    }

    /// Remove the dead-letter headers, for replay.
    pub fn clear(envelope: &mut Envelope) {
        for h in [
            attrs::DLQ_REASON,
            attrs::DLQ_ATTEMPTS,
            attrs::DLQ_SERVICE,
            attrs::DLQ_SUBSCRIPTION,
            attrs::DLQ_TOPIC,
            attrs::DLQ_TIME,
            attrs::ATTEMPT,
        ] {
            envelope.remove_header(h);
        }
    }
}

/// A parked envelope and why it was parked, as listed by `Bus::dead_letters`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The envelope as it was published (its headers include the dead-letter details).
    pub envelope: Envelope,
    /// The dead-letter details.
    pub info: DeadLetterInfo,
}

impl DeadLetter {
    /// A dead letter from an envelope whose headers carry the details; `None` if they don't.
    pub fn from_envelope(envelope: Envelope) -> Option<Self> {
        let info = DeadLetterInfo::from_headers(&envelope)?;
        Some(DeadLetter { envelope, info })
    }
}

/// Which dead letters to replay (or purge), and what a replay sends for each.
///
/// A replay sends every selected dead letter back to its subscription as
/// [`envelope_for`](Self::envelope_for) says: as it was parked, or, for
/// [`Edited`](Self::Edited), the edited copy; in both cases without the dead-letter
/// stamp. A purge deletes the selected dead letters and sends nothing.
///
/// ```
/// use tidings_core::{Envelope, Replay};
/// let parked = Envelope::new("lending.book-borrowed", 1, "lending", "application/json", &b"{\"book\":7}"[..]);
/// // The payload fixed, sent under a new id (or keep `parked.id`).
/// let mut fixed = parked.clone();
/// fixed.payload = b"{\"book\":\"7\"}".to_vec().into();
/// fixed.id = uuid::Uuid::now_v7();
/// let which = Replay::Edited { id: parked.id, envelope: Box::new(fixed.clone()) };
/// assert!(which.selects(&parked.id));
/// assert!(!which.selects(&fixed.id));
/// assert_eq!(which.envelope_for(parked), fixed);
/// // bus.replay_dead_letters::<Lending>(which).await?;
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every dead letter of the subscription.
    All,
    /// Only these envelope ids.
    Ids(Vec<uuid::Uuid>),
    /// Only the dead letter with envelope id `id`, sent back as `envelope` (an edited copy:
    /// its payload fixed, with the same id or a new one) instead of as it was parked.
    ///
    /// The parked dead letter is taken out as with [`Ids`](Self::Ids): a replay removes
    /// it and sends `envelope` in its place (once per parked copy of `id`, should the
    /// subscription hold several); an `id` that is not parked replays nothing. Purging with
    /// `Edited` deletes the dead letter `id` (it selects it) and ignores `envelope`.
    /// Dead-letter headers left in `envelope` (say, a listed [`DeadLetter`]'s envelope
    /// edited in place) are removed before it is sent.
    Edited {
        /// The envelope id of the dead letter to replay.
        id: uuid::Uuid,
        /// What to send in its place.
        envelope: Box<Envelope>,
    },
}

// Every field of an envelope is `Eq`, so its derived `PartialEq` is an equivalence.
impl Eq for Replay {}

impl Replay {
    /// Whether `id` is selected.
    pub fn selects(&self, id: &uuid::Uuid) -> bool {
        match self {
            Replay::All => true,
            Replay::Ids(ids) => ids.contains(id),
            Replay::Edited { id: edited, .. } => edited == id,
        }
    }

    /// The envelope a replay sends for the selected dead letter `parked` (as listed, its
    /// headers carrying the dead-letter details): for [`Edited`](Self::Edited) the edited
    /// envelope (without a claim-check reference when it has a payload of its own),
    /// otherwise `parked`; in both cases cleared of the dead-letter stamp
    /// ([`DeadLetterInfo::clear`]). Every transport's replay sends what this returns.
    pub fn envelope_for(&self, parked: Envelope) -> Envelope {
        let mut envelope = match self {
            Replay::Edited { envelope, .. } => {
                let mut edited = Envelope::clone(envelope);
                // An edited payload replaces a claim-checked one: drop the reference.
                if !edited.payload.is_empty() {
                    edited
                        .headers
                        .retain(|(name, _)| !name.starts_with(crate::claim_check::CLAIM_CHECK));
                }
                edited
            }
            Replay::All | Replay::Ids(_) => parked,
        };
        DeadLetterInfo::clear(&mut envelope);
        envelope
    }
}

/// One thing a transport creates on the broker for a bus, as listed by
/// [`Bus::broker_objects`](crate::Bus::broker_objects): its kind in the broker's words
/// (`exchange`, `queue`, `topic`, `subscription`) and its name.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerObject {
    /// The kind, in the broker's words.
    pub kind: &'static str,
    /// The broker name (a Service Bus subscription: `<topic>/subscriptions/<name>`).
    pub name: String,
}

impl BrokerObject {
    /// A broker object.
    pub fn new(kind: &'static str, name: impl Into<String>) -> Self {
        BrokerObject {
            kind,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for BrokerObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> Envelope {
        let env = Envelope::new(
            "lending.book-borrowed",
            1,
            "lending",
            "application/json",
            &b"{}"[..],
        );
        let info = DeadLetterInfo::new(
            "broken",
            3,
            "catalog".into(),
            "catalog".into(),
            "lending".into(),
        );
        let mut parked = info.stamped(&env);
        parked.set_header(attrs::ATTEMPT, "3");
        parked
    }

    #[test]
    fn a_replay_sends_the_parked_envelope_without_its_stamp() {
        let parked = parked();
        for which in [Replay::All, Replay::Ids(vec![parked.id])] {
            assert!(which.selects(&parked.id));
            let sent = which.envelope_for(parked.clone());
            assert_eq!(sent.id, parked.id);
            assert!(sent.headers.is_empty(), "stamp left: {:?}", sent.headers);
            assert_eq!(sent.payload, parked.payload);
        }
    }

    #[test]
    fn an_edited_replay_sends_the_edited_envelope_without_a_stamp() {
        let parked = parked();
        let mut fixed = parked.clone();
        fixed.payload = b"{\"fixed\":true}".to_vec().into();
        fixed.id = uuid::Uuid::new_v4();
        let which = Replay::Edited {
            id: parked.id,
            envelope: Box::new(fixed.clone()),
        };
        assert!(which.selects(&parked.id));
        assert!(!which.selects(&fixed.id), "the new id is not a dead letter");
        let sent = which.envelope_for(parked);
        assert_eq!(sent.id, fixed.id);
        assert_eq!(sent.payload, fixed.payload);
        assert!(DeadLetterInfo::from_headers(&sent).is_none());
        assert!(sent.headers.is_empty(), "stamp left: {:?}", sent.headers);
    }

    #[test]
    fn an_edited_payload_replaces_a_claim_checked_one() {
        use crate::claim_check::{CLAIM_CHECK, CLAIM_CHECK_SHA256, CLAIM_CHECK_SIZE};
        let mut parked = parked();
        parked.payload = Default::default();
        for name in [CLAIM_CHECK, CLAIM_CHECK_SIZE, CLAIM_CHECK_SHA256] {
            parked.headers.push((name.to_string(), "x".to_string()));
        }
        parked
            .headers
            .push(("tenant".to_string(), "north".to_string()));
        let edited = |payload: &[u8]| {
            let mut fixed = parked.clone();
            fixed.payload = payload.to_vec().into();
            Replay::Edited {
                id: parked.id,
                envelope: Box::new(fixed),
            }
            .envelope_for(parked.clone())
        };
        let sent = edited(b"{}");
        assert_eq!(
            sent.headers,
            vec![("tenant".to_string(), "north".to_string())]
        );
        // Without a payload of its own it still points at the stored one.
        let sent = edited(b"");
        assert_eq!(sent.header(CLAIM_CHECK), Some("x"));
        assert_eq!(sent.headers.len(), 4);
    }
}
