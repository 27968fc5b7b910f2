//! Dead letters on a memory hub: kept per subscription in a bounded list, listed, looked up
//! by id, replayed into the subscription's queue (as parked, or edited), and purged.

use std::collections::VecDeque;
use std::sync::Arc;

use tidings_core::{DeadLetter, Envelope, Replay, Result};

use crate::queue::Queue;
use crate::topology::lock;
use crate::wire::Body;

/// Up to `limit` dead letters of `queue`, oldest first.
pub(crate) fn list(queue: &Queue, limit: usize) -> Vec<DeadLetter> {
    let dead = lock(&queue.dead);
    dead.iter()
        .take(limit)
        .filter_map(|env| DeadLetter::from_envelope(env.clone()))
        .collect()
}

/// The dead letter of `queue` with envelope id `id`.
pub(crate) fn find(queue: &Queue, id: uuid::Uuid) -> Option<DeadLetter> {
    let dead = lock(&queue.dead);
    dead.iter()
        .find(|env| env.id == id)
        .and_then(|env| DeadLetter::from_envelope(env.clone()))
}

/// Delete the dead letters `which` selects from `queue`, in one step under the list's
/// lock (a replay running meanwhile has already taken its own out); how many.
pub(crate) fn purge(queue: &Queue, which: &Replay) -> usize {
    let mut dead = lock(&queue.dead);
    let before = dead.len();
    dead.retain(|env| !which.selects(&env.id));
    before - dead.len()
}

/// Move the dead letters `which` selects out of the list and send what
/// [`Replay::envelope_for`] makes of each into `queue` (an edited replay sends its edited
/// copy, and the parked original is gone); returns how many moved. What a failed or
/// cancelled replay did not move stays.
pub(crate) async fn replay(queue: &Queue, which: &Replay) -> Result<usize> {
    let selected: VecDeque<Envelope> = {
        let mut dead = lock(&queue.dead);
        let (selected, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut *dead)
            .into_iter()
            .partition(|env| which.selects(&env.id));
        *dead = kept;
        selected
    };
    let mut replay = ReplayGuard {
        queue,
        left: selected,
    };
    let mut moved = 0;
    while let Some(parked) = replay.left.front() {
        let envelope = which.envelope_for(parked.clone());
        queue.push(Body::Envelope(Arc::new(envelope))).await?;
        replay.left.pop_front();
        moved += 1;
    }
    Ok(moved)
}

/// Puts dead letters that a cancelled or failed replay did not move back in front of the
/// dead-letter list, so a replay loses nothing.
struct ReplayGuard<'a> {
    queue: &'a Queue,
    left: VecDeque<Envelope>,
}

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        if self.left.is_empty() {
            return;
        }
        let mut dead = lock(&self.queue.dead);
        for env in self.left.drain(..).rev() {
            dead.push_front(env);
        }
    }
}
