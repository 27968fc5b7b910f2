//! The poll thread: owns the librdkafka consumer, serves its rebalance callbacks, hands
//! records to the subscriber, holds retries until due and commits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tidings_core::transport::Delivery;
use tokio::sync::mpsc;

use super::held::HOLD_LIMIT;
use super::state::{Part, Shared, Slot, Source, Tp};
use super::Item;
use crate::acker::KafkaAcker;
use crate::config::KafkaConfig;
use crate::wire;

/// How long the poll thread waits for a bus that is behind before it pauses the
/// partitions and goes on polling.
const POLL_GAP: Duration = Duration::from_secs(5);

/// How long stopping waits for the last commit and for the consumer to close.
const LAST_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The consumer's callbacks: rebalances and commit results, run on the poll thread.
pub(super) struct Callbacks {
    pub(super) shared: Arc<Shared>,
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let shared = &self.shared;
                {
                    let mut state = shared.lock();
                    for e in tpl.elements() {
                        if let Some(source) = shared.source_of(e.topic()) {
                            state.parts.remove(&(source, e.partition()));
                            state.epoch_of((source, e.partition()));
                            if source == Source::Retry {
                                // Read again from the commit point, which is below them.
                                state.held.remove(&e.partition());
                            }
                        }
                    }
                }
                // librdkafka keeps a pause the application set across a revoke and a new
                // assignment; a partition paused while the bus was behind (or while a retry
                // was held) before the group lost it would stay paused for good.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(subscription = %shared.subscription, error = %e, "resuming newly assigned partitions failed");
                }
                shared.reassigned.store(true, Ordering::SeqCst);
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

/// Owns the librdkafka consumer: polls it, passes records on, pauses when the bus is
/// behind, holds retries until due, commits.
pub(super) struct Poller {
    pub(super) consumer: BaseConsumer<Callbacks>,
    pub(super) shared: Arc<Shared>,
    pub(super) producer: FutureProducer,
    pub(super) tx: mpsc::Sender<Vec<Item>>,
    pub(super) pending: VecDeque<Item>,
    pub(super) capacity: usize,
    pub(super) paused_all: bool,
    pub(super) behind_since: Option<Instant>,
    pub(super) commit_interval: Duration,
    pub(super) last_commit: Instant,
    /// Declares the subscription's topics again when the broker lost them.
    pub(super) redeclare: Redeclare,
}

/// Creates the subscription's topics again (at most every 10 s) when the consumer finds
/// them missing, e.g. after a restart of a broker without persistent storage.
pub(super) struct Redeclare {
    pub(super) runtime: Option<tokio::runtime::Handle>,
    pub(super) config: KafkaConfig,
    pub(super) topology: tidings_core::transport::Topology,
    pub(super) last: Option<Instant>,
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
    /// Poll until the subscriber stops, then make the last commit and close the consumer.
    /// `live` counts this consumer as running until it is closed.
    pub(super) fn run<L: Send + 'static>(mut self, live: L) {
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
            } else if self.paused_all {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(5)
            };
            if let Some(due) = next_due {
                timeout = timeout.min(due.duration_since(SystemTime::now()).unwrap_or_default());
            }
            // Take what is ready, up to the prefetch, waiting only for the first record.
            // With every partition paused because the bus is behind, poll once all the
            // same: polling is what serves rebalances, and a member that stops polling
            // holds up its whole group.
            let mut wait = timeout;
            let mut serve = self.paused_all;
            while self.pending.len() < self.capacity || std::mem::take(&mut serve) {
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
                    Some((item, Some(due))) => self.hold(due, item),
                    None => {}
                }
                wait = Duration::ZERO;
            }
        }
        // The last commit and closing the consumer (leaving the group) wait for the broker;
        // a broker that is away would hold them, and `Bus::shutdown` with them, for as long
        // as it stays away. They run on a thread of their own, waited for up to
        // LAST_COMMIT_WAIT; after that the consumer finishes closing in the background.
        let subscription = self.shared.subscription.clone();
        let closing = std::thread::Builder::new()
            .name(format!("tidings-kafka-close-{subscription}"))
            .spawn(move || {
                let _live = live;
                self.commit(CommitMode::Sync);
                let subscription = self.shared.subscription.clone();
                drop(self); // leaves the group and destroys the consumer
                tracing::debug!(%subscription, "Kafka consumer closed");
            });
        let Ok(closing) = closing else {
            tracing::error!(%subscription, "could not start a thread to close the Kafka consumer");
            return;
        };
        let deadline = Instant::now() + LAST_COMMIT_WAIT;
        while !closing.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    %subscription,
                    "the broker did not let the Kafka consumer commit and close within {LAST_COMMIT_WAIT:?}; it goes on closing in the background, and settled records may be delivered again"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = closing.join();
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

    /// Move due retries to the pending records, earliest due first, and resume the retry
    /// partitions that were paused full; the earliest due time still held.
    fn release_due(&mut self) -> Option<SystemTime> {
        let now = SystemTime::now();
        let mut resume = Vec::new();
        let mut earliest: Option<SystemTime> = None;
        {
            let mut state = self.shared.lock();
            for (partition, held) in state.held.iter_mut() {
                if held.release(now, &mut self.pending) {
                    resume.push(*partition);
                }
                if let Some(due) = held.next_due() {
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
            }
            state.held.retain(|_, held| !held.is_empty());
        }
        if !self.paused_all {
            self.resume_retry(resume);
        }
        earliest
    }

    /// Resume the retry partitions `partitions`.
    fn resume_retry(&self, partitions: Vec<i32>) {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.shared.names.retry, p);
        }
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::debug!(error = %e, "resuming retry partitions failed");
        }
    }

    /// Seek partitions with a delivery given up unsettled back to it, once nothing else of
    /// the partition is in flight.
    fn rewind(&mut self) {
        let mut seeks = Vec::new();
        let mut resume = Vec::new();
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
                    // Read again from the seek target, which is at or below them.
                    if state.held.remove(&tp.1).is_some_and(|h| h.paused) {
                        resume.push(tp.1);
                    }
                }
            }
        }
        if !self.paused_all {
            self.resume_retry(resume);
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
        if self.shared.reassigned.swap(false, Ordering::SeqCst) {
            // The new assignment was resumed: pause again if the bus is still behind.
            self.paused_all = false;
        }
        if self.pending.len() < self.capacity {
            self.behind_since = None;
            if self.paused_all && self.pending.is_empty() {
                if let Ok(assignment) = self.consumer.assignment() {
                    let held: Vec<i32> = (self.shared.lock().held.iter())
                        .filter(|(_, h)| h.paused)
                        .map(|(p, _)| *p)
                        .collect();
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

    /// Turn a record into an item, with the time it is due if that is still ahead (a
    /// retry record's due time and first place come from its own headers).
    fn take(&self, message: &BorrowedMessage<'_>) -> Option<(Item, Option<SystemTime>)> {
        let source = self.shared.source_of(message.topic())?;
        let tp = (source, message.partition());
        let offset = message.offset();
        let epoch = self.shared.lock().epoch_of(tp);
        tracing::trace!(?tp, offset, epoch, "record read");
        let (wire, stamp) = wire::read(message, source == Source::Retry);
        let acker = KafkaAcker::new(
            self.shared.clone(),
            self.producer.clone(),
            tp,
            epoch,
            offset,
            stamp.origin.unwrap_or((tp.1, offset)),
        );
        let item = Item {
            tp,
            epoch,
            offset,
            delivery: Delivery::from_wire(wire, acker).with_partition(tp.1),
        };
        Some((item, stamp.due.filter(|d| *d > SystemTime::now())))
    }

    /// Keep a retry until it is due, ordered by due time among the others held on its
    /// partition; pause the partition once it holds [`HOLD_LIMIT`] records.
    fn hold(&mut self, due: SystemTime, item: Item) {
        let Item {
            tp, epoch, offset, ..
        } = item;
        let full = {
            let mut state = self.shared.lock();
            if !state.hold(tp, epoch, offset) {
                drop(state);
                tracing::trace!(?tp, offset, epoch, "stale retry dropped");
                item.delivery.acker.forget();
                return;
            }
            state.held.entry(tp.1).or_default().push(due, offset, item)
        };
        if full {
            tracing::debug!(
                subscription = %self.shared.subscription, partition = tp.1,
                "{HOLD_LIMIT} retries held on one partition; pausing it until some are due"
            );
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.shared.names.retry, tp.1);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::debug!(error = %e, "pausing a retry partition failed");
            }
        }
    }
}
