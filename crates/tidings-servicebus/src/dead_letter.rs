//! The dead-letter subqueue of a subscription (`$DeadLetterQueue`): listing and replay.
//!
//! The REST API has no browse, so all of them peek-lock the dead letters one by one
//! (`timeout=0`) and hold their locks for the walk: listing unlocks them all again; replay
//! re-sends the selected ones (as parked, or edited) to the topic addressed to the
//! subscription (`To`), completes them, and unlocks the rest; purging completes the
//! selected ones and unlocks the rest. A dead letter locked by another walk (a replay
//! running) is not seen by this one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    transport::{attrs, SubscriptionSpec},
    DeadLetter, DeadLetterInfo, Envelope, Error, Replay, Result,
};

use crate::acker;
use crate::client::Rest;
use crate::publisher;
use crate::topology::dead_letter_path;
use crate::wire::{self, Received, Resend};

/// Up to `limit` dead letters of `spec`'s subscription, oldest first, left where they are.
pub(crate) async fn list(
    rest: &Rest,
    spec: &SubscriptionSpec,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let held = lock_all(rest, spec, limit).await?;
    let out = held.iter().map(|(m, _)| dead_letter_of(m, spec)).collect();
    unlock_all(rest, held.into_iter().map(|(_, l)| l)).await;
    Ok(out)
}

/// Send what `which` makes of each dead letter of `spec`'s subscription it selects
/// ([`for_replay`]: the parked envelope or the edited copy, without dead-letter details)
/// back to the subscription, and complete the dead letters; how many were replayed.
pub(crate) async fn replay(rest: &Rest, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
    let held = lock_all(rest, spec, usize::MAX).await?;
    let mut moved = 0usize;
    let mut rest_of = held.into_iter();
    let mut keep = Vec::new();
    let mut failure = None;
    for (m, lock_uri) in rest_of.by_ref() {
        let parked = m.envelope();
        if !which.selects(&parked.id) {
            keep.push(lock_uri);
            continue;
        }
        let env = for_replay(which, parked);
        let replayed = async {
            let out = wire::encode(
                &env,
                Resend {
                    to: Some(&spec.name),
                    scheduled: None,
                    extra: Vec::new(),
                },
            )?;
            publisher::send_one(rest, &spec.topic, out)
                .await
                .map_err(|e: Error| e.context("replaying a dead letter"))?;
            acker::complete(rest, &lock_uri, "completing a replayed dead letter").await
        }
        .await;
        match replayed {
            Ok(()) => moved += 1,
            Err(e) => {
                keep.push(lock_uri);
                failure = Some(e);
                break;
            }
        }
    }
    keep.extend(rest_of.map(|(_, l)| l));
    unlock_all(rest, keep).await;
    match failure {
        Some(e) => Err(e.context(format_args!("after replaying {moved}"))),
        None => Ok(moved),
    }
}

/// Delete the dead letters of `spec`'s subscription that `which` selects (complete them)
/// and unlock the rest; how many were deleted.
pub(crate) async fn purge(rest: &Rest, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
    let held = lock_all(rest, spec, usize::MAX).await?;
    let mut purged = 0usize;
    let mut rest_of = held.into_iter();
    let mut keep = Vec::new();
    let mut failure = None;
    for (m, lock_uri) in rest_of.by_ref() {
        if !which.selects(&m.envelope().id) {
            keep.push(lock_uri);
            continue;
        }
        match acker::complete(rest, &lock_uri, "deleting a purged dead letter").await {
            Ok(()) => purged += 1,
            Err(e) => {
                keep.push(lock_uri);
                failure = Some(e);
                break;
            }
        }
    }
    keep.extend(rest_of.map(|(_, l)| l));
    unlock_all(rest, keep).await;
    match failure {
        Some(e) => Err(e.context(format_args!("after purging {purged}"))),
        None => Ok(purged),
    }
}

/// Peek-lock up to `limit` messages of the dead-letter subqueue, oldest first, holding
/// their locks (on an error, the ones held are unlocked).
async fn lock_all(
    rest: &Rest,
    spec: &SubscriptionSpec,
    limit: usize,
) -> Result<Vec<(Received, String)>> {
    let entity = dead_letter_path(&spec.topic, &spec.name);
    let mut seen = HashSet::new();
    let mut held: Vec<(Received, String)> = Vec::new();
    while held.len() < limit {
        match rest.peek_lock(&entity, Duration::ZERO).await {
            Ok(None) => break,
            Ok(Some((m, lock_uri))) => {
                if !seen.insert(m.sequence_number) {
                    // A lock of this walk expired and the message came round again.
                    unlock_all(rest, [lock_uri]).await;
                    break;
                }
                held.push((m, lock_uri));
            }
            Err(e) => {
                unlock_all(rest, held.into_iter().map(|(_, l)| l)).await;
                return Err(e);
            }
        }
    }
    held.sort_by_key(|(m, _)| m.sequence_number);
    Ok(held)
}

/// Unlock the dead letters `locks` hold, so that they can be listed again at once.
async fn unlock_all(rest: &Rest, locks: impl IntoIterator<Item = String>) {
    for lock_uri in locks {
        let unlocked = acker::unlock(rest, &lock_uri, "unlocking a dead letter").await;
        if let Err(e) = unlocked {
            tracing::debug!(error = %e, "unlocking a dead letter failed; its lock will expire");
        }
    }
}

/// A dead letter's envelope and details: ours from the `tidings-dlq-*` properties, or
/// Service Bus's own `DeadLetterReason` for messages it parked by itself.
fn dead_letter_of(m: &Received, spec: &SubscriptionSpec) -> DeadLetter {
    let mut env = m.envelope();
    if env.header(attrs::DLQ_REASON).is_none() {
        let reason = m.property("deadletterreason").unwrap_or("unknown");
        let description = m.property("deadlettererrordescription").unwrap_or("");
        DeadLetterInfo::new(
            format!("dead-lettered by Service Bus: {reason}: {description}"),
            0,
            Arc::from(spec.service.as_str()),
            Arc::from(spec.name.as_str()),
            Arc::from(spec.topic.as_str()),
        )
        .stamp(&mut env);
    }
    DeadLetter::from_envelope(env).expect("the reason header was just set")
}

/// The envelope to replay for the selected dead letter `parked`
/// ([`Replay::envelope_for`]), also without the dead-letter details of Service Bus.
fn for_replay(which: &Replay, parked: Envelope) -> Envelope {
    let mut env = which.envelope_for(parked);
    for h in [
        "deadletterreason",
        "deadlettererrordescription",
        "deadlettersource",
    ] {
        env.remove_header(h);
    }
    env
}
