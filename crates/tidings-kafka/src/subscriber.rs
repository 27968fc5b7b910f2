//! Consuming one subscription, at least once.
//!
//! # How it works
//!
//! One consumer, in the consumer group named after the subscription, reads the topic and
//! the subscription's retry topic on a dedicated thread (the *poll thread*), which owns
//! the librdkafka consumer, serves its rebalance callbacks and commits offsets. Records
//! go to the async [`KafkaSubscriber`] through a bounded channel (the subscription's
//! prefetch). When the bus falls behind, the poll thread stops taking records until it
//! catches up; if that lasts more than 5 s it pauses the partitions and goes on polling,
//! so the consumer keeps its place in the group (and resumes them from the position of
//! the last record it took, so nothing is skipped).
//!
//! **Offsets.** Each partition keeps the offsets it handed out, in order, with their
//! state. An offset counts as settled once its envelope was handled, skipped (no handler),
//! sent to the retry topic or dead-lettered; the offset committed for a partition is the
//! one below which *everything* is settled, so a commit never passes an unhandled record
//! even when records of a partition are handled concurrently. Commits go out every
//! `commit_interval`, on rebalance and on shutdown.
//!
//! **Rebalance.** When partitions are revoked, the poll thread (inside librdkafka's
//! rebalance callback) stops handing out their records, waits up to `drain_timeout` for
//! the handlers in flight on them to settle, commits what is settled, and only then lets
//! the partitions go. A duplicate can only come from a handler still running after that.
//!
//! **Delayed retries.** A failed unkeyed delivery that the retry policy redelivers later
//! is written to `<topic>.<subscription>.retry` with the headers `tidings-attempt` (the
//! next attempt) and `tidings-due` (Unix milliseconds when it is due), then its original
//! offset is settled. The subscription's consumer reads the retry topic too: a record not
//! yet due is held and its retry partition paused until the due time, then it is handed
//! to the bus as a redelivery. Retries in one retry partition come out in the order they
//! went in, so a retry is delivered no earlier than due, but may wait behind an earlier
//! retry with a longer delay. Keyed envelopes never go to the retry topic (that would let
//! later events of the key overtake them): the bus waits in place for them.
//!
//! **Dead letters.** The last failure goes to `<topic>.<subscription>.dlq` with the
//! dead-letter headers ([`DeadLetterInfo::stamp`]) and `tidings-kafka-partition` /
//! `tidings-kafka-offset`, the record's original place in the topic. A record whose
//! headers are not a valid envelope is dead-lettered at once, with the reason.
//!
//! **Unsettled deliveries.** A delivery dropped without being settled (the bus could not
//! settle it) makes the poll thread seek its partition back to it once the partition has
//! nothing else in flight, so it is delivered again.
//!
//! **Order.** Records of one partition are handed out in offset order. With the
//! subscription's concurrency at 1 (the default), each is handled before the next.
//! With a higher concurrency, the bus handles deliveries of different ordering keys in
//! parallel and those of one key one after another; since the record key is the ordering
//! key, events with the same key are on one partition and keep their publish order.
//! Unkeyed events of one partition may then be handled in parallel; commits still follow
//! offset order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tidings_core::{
    attrs, Acker, DeadLetterInfo, Delivery, Envelope, Error, Result, Subscriber, SubscriptionSpec,
};
use tokio::sync::mpsc;

use crate::config::{KafkaConfig, StartFrom};
use crate::error::from_kafka;
use crate::publisher::{headers_of, send_all, Outgoing};
use crate::topology::SubscriptionTopics;

/// How long the poll thread waits for a bus that is behind before it pauses the
/// partitions and goes on polling.
const POLL_GAP: Duration = Duration::from_secs(5);

/// Header of retry records: when the record is due, in Unix milliseconds.
pub const DUE_HEADER: &str = "tidings-due";
/// Header of retry records and dead letters: the partition the record was first read from.
pub const ORIGIN_PARTITION_HEADER: &str = "tidings-kafka-partition";
/// Header of retry records and dead letters: the offset the record was first read from.
pub const ORIGIN_OFFSET_HEADER: &str = "tidings-kafka-offset";

/// Which of the subscription's topics a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Main,
    Retry,
}

type Tp = (Source, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    InFlight,
    Done,
    Abandoned,
}

/// The offsets of one assigned partition.
#[derive(Debug)]
struct Part {
    epoch: u64,
    revoked: bool,
    /// Offsets handed out and not yet passed by the commit point, in order.
    entries: VecDeque<(i64, Slot)>,
    /// The next offset to consume: everything below it is settled.
    settled_up_to: Option<i64>,
    /// The last offset a commit succeeded for.
    committed: Option<i64>,
    /// A delivery was given up unsettled: seek back to it.
    rewind: bool,
}

impl Part {
    fn new(epoch: u64) -> Self {
        Part {
            epoch,
            revoked: false,
            entries: VecDeque::new(),
            settled_up_to: None,
            committed: None,
            rewind: false,
        }
    }

    fn in_flight(&self) -> bool {
        self.entries.iter().any(|(_, s)| *s == Slot::InFlight)
    }

    fn uncommitted(&self) -> Option<i64> {
        match (self.settled_up_to, self.committed) {
            (Some(s), Some(c)) if s <= c => None,
            (s, _) => s,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    parts: HashMap<Tp, Part>,
    next_epoch: u64,
    /// Retry records waiting for their due time, per retry partition.
    held: HashMap<i32, VecDeque<(SystemTime, Item)>>,
}

impl State {
    fn epoch_of(&mut self, tp: Tp) -> u64 {
        if let Some(p) = self.parts.get(&tp) {
            return p.epoch;
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(tp, Part::new(epoch));
        epoch
    }
}

/// What the poll thread, the subscriber and the ackers share.
pub(crate) struct Shared {
    names: SubscriptionTopics,
    service: Arc<str>,
    subscription: Arc<str>,
    topic: Arc<str>,
    state: Mutex<State>,
    settled: Condvar,
    stop: AtomicBool,
    drain_timeout: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn source_of(&self, topic: &str) -> Option<Source> {
        if topic == self.names.topic {
            Some(Source::Main)
        } else if topic == self.names.retry {
            Some(Source::Retry)
        } else {
            None
        }
    }

    fn topic_of(&self, source: Source) -> &str {
        match source {
            Source::Main => &self.names.topic,
            Source::Retry => &self.names.retry,
        }
    }

    /// Register a record as handed to the bus; false if it is stale (its partition was
    /// revoked or rewound since it was read).
    fn hand_out(&self, tp: Tp, epoch: u64, offset: i64) -> bool {
        let mut state = self.lock();
        let Some(part) = state.parts.get_mut(&tp) else {
            return false;
        };
        if part.epoch != epoch || part.revoked || part.rewind {
            return false;
        }
        match part.entries.back() {
            Some((last, _)) if *last >= offset => {
                let at = part.entries.partition_point(|(o, _)| *o < offset);
                part.entries.insert(at, (offset, Slot::InFlight));
            }
            _ => part.entries.push_back((offset, Slot::InFlight)),
        }
        true
    }

    /// Record how a handed-out offset ended and move the commit point.
    fn settle(&self, tp: Tp, epoch: u64, offset: i64, how: Slot) {
        tracing::trace!(?tp, offset, epoch, ?how, "settled");
        let mut state = self.lock();
        if let Some(part) = state.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
            if let Some(entry) = part
                .entries
                .iter_mut()
                .find(|(o, s)| *o == offset && *s == Slot::InFlight)
            {
                entry.1 = how;
                if how == Slot::Abandoned {
                    part.rewind = true;
                }
            }
            while let Some((o, Slot::Done)) = part.entries.front().copied() {
                part.entries.pop_front();
                part.settled_up_to = Some(o + 1);
            }
        }
        drop(state);
        self.settled.notify_all();
    }

    /// Offsets to commit: every partition whose commit point moved past its last commit.
    fn commits(&self, only: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        let state = self.lock();
        state
            .parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| p.uncommitted().map(|o| (*tp, o)))
            .collect()
    }

    fn commit_list(&self, commits: &[(Tp, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(commits.len());
        for ((source, partition), offset) in commits {
            let _ = tpl.add_partition_offset(
                self.topic_of(*source),
                *partition,
                Offset::Offset(*offset),
            );
        }
        tpl
    }

    fn mark_committed(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            let (Some(source), Offset::Offset(offset)) = (self.source_of(e.topic()), e.offset())
            else {
                continue;
            };
            if let Some(p) = state.parts.get_mut(&(source, e.partition())) {
                if p.committed.is_none_or(|c| c < offset) {
                    p.committed = Some(offset);
                }
            }
        }
    }
}

/// One record, as the poll thread passes it to the subscriber.
#[derive(Debug)]
enum Item {
    Record {
        tp: Tp,
        epoch: u64,
        offset: i64,
        envelope: Envelope,
        attempt: u32,
        origin: (i32, i64),
    },
    Poison {
        tp: Tp,
        epoch: u64,
        offset: i64,
        envelope: Envelope,
        reason: String,
    },
}

impl Item {
    fn tp(&self) -> Tp {
        match self {
            Item::Record { tp, .. } | Item::Poison { tp, .. } => *tp,
        }
    }
}

/// The consumer's callbacks: rebalances and commit results, run on the poll thread.
pub(crate) struct Callbacks {
    shared: Arc<Shared>,
}

impl ClientContext for Callbacks {}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shared = &self.shared;
        let revoked: Vec<Tp> = tpl
            .elements()
            .iter()
            .filter_map(|e| shared.source_of(e.topic()).map(|s| (s, e.partition())))
            .collect();
        tracing::debug!(subscription = %shared.subscription, ?revoked, "partitions revoked; draining");
        // Stop handing out their records, and let the handlers in flight finish.
        let mut state = shared.lock();
        for tp in &revoked {
            if let Some(p) = state.parts.get_mut(tp) {
                p.revoked = true;
            }
            if tp.0 == Source::Retry {
                state.held.remove(&tp.1);
            }
        }
        let deadline = Instant::now() + shared.drain_timeout;
        loop {
            let busy = revoked
                .iter()
                .any(|tp| state.parts.get(tp).is_some_and(Part::in_flight));
            let now = Instant::now();
            if !busy || now >= deadline {
                if busy {
                    tracing::warn!(
                        subscription = %shared.subscription,
                        "handlers still running after the drain timeout; their events may be delivered again to the partitions' new owner"
                    );
                }
                break;
            }
            state = shared
                .settled
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(state);
        // Commit what is settled, then forget the partitions.
        let commits = shared.commits(Some(&revoked));
        if !commits.is_empty() && !consumer.assignment_lost() {
            let list = shared.commit_list(&commits);
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => shared.mark_committed(&list),
                Err(e) => tracing::warn!(
                    subscription = %shared.subscription, error = %e,
                    "committing the offsets of revoked partitions failed; their settled records may be delivered again"
                ),
            }
        }
        let mut state = shared.lock();
        for tp in &revoked {
            state.parts.remove(tp);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let shared = &self.shared;
                let mut state = shared.lock();
                for e in tpl.elements() {
                    if let Some(source) = shared.source_of(e.topic()) {
                        state.parts.remove(&(source, e.partition()));
                        state.epoch_of((source, e.partition()));
                    }
                }
                tracing::debug!(subscription = %shared.subscription, partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(subscription = %self.shared.subscription, error = %e, "Kafka rebalance failed")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.mark_committed(offsets),
            Err(e) => {
                tracing::debug!(subscription = %self.shared.subscription, error = %e, "offset commit failed; trying again later")
            }
        }
    }
}

/// The deliveries of one Kafka subscription.
pub struct KafkaSubscriber {
    rx: mpsc::Receiver<Vec<Item>>,
    /// Records received from the poll thread and not handed out yet.
    buf: VecDeque<Item>,
    shared: Arc<Shared>,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("group", &self.shared.names.group)
            .field("topic", &self.shared.names.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscriber {
    /// Join the consumer group of `spec` and start the poll thread.
    pub(crate) fn start(
        config: &KafkaConfig,
        spec: &SubscriptionSpec,
        producer: FutureProducer,
    ) -> Result<Self> {
        let names = SubscriptionTopics::of(spec);
        let shared = Arc::new(Shared {
            service: Arc::from(spec.service.as_str()),
            subscription: Arc::from(spec.name.as_str()),
            topic: Arc::from(spec.topic.as_str()),
            names: names.clone(),
            state: Mutex::new(State::default()),
            settled: Condvar::new(),
            stop: AtomicBool::new(false),
            drain_timeout: config.drain_timeout,
        });
        let mut c = config.client_config();
        c.set("group.id", &names.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match config.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        if let Some(t) = config.session_timeout {
            c.set("session.timeout.ms", t.as_millis().to_string());
        }
        let consumer: BaseConsumer<Callbacks> = c
            .create_with_context(Callbacks {
                shared: shared.clone(),
            })
            .map_err(|e| {
                from_kafka(
                    format_args!("creating the Kafka consumer of {}", names.group),
                    e,
                )
            })?;
        consumer
            .subscribe(&[&names.topic, &names.retry])
            .map_err(|e| {
                from_kafka(
                    format_args!("subscribing {} to {}", names.group, names.topic),
                    e,
                )
            })?;
        let capacity = usize::from(spec.prefetch.max(1));
        // Records cross to the bus in chunks, a quarter of the prefetch each: one wake-up
        // per chunk rather than per record.
        let (tx, rx) = mpsc::channel(4);
        let poller = Poller {
            consumer,
            shared: shared.clone(),
            tx,
            pending: VecDeque::new(),
            capacity,
            paused_all: false,
            behind_since: None,
            commit_interval: config.commit_interval,
            last_commit: Instant::now(),
            redeclare: Redeclare {
                runtime: tokio::runtime::Handle::try_current().ok(),
                config: config.clone(),
                topology: {
                    let mut t = tidings_core::Topology::new(spec.service.clone());
                    t.subscriptions.push(spec.clone());
                    t
                },
                last: None,
            },
        };
        std::thread::Builder::new()
            .name(format!("tidings-kafka-{}", names.group))
            .spawn(move || poller.run())
            .map_err(|e| Error::backend("starting the Kafka poll thread", e))?;
        Ok(KafkaSubscriber {
            rx,
            buf: VecDeque::new(),
            shared,
            producer,
        })
    }

    fn acker(&self, tp: Tp, epoch: u64, offset: i64, origin: (i32, i64)) -> KafkaAcker {
        KafkaAcker {
            shared: self.shared.clone(),
            producer: self.producer.clone(),
            tp,
            epoch,
            offset,
            origin,
            settled: false,
        }
    }
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        // The poll thread commits what is settled, leaves the group and ends.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Subscriber for KafkaSubscriber {
    type Acker = KafkaAcker;

    async fn next(&mut self) -> Option<Result<Delivery<KafkaAcker>>> {
        loop {
            let Some(item) = self.buf.pop_front() else {
                let chunk = self.rx.recv().await?;
                self.buf.extend(chunk);
                continue;
            };
            match item {
                Item::Record {
                    tp,
                    epoch,
                    offset,
                    envelope,
                    attempt,
                    origin,
                } => {
                    if !self.shared.hand_out(tp, epoch, offset) {
                        tracing::trace!(?tp, offset, epoch, "stale record dropped");
                        continue;
                    }
                    tracing::trace!(?tp, offset, epoch, "record handed out");
                    let acker = self.acker(tp, epoch, offset, origin);
                    return Some(Ok(Delivery::new(
                        Arc::new(envelope),
                        attempt,
                        attempt > 1,
                        acker,
                    )));
                }
                Item::Poison {
                    tp,
                    epoch,
                    offset,
                    envelope,
                    reason,
                } => {
                    if !self.shared.hand_out(tp, epoch, offset) {
                        continue;
                    }
                    let shared = &self.shared;
                    tracing::warn!(
                        subscription = %shared.subscription, topic = %shared.topic, offset, %reason,
                        "undecodable record; dead-lettering it"
                    );
                    let info = DeadLetterInfo::new(
                        reason,
                        0,
                        shared.service.clone(),
                        shared.subscription.clone(),
                        shared.topic.clone(),
                    );
                    let acker = self.acker(tp, epoch, offset, (tp.1, offset));
                    tokio::spawn(dead_letter_poison(acker, Arc::new(envelope), info));
                }
            }
        }
    }
}

/// Dead-letter an undecodable record, trying until it worked or the subscription stops.
async fn dead_letter_poison(mut acker: KafkaAcker, envelope: Arc<Envelope>, info: DeadLetterInfo) {
    let mut failures = 0u32;
    loop {
        match acker.dead_letter(envelope.clone(), info.clone()).await {
            Ok(()) => return,
            Err((error, back)) => {
                acker = back;
                failures += 1;
                tracing::warn!(error = %error, "dead-lettering an undecodable record failed; trying again");
                if acker.shared.stop.load(Ordering::SeqCst) {
                    return; // dropped unsettled: read again by the next consumer
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
            }
        }
    }
}

/// Settles one Kafka delivery by moving its partition's commit point.
pub struct KafkaAcker {
    shared: Arc<Shared>,
    producer: FutureProducer,
    tp: Tp,
    epoch: u64,
    offset: i64,
    origin: (i32, i64),
    settled: bool,
}

impl std::fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAcker")
            .field("topic", &self.shared.topic_of(self.tp.0))
            .field("partition", &self.tp.1)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl KafkaAcker {
    fn done(&mut self) {
        self.settled = true;
        self.shared
            .settle(self.tp, self.epoch, self.offset, Slot::Done);
    }

    fn origin_headers(&self) -> [(&'static str, String); 2] {
        [
            (ORIGIN_PARTITION_HEADER, self.origin.0.to_string()),
            (ORIGIN_OFFSET_HEADER, self.origin.1.to_string()),
        ]
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.shared
                .settle(self.tp, self.epoch, self.offset, Slot::Abandoned);
        }
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Acker for KafkaAcker {
    async fn ack(mut self) -> Result<(), (Error, Self)> {
        self.done();
        Ok(())
    }

    async fn retry(
        mut self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        if delay.is_zero() || envelope.ordering_key.is_some() {
            // Redeliver in place: leave the offset unsettled, so the poll thread seeks back
            // to it (or the next owner of the partition reads it again).
            self.settled = true;
            self.shared
                .settle(self.tp, self.epoch, self.offset, Slot::Abandoned);
            return Ok(());
        }
        let [p, o] = self.origin_headers();
        let extra = [
            (attrs::ATTEMPT, next_attempt.to_string()),
            (
                DUE_HEADER,
                unix_millis(SystemTime::now() + delay).to_string(),
            ),
            p,
            o,
        ];
        let record = Outgoing {
            key: None,
            headers: headers_of(&envelope, &extra),
            payload: &envelope.payload,
        };
        let retry_topic = self.shared.names.retry.clone();
        match send_all(&self.producer, &retry_topic, vec![record]).await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((
                e.context(format_args!("scheduling a retry of {}", envelope.id)),
                self,
            )),
        }
    }

    async fn dead_letter(
        mut self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        let mut parked = Envelope::clone(&envelope);
        info.stamp(&mut parked);
        let [p, o] = self.origin_headers();
        parked.set_header(p.0, p.1);
        parked.set_header(o.0, o.1);
        let record = Outgoing {
            key: parked.ordering_key.as_deref(),
            headers: headers_of(&parked, &[]),
            payload: &parked.payload,
        };
        let dlq = self.shared.names.dead_letter.clone();
        match send_all(&self.producer, &dlq, vec![record]).await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((
                e.context(format_args!("dead-lettering {}", envelope.id)),
                self,
            )),
        }
    }
}

/// What a record's headers and body hold.
pub(crate) enum Decoded {
    /// A valid envelope.
    Envelope(Envelope),
    /// Not an envelope: why, and a well-formed stand-in for the dead-letter topic.
    Poison(String, Envelope),
}

/// The envelope in a record's headers, or why there is none.
pub(crate) fn decode_record(
    headers: Option<&rdkafka::message::BorrowedHeaders>,
    payload: &[u8],
) -> Decoded {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut problem = None;
    if let Some(h) = headers {
        for header in h.iter() {
            match std::str::from_utf8(header.value.unwrap_or_default()) {
                Ok(v) => pairs.push((header.key, v)),
                Err(_) => {
                    problem.get_or_insert_with(|| {
                        format!("undecodable record: header {} is not UTF-8", header.key)
                    });
                }
            }
        }
    }
    let payload = Bytes::copy_from_slice(payload);
    let reason = match problem {
        Some(p) => p,
        None => match Envelope::from_attributes(pairs.iter().copied(), payload.clone()) {
            Ok(env) => return Decoded::Envelope(env),
            Err(e) => format!("undecodable record: {}", e.message()),
        },
    };
    Decoded::Poison(reason, substitute_envelope(headers, payload))
}

/// A well-formed envelope standing in for an undecodable record in the dead-letter topic:
/// the record's id and type where they parse, its payload, and its other headers under
/// `tidings-original-<name>`.
fn substitute_envelope(
    headers: Option<&rdkafka::message::BorrowedHeaders>,
    payload: Bytes,
) -> Envelope {
    let mut env = Envelope::new("unknown", 1, "", "application/octet-stream", payload);
    if let Some(h) = headers {
        for header in h.iter() {
            let value = String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
            match header.key {
                attrs::ID => {
                    if let Ok(id) = value.parse() {
                        env.id = id;
                    }
                }
                attrs::TYPE => env.event_type = value.clone().into(),
                attrs::SOURCE => env.source = Arc::from(value.as_str()),
                _ => {}
            }
            if header.key != attrs::ID && header.key != attrs::TYPE {
                env.headers
                    .push((format!("tidings-original-{}", header.key), value));
            }
        }
    }
    env
}

/// Owns the librdkafka consumer: polls it, passes records on, pauses when the bus is
/// behind, holds retries until due, commits.
struct Poller {
    consumer: BaseConsumer<Callbacks>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Vec<Item>>,
    pending: VecDeque<Item>,
    capacity: usize,
    paused_all: bool,
    behind_since: Option<Instant>,
    commit_interval: Duration,
    last_commit: Instant,
    /// Declares the subscription's topics again when the broker lost them.
    redeclare: Redeclare,
}

/// Creates the subscription's topics again (at most every 10 s) when the consumer finds
/// them missing, e.g. after a restart of a broker without persistent storage.
struct Redeclare {
    runtime: Option<tokio::runtime::Handle>,
    config: KafkaConfig,
    topology: tidings_core::Topology,
    last: Option<Instant>,
}

impl Redeclare {
    fn on_error(&mut self, error: &rdkafka::error::KafkaError) {
        let missing = matches!(
            error.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                    | rdkafka::types::RDKafkaErrorCode::UnknownTopic
            )
        );
        if !missing
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        let Some(runtime) = &self.runtime else { return };
        self.last = Some(Instant::now());
        let (config, topology) = (self.config.clone(), self.topology.clone());
        runtime.spawn(async move {
            tracing::warn!(
                "a topic of the subscription is missing on the broker; creating it again"
            );
            if let Err(e) = crate::topology::provision(&config, &topology).await {
                tracing::warn!(error = %e, "declaring the subscription's topics again failed");
            }
        });
    }
}

impl Poller {
    fn run(mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if !self.flush() {
                break;
            }
            let next_due = self.release_due();
            self.rewind();
            if self.last_commit.elapsed() >= self.commit_interval {
                self.commit(CommitMode::Async);
            }
            if self.wait_for_the_bus() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut timeout = if self.pending.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5)
            };
            if let Some(due) = next_due {
                timeout = timeout.min(due.duration_since(SystemTime::now()).unwrap_or_default());
            }
            // Take what is ready, up to the prefetch, waiting only for the first record.
            let mut wait = timeout;
            while self.pending.len() < self.capacity {
                let taken = match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(message)) => self.take(&message),
                    Some(Err(e)) => {
                        tracing::debug!(subscription = %self.shared.subscription, error = %e, "Kafka consumer error");
                        self.redeclare.on_error(&e);
                        None
                    }
                };
                match taken {
                    Some((item, None)) => self.pending.push_back(item),
                    Some((item, Some(due))) => self.hold(item.tp().1, due, item),
                    None => {}
                }
                wait = Duration::ZERO;
            }
        }
        self.commit(CommitMode::Sync);
        tracing::debug!(subscription = %self.shared.subscription, "Kafka consumer stopped");
        // Dropping the consumer leaves the group.
    }

    /// Pass pending records to the subscriber, in chunks; false once the subscriber is
    /// gone.
    fn flush(&mut self) -> bool {
        let chunk = (self.capacity / 4).max(1);
        while !self.pending.is_empty() {
            match self.tx.try_reserve() {
                Ok(permit) => {
                    let n = self.pending.len().min(chunk);
                    permit.send(self.pending.drain(..n).collect());
                }
                Err(mpsc::error::TrySendError::Full(())) => return true,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            }
        }
        true
    }

    /// Move due retries to the pending records and resume their partitions; the earliest
    /// due time still held.
    fn release_due(&mut self) -> Option<SystemTime> {
        let now = SystemTime::now();
        let mut resume = Vec::new();
        let mut earliest: Option<SystemTime> = None;
        {
            let mut state = self.shared.lock();
            let mut emptied = Vec::new();
            for (partition, queue) in state.held.iter_mut() {
                while queue.front().is_some_and(|(due, _)| *due <= now) {
                    if let Some((_, item)) = queue.pop_front() {
                        self.pending.push_back(item);
                    }
                }
                match queue.front() {
                    Some((due, _)) => earliest = Some(earliest.map_or(*due, |e| e.min(*due))),
                    None => emptied.push(*partition),
                }
            }
            for partition in emptied {
                state.held.remove(&partition);
                resume.push(partition);
            }
        }
        if !resume.is_empty() && !self.paused_all {
            let mut tpl = TopicPartitionList::new();
            for p in resume {
                tpl.add_partition(&self.shared.names.retry, p);
            }
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::debug!(error = %e, "resuming retry partitions failed");
            }
        }
        earliest
    }

    /// Seek partitions with a delivery given up unsettled back to it, once nothing else of
    /// the partition is in flight.
    fn rewind(&mut self) {
        let mut seeks = Vec::new();
        {
            let mut state = self.shared.lock();
            let mut fresh = Vec::new();
            for (tp, part) in state.parts.iter_mut() {
                if !part.rewind || part.revoked || part.in_flight() {
                    continue;
                }
                let target = part
                    .entries
                    .iter()
                    .find(|(_, s)| *s != Slot::Done)
                    .map(|(o, _)| *o)
                    .or(part.settled_up_to);
                if let Some(target) = target {
                    seeks.push((*tp, target, part.settled_up_to, part.committed));
                }
                fresh.push(*tp);
            }
            for tp in fresh {
                // A new epoch: records of the partition read before the seek are stale.
                let old = state.parts.remove(&tp);
                state.epoch_of(tp);
                if let (Some(old), Some(new)) = (old, state.parts.get_mut(&tp)) {
                    new.settled_up_to = old.settled_up_to;
                    new.committed = old.committed;
                }
                if tp.0 == Source::Retry {
                    state.held.remove(&tp.1);
                }
            }
        }
        for ((source, partition), offset, _, _) in seeks {
            let topic = self.shared.topic_of(source).to_string();
            tracing::debug!(%topic, partition, offset, "seeking back to redeliver an unsettled record");
            if let Err(e) = self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(%topic, partition, offset, error = %e, "seeking back failed; the record is delivered again after the next rebalance or restart");
            }
        }
    }

    /// Whether to wait for the bus instead of polling: the bus is behind, but not for
    /// long. Behind for longer than [`POLL_GAP`], every partition is paused and polling
    /// goes on (so the consumer stays in its group and rebalances are served), until the
    /// bus caught up.
    ///
    /// Short waits do not pause: resuming a partition makes the broker fetch from the
    /// position of the last record taken, which may be inside a record batch, and some
    /// Kafka-API brokers (tansu 0.6 with in-memory storage) then skip the rest of that
    /// batch. Kafka itself handles it.
    fn wait_for_the_bus(&mut self) -> bool {
        if self.pending.len() < self.capacity {
            self.behind_since = None;
            if self.paused_all && self.pending.is_empty() {
                if let Ok(assignment) = self.consumer.assignment() {
                    let held: Vec<i32> = self.shared.lock().held.keys().copied().collect();
                    let mut tpl = TopicPartitionList::new();
                    for e in assignment.elements() {
                        if e.topic() == self.shared.names.retry && held.contains(&e.partition()) {
                            continue;
                        }
                        tpl.add_partition(e.topic(), e.partition());
                    }
                    if self.consumer.resume(&tpl).is_ok() {
                        self.paused_all = false;
                    }
                }
            }
            return false;
        }
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        if since.elapsed() < POLL_GAP {
            return true;
        }
        if !self.paused_all {
            if let Ok(assignment) = self.consumer.assignment() {
                if self.consumer.pause(&assignment).is_ok() {
                    tracing::debug!(subscription = %self.shared.subscription, "the bus is behind; pausing the partitions");
                    self.paused_all = true;
                }
            }
        }
        false
    }

    fn commit(&mut self, mode: CommitMode) {
        self.last_commit = Instant::now();
        let commits = self.shared.commits(None);
        if commits.is_empty() {
            return;
        }
        let list = self.shared.commit_list(&commits);
        match self.consumer.commit(&list, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => self.shared.mark_committed(&list),
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(subscription = %self.shared.subscription, error = %e, "offset commit failed; trying again later")
            }
        }
    }

    /// Turn a record into an item, with the time it is due if that is still ahead.
    fn take(&self, message: &BorrowedMessage<'_>) -> Option<(Item, Option<SystemTime>)> {
        let source = self.shared.source_of(message.topic())?;
        let tp = (source, message.partition());
        let offset = message.offset();
        let epoch = self.shared.lock().epoch_of(tp);
        tracing::trace!(?tp, offset, epoch, "record read");
        let item = match decode_record(message.headers(), message.payload().unwrap_or_default()) {
            Decoded::Poison(reason, envelope) => Item::Poison {
                tp,
                epoch,
                offset,
                envelope,
                reason,
            },
            Decoded::Envelope(mut envelope) => {
                let (attempt, due, origin) = match source {
                    Source::Main => (1, None, (tp.1, offset)),
                    Source::Retry => {
                        let attempt = envelope
                            .remove_header(attrs::ATTEMPT)
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(1u32)
                            .max(1);
                        let due = envelope
                            .remove_header(DUE_HEADER)
                            .and_then(|d| d.parse::<u64>().ok())
                            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
                        let partition = envelope
                            .remove_header(ORIGIN_PARTITION_HEADER)
                            .and_then(|p| p.parse().ok());
                        let origin_offset = envelope
                            .remove_header(ORIGIN_OFFSET_HEADER)
                            .and_then(|o| o.parse().ok());
                        let origin = match (partition, origin_offset) {
                            (Some(p), Some(o)) => (p, o),
                            _ => (tp.1, offset),
                        };
                        (attempt, due, origin)
                    }
                };
                let item = Item::Record {
                    tp,
                    epoch,
                    offset,
                    envelope,
                    attempt,
                    origin,
                };
                return Some((item, due.filter(|d| *d > SystemTime::now())));
            }
        };
        Some((item, None))
    }

    /// Keep a retry until it is due, pausing its partition meanwhile.
    fn hold(&mut self, partition: i32, due: SystemTime, item: Item) {
        let first = {
            let mut state = self.shared.lock();
            let queue = state.held.entry(partition).or_default();
            queue.push_back((due, item));
            queue.len() == 1
        };
        if first {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.shared.names.retry, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::debug!(error = %e, "pausing a retry partition failed");
            }
        }
    }
}
