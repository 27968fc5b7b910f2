//! The offsets of the assigned partitions and what the poll thread, the subscriber and
//! the ackers share: which records are handed out, which are settled, and the commit point
//! of each partition.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};

use super::held::Held;
use crate::topology::SubscriptionTopics;

/// Which of the subscription's topics a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    Main,
    Retry,
}

pub(crate) type Tp = (Source, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A retry record read before it is due and held by the poll thread: not handed out
    /// yet, and the commit point stays below it.
    Held,
    InFlight,
    Done,
    Abandoned,
}

/// The offsets of one assigned partition.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) epoch: u64,
    pub(super) revoked: bool,
    /// Offsets handed out and not yet passed by the commit point, in order.
    pub(super) entries: VecDeque<(i64, Slot)>,
    /// The next offset to consume: everything below it is settled.
    pub(super) settled_up_to: Option<i64>,
    /// The last offset a commit succeeded for.
    pub(super) committed: Option<i64>,
    /// A delivery was given up unsettled: seek back to it.
    pub(super) rewind: bool,
}

impl Part {
    pub(super) fn new(epoch: u64) -> Self {
        Part {
            epoch,
            revoked: false,
            entries: VecDeque::new(),
            settled_up_to: None,
            committed: None,
            rewind: false,
        }
    }

    pub(super) fn in_flight(&self) -> bool {
        self.entries.iter().any(|(_, s)| *s == Slot::InFlight)
    }

    pub(super) fn uncommitted(&self) -> Option<i64> {
        match (self.settled_up_to, self.committed) {
            (Some(s), Some(c)) if s <= c => None,
            (s, _) => s,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) parts: HashMap<Tp, Part>,
    pub(super) next_epoch: u64,
    /// Retry records waiting for their due time, per retry partition.
    pub(super) held: HashMap<i32, Held>,
}

impl State {
    pub(super) fn epoch_of(&mut self, tp: Tp) -> u64 {
        if let Some(p) = self.parts.get(&tp) {
            return p.epoch;
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(tp, Part::new(epoch));
        epoch
    }

    /// Register a retry record as held until due, so that the commit point of its
    /// partition stays below it until it is handed out and settled; false if it is stale.
    pub(super) fn hold(&mut self, tp: Tp, epoch: u64, offset: i64) -> bool {
        let Some(part) = self.parts.get_mut(&tp) else {
            return false;
        };
        if part.epoch != epoch || part.revoked || part.rewind {
            return false;
        }
        let at = part.entries.partition_point(|(o, _)| *o < offset);
        part.entries.insert(at, (offset, Slot::Held));
        true
    }
}

/// What the poll thread, the subscriber and the ackers share.
pub(crate) struct Shared {
    pub(crate) names: SubscriptionTopics,
    pub(super) subscription: Arc<str>,
    pub(super) state: Mutex<State>,
    pub(super) settled: Condvar,
    pub(super) stop: AtomicBool,
    /// Set when partitions were assigned (and resumed): the poll thread forgets that it
    /// had paused everything.
    pub(super) reassigned: AtomicBool,
    pub(super) drain_timeout: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn source_of(&self, topic: &str) -> Option<Source> {
        if topic == self.names.topic {
            Some(Source::Main)
        } else if topic == self.names.retry {
            Some(Source::Retry)
        } else {
            None
        }
    }

    pub(crate) fn topic_of(&self, source: Source) -> &str {
        match source {
            Source::Main => &self.names.topic,
            Source::Retry => &self.names.retry,
        }
    }

    /// Register a record as handed to the bus; false if it is stale (its partition was
    /// revoked or rewound since it was read).
    pub(super) fn hand_out(&self, tp: Tp, epoch: u64, offset: i64) -> bool {
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
                match part.entries.get_mut(at) {
                    // A held retry record, released: it is in flight now.
                    Some(entry) if *entry == (offset, Slot::Held) => entry.1 = Slot::InFlight,
                    _ => part.entries.insert(at, (offset, Slot::InFlight)),
                }
            }
            _ => part.entries.push_back((offset, Slot::InFlight)),
        }
        true
    }

    /// Record how a handed-out offset ended and move the commit point.
    pub(crate) fn settle(&self, tp: Tp, epoch: u64, offset: i64, how: Slot) {
        tracing::trace!(?tp, offset, epoch, ?how, "settled");
        let mut state = self.lock();
        if let Some(part) = state.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
            // The entries are in offset order; a partition may hold thousands of retries.
            let from = part.entries.partition_point(|(o, _)| *o < offset);
            if let Some(entry) = part
                .entries
                .range_mut(from..)
                .take_while(|(o, _)| *o == offset)
                .find(|(_, s)| *s == Slot::InFlight)
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
    pub(super) fn commits(&self, only: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        let state = self.lock();
        state
            .parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| p.uncommitted().map(|o| (*tp, o)))
            .collect()
    }

    pub(super) fn commit_list(&self, commits: &[(Tp, i64)]) -> TopicPartitionList {
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

    pub(super) fn mark_committed(&self, tpl: &TopicPartitionList) {
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
