//! Settling: a [`MemoryAcker`] acknowledges, redelivers after a delay, or dead-letters
//! one delivery; dropped unsettled, it puts the envelope back.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tidings_core::transport::Acker;
use tidings_core::{DeadLetterInfo, Envelope, Error};

use crate::error;
use crate::queue::{Item, Queue};
use crate::topology::lock;
use crate::wire::Body;

/// Settles one delivery from a memory queue. Dropping it unsettled puts the envelope back
/// at the head of the queue as a redelivery (attempt + 1), so a consumer that stops
/// mid-delivery loses nothing.
pub struct MemoryAcker {
    queue: Arc<Queue>,
    /// What was delivered; `None` once settled.
    body: Option<Body>,
    attempt: u32,
    seq: u64,
}

impl MemoryAcker {
    pub(crate) fn new(queue: Arc<Queue>, body: Body, attempt: u32, seq: u64) -> Self {
        MemoryAcker {
            queue,
            body: Some(body),
            attempt,
            seq,
        }
    }
}

impl Acker for MemoryAcker {
    async fn ack(mut self) -> Result<(), (Error, Self)> {
        self.body = None;
        self.queue.pending.settle();
        Ok(())
    }

    async fn retry(
        mut self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        self.body = None;
        let item = Item {
            body: Body::Envelope(envelope),
            attempt: next_attempt,
            redelivered: true,
            seq: self.seq,
        };
        let queue = self.queue.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !delay.is_zero() => {
                // Still pending while the timer runs. If the runtime drops the timer task
                // (shutdown), the guard puts the envelope back at once: nothing is lost
                // while the hub lives.
                let guard = RedeliverOnDrop(Some((queue, item)));
                runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    drop(guard);
                });
            }
            _ => queue.redeliver(item),
        }
        Ok(())
    }

    async fn dead_letter(
        mut self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        {
            let mut dead = lock(&self.queue.dead);
            if dead.len() >= self.queue.dead_letter_capacity {
                drop(dead);
                let err = error::dead_letters_full(
                    &self.queue.display_name(),
                    self.queue.dead_letter_capacity,
                );
                return Err((err, self));
            }
            dead.push_back(info.stamped(&envelope));
        }
        self.body = None;
        self.queue.pending.settle();
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            self.queue.redeliver(Item {
                body,
                attempt: self.attempt.saturating_add(1),
                redelivered: true,
                seq: self.seq,
            });
        }
    }
}

impl fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcker")
            .field("queue", &self.queue.display_name())
            .field(
                "id",
                &match &self.body {
                    Some(Body::Envelope(env)) => Some(env.id),
                    _ => None,
                },
            )
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Puts an envelope back as a redelivery when dropped: when its retry delay ended, or
/// when the timer task was dropped.
struct RedeliverOnDrop(Option<(Arc<Queue>, Item)>);

impl Drop for RedeliverOnDrop {
    fn drop(&mut self) {
        if let Some((queue, item)) = self.0.take() {
            queue.redeliver(item);
        }
    }
}
