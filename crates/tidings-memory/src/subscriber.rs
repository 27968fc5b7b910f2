//! Receiving: a [`MemorySubscriber`] pulls deliveries from its subscription's queue
//! (competing with the other subscribers of that queue).

use std::fmt;
use std::sync::Arc;

use tidings_core::transport::{Delivery, Subscriber};

use crate::acker::MemoryAcker;
use crate::queue::{Item, Queue};
use crate::wire::Body;

/// The deliveries of one subscription on a memory hub. Several subscribers of one
/// subscription compete: each envelope goes to one of them.
pub struct MemorySubscriber {
    pub(crate) queue: Arc<Queue>,
}

impl MemorySubscriber {
    #[inline]
    fn deliver(&self, item: Item) -> Delivery<MemoryAcker> {
        let Item {
            body,
            attempt,
            redelivered,
            seq,
        } = item;
        let acker = MemoryAcker::new(self.queue.clone(), body.clone(), attempt, seq);
        match body {
            Body::Envelope(envelope) => Delivery::new(envelope, attempt, redelivered, acker),
            Body::Raw(raw) => Delivery::from_wire(raw.to_wire(attempt, redelivered), acker),
        }
    }
}

impl Subscriber for MemorySubscriber {
    type Acker = MemoryAcker;

    /// The next delivery: redeliveries first, then the queue in publish order. Never ends
    /// while the hub lives; cancel-safe (a dropped call takes nothing out of the queue).
    async fn next(&mut self) -> Option<tidings_core::Result<Delivery<MemoryAcker>>> {
        if let Some(item) = self.queue.take_redelivery() {
            return Some(Ok(self.deliver(item)));
        }
        let item = self.queue.recv().await?;
        Some(Ok(self.deliver(item)))
    }
}

impl fmt::Debug for MemorySubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySubscriber")
            .field("queue", &self.queue.display_name())
            .finish_non_exhaustive()
    }
}
