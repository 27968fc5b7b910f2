//! Retry records read before they are due, held by the poll thread until their time.
//!
//! Each retry partition keeps its held records ordered by due time (then offset), so a
//! record due soon is released as soon as it is due even when a record due much later
//! was written to the partition before it: no head-of-line blocking. The poll thread
//! reads a retry partition ahead while it holds fewer than [`HOLD_LIMIT`] records and
//! pauses it only at that limit; it resumes it once releases brought it below again.
//!
//! Releasing out of offset order does not move the commit point past a record still
//! held: each held record is registered in its partition's offsets
//! ([`Slot::Held`](super::state::Slot)), and the commit point stops below the first
//! record that is not settled. After a restart or a rebalance the partition is read
//! again from there, so the records still held are read (and held) again, and those
//! behind them that were already handled are delivered again: at least once.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::Item;

/// How many records one retry partition holds before the poll thread pauses it (and so
/// stops reading ahead). Held records stay in memory, payload included: the bound on
/// that memory is this many records per assigned retry partition.
pub(crate) const HOLD_LIMIT: usize = 10_000;

/// The held records of one retry partition, earliest due first.
#[derive(Debug, Default)]
pub(super) struct Held {
    records: BTreeMap<(SystemTime, i64), Item>,
    /// The partition was paused because it holds [`HOLD_LIMIT`] records.
    pub(super) paused: bool,
}

impl Held {
    /// Hold `item` (at `offset`) until `due`; true if the partition must be paused now.
    pub(super) fn push(&mut self, due: SystemTime, offset: i64, item: Item) -> bool {
        if let Some(old) = self.records.insert((due, offset), item) {
            old.delivery.acker.forget();
        }
        if self.records.len() >= HOLD_LIMIT && !self.paused {
            self.paused = true;
            return true;
        }
        false
    }

    /// Move the records due at `now` to `out`, earliest first; true if the partition was
    /// paused and may be resumed now.
    pub(super) fn release(&mut self, now: SystemTime, out: &mut impl Extend<Item>) -> bool {
        while let Some(entry) = self.records.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.extend([entry.remove()]);
        }
        if self.paused && self.records.len() < HOLD_LIMIT {
            self.paused = false;
            return true;
        }
        false
    }

    /// When the earliest record held is due.
    pub(super) fn next_due(&self) -> Option<SystemTime> {
        self.records.first_key_value().map(|((due, _), _)| *due)
    }

    /// Whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl Drop for Held {
    /// Held records that are dropped (their partition revoked or rewound) were never
    /// handed out: their ackers must not settle anything, and must not take the state's
    /// lock, which whoever drops them may hold.
    fn drop(&mut self) {
        for (_, item) in std::mem::take(&mut self.records) {
            item.delivery.acker.forget();
        }
    }
}
