//! One subscription's queue: a bounded channel that competing subscribers pull from, the
//! lane of redeliveries that go ahead of it, the dead-letter list, and the hub-wide count
//! of unsettled envelopes that `Memory::idle` waits on.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use async_channel::{Receiver, Sender, TrySendError};
use tidings_core::{transport::SubscriptionSpec, Envelope, Result};
use tokio::sync::Notify;

use crate::config::MemoryConfig;
use crate::error;
use crate::topology::{lock, Filter};
use crate::wire::Body;

/// The hub-wide count of envelope copies not yet settled: queued, delivered but not
/// acknowledged or dead-lettered, or waiting for a delayed retry.
#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    /// How many `idle` futures are waiting, so that settling skips the notify when none
    /// is.
    waiters: AtomicUsize,
    notify: Notify,
}

impl Pending {
    #[inline]
    pub(crate) fn add(&self, n: usize) {
        self.count.fetch_add(n, SeqCst);
    }

    /// One copy was acknowledged or dead-lettered (or never made it into a queue).
    #[inline]
    pub(crate) fn settle(&self) {
        let before = self.count.fetch_sub(1, SeqCst);
        debug_assert!(before > 0, "pending count underflow");
        if before == 1 && self.waiters.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Resolves once the count is zero.
    pub(crate) async fn idle(self: Arc<Self>) {
        if self.get() == 0 {
            return;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.waiters.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            let mut notified = pin!(self.notify.notified());
            // Register before checking, so a settle between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What travels through a queue's channel.
pub(crate) enum Slot {
    Item(Item),
    /// Wakes a waiting subscriber to look at the redelivery lane.
    Wake,
}

/// One copy of an envelope (or raw message) in one queue.
pub(crate) struct Item {
    pub(crate) body: Body,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
    /// Position in the queue, in publish order; redeliveries go back by it.
    pub(crate) seq: u64,
}

/// One subscription's queue: a bounded MPMC channel (competing subscribers pull from it),
/// a lane for redeliveries that go ahead of it, and the dead-letter list.
pub(crate) struct Queue {
    /// The subscription name.
    pub(crate) name: String,
    pub(crate) topic: String,
    tx: Sender<Slot>,
    rx: Receiver<Slot>,
    /// The next position in the queue.
    next_seq: AtomicU64,
    /// Redeliveries (dropped or retried deliveries), taken before the channel, sorted by
    /// their original position, so they come back in publish order however they were
    /// dropped (like a broker requeueing to the original position). Unbounded, but it only
    /// holds envelopes that were already taken out of the channel.
    redeliveries: Mutex<VecDeque<Item>>,
    redelivery_count: AtomicUsize,
    /// Wake tokens in the channel, so `waiting()` can leave them out.
    wake_tokens: AtomicUsize,
    pub(crate) filter: Mutex<Arc<Filter>>,
    pub(crate) dead: Mutex<VecDeque<Envelope>>,
    pub(crate) dead_letter_capacity: usize,
    pub(crate) pending: Arc<Pending>,
}

impl Queue {
    pub(crate) fn new(
        spec: &SubscriptionSpec,
        config: &MemoryConfig,
        pending: Arc<Pending>,
    ) -> Self {
        let (tx, rx) = async_channel::bounded(config.queue_capacity.max(1));
        Queue {
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            tx,
            rx,
            next_seq: AtomicU64::new(0),
            redeliveries: Mutex::default(),
            redelivery_count: AtomicUsize::new(0),
            wake_tokens: AtomicUsize::new(0),
            filter: Mutex::new(Arc::new(Filter::new(&spec.events))),
            dead: Mutex::default(),
            dead_letter_capacity: config.dead_letter_capacity,
            pending,
        }
    }

    /// `<subscription>.<topic>`, for messages.
    pub(crate) fn display_name(&self) -> String {
        format!("{}.{}", self.name, self.topic)
    }

    /// Put a new copy of `body` at the back of the queue as a first delivery, waiting
    /// while the queue is full. Counts the copy as pending; if the future is dropped before
    /// the copy is in, the count is restored.
    #[inline]
    pub(crate) async fn push(&self, body: Body) -> Result<()> {
        let item = Item {
            body,
            attempt: 1,
            redelivered: false,
            seq: self.next_seq.fetch_add(1, Relaxed),
        };
        self.pending.add(1);
        match self.tx.try_send(Slot::Item(item)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(slot)) => {
                // Dropped (publish cancelled, or the send failed): the copy is not in.
                let mut unpend = Unpend(Some(&self.pending));
                self.tx
                    .send(slot)
                    .await
                    .map_err(|_| error::closed(&self.display_name()))?;
                unpend.0 = None;
                Ok(())
            }
            Err(TrySendError::Closed(_)) => {
                self.pending.settle();
                Err(error::closed(&self.display_name()))
            }
        }
    }

    /// Deliver `item` again ahead of the queued envelopes (already counted as pending); on
    /// a queue torn down, the copy is settled instead.
    pub(crate) fn redeliver(&self, item: Item) {
        {
            let mut lane = lock(&self.redeliveries);
            // Checked under the lane's lock, which `close` drains after closing.
            if self.tx.is_closed() {
                drop(lane);
                self.pending.settle();
                return;
            }
            let at = lane.partition_point(|queued| queued.seq < item.seq);
            lane.insert(at, item);
            self.redelivery_count.store(lane.len(), SeqCst);
        }
        // Wake a subscriber blocked on an empty channel. If the channel is full, every
        // subscriber has envelopes to take and looks at the lane before its next one.
        if self.tx.try_send(Slot::Wake).is_ok() {
            self.wake_tokens.fetch_add(1, SeqCst);
        }
    }

    /// The next redelivery, if any.
    #[inline]
    pub(crate) fn take_redelivery(&self) -> Option<Item> {
        if self.redelivery_count.load(SeqCst) == 0 {
            return None;
        }
        let mut lane = lock(&self.redeliveries);
        let item = lane.pop_front();
        self.redelivery_count.store(lane.len(), SeqCst);
        item
    }

    /// The next item from the channel; `None` if it closed. Cancel-safe.
    #[inline]
    pub(crate) async fn recv(&self) -> Option<Item> {
        loop {
            match self.rx.recv().await {
                Ok(Slot::Item(item)) => return Some(item),
                Ok(Slot::Wake) => {
                    self.wake_tokens.fetch_sub(1, SeqCst);
                    if let Some(item) = self.take_redelivery() {
                        return Some(item);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Close the queue (teardown): subscribers see it end, what waits in it is dropped
    /// and settled, and later redeliveries are settled at once.
    pub(crate) fn close(&self) {
        self.tx.close();
        while let Ok(slot) = self.rx.try_recv() {
            if let Slot::Item(_) = slot {
                self.pending.settle();
            }
        }
        let lane = std::mem::take(&mut *lock(&self.redeliveries));
        self.redelivery_count.store(0, SeqCst);
        for _ in lane {
            self.pending.settle();
        }
        lock(&self.dead).clear();
    }

    /// Envelopes waiting to be delivered (queued plus redeliveries).
    pub(crate) fn waiting(&self) -> usize {
        let queued = self.rx.len().saturating_sub(self.wake_tokens.load(SeqCst));
        queued + self.redelivery_count.load(SeqCst)
    }
}

/// Restores the pending count if a push is abandoned.
struct Unpend<'a>(Option<&'a Pending>);

impl Drop for Unpend<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.0 {
            pending.settle();
        }
    }
}
