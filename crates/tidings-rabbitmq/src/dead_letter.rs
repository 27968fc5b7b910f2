//! Dead letters: listing the dead-letter queue of a subscription without removing
//! anything, moving selected dead letters back to its work queue (as parked, or edited:
//! `Replay::envelope_for`), and purging selected ones (acknowledged on a channel of their
//! own; the others go back when it closes).

use std::sync::Arc;

use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::Channel;
use tidings_core::{
    transport::{attrs, Delivery, SubscriptionSpec},
    DeadLetter, Replay, Result,
};

use crate::error::from_lapin;
use crate::publisher::outgoing;
use crate::subscriber::SubInfo;
use crate::topology::ready_count;
use crate::transport::Shared;
use crate::wire::{broker_text, wire_message};

/// Take up to `limit` messages from the head of `queue` on a channel of their own; closing
/// the channel afterwards puts back every one that was not acknowledged, in order.
async fn peek(channel: &Channel, queue: &str, limit: usize) -> Result<Vec<AmqpDelivery>> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| from_lapin(e, format_args!("reading the dead-letter queue `{queue}`")))?;
        match got {
            Some(message) => out.push(message.delivery),
            None => break,
        }
    }
    Ok(out)
}

/// The envelope of a dead letter and its details; messages that are not valid envelopes,
/// and messages dead-lettered by the broker itself, get details made up from what they
/// carry.
fn dead_letter_of(delivery: &AmqpDelivery, sub: &SubInfo) -> DeadLetter {
    let message = wire_message(&delivery.properties, delivery.data.clone(), false);
    let read = Delivery::from_wire(message, ());
    let mut envelope = Arc::unwrap_or_clone(read.envelope);
    if envelope.header(attrs::DLQ_REASON).is_none() || read.undecodable.is_some() {
        let reason = read.undecodable.unwrap_or_else(|| {
            let broker_reason = broker_text(&delivery.properties, "x-first-death-reason")
                .unwrap_or_else(|| "unknown".into());
            format!("dead-lettered by RabbitMQ ({broker_reason})")
        });
        sub.info(reason, 0).stamp(&mut envelope);
    }
    DeadLetter::from_envelope(envelope).expect("the dead-letter details were just stamped")
}

pub(crate) async fn dead_letters(
    shared: &Shared,
    spec: &SubscriptionSpec,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sub = SubInfo::new(spec);
    let (channel, _) = shared.channel(shared.deadline()).await?;
    let taken = peek(&channel, &sub.names.dead_letter, limit).await;
    let _ = channel.close(200, "listed".into()).await;
    Ok(taken?.iter().map(|d| dead_letter_of(d, &sub)).collect())
}

pub(crate) async fn replay_dead_letters(
    shared: &Shared,
    spec: &SubscriptionSpec,
    which: &Replay,
) -> Result<usize> {
    let sub = SubInfo::new(spec);
    take_selected(shared, &sub, which, "replayed", |parked| async {
        let message = outgoing(which.envelope_for(parked), "", &sub.names.work, true)?;
        shared
            .publisher
            .send(shared, vec![message], shared.deadline())
            .await
    })
    .await
}

/// Take the dead letters `which` selects out of the subscription's dead-letter queue, each
/// once `act` succeeded with it, and return how many. Only what the queue holds now is
/// looked at, so that a letter dead-lettered meanwhile is neither taken twice nor taken
/// unselected; what is not taken goes back when the channel closes.
async fn take_selected<F, Fut>(
    shared: &Shared,
    sub: &SubInfo,
    which: &Replay,
    done: &'static str,
    mut act: F,
) -> Result<usize>
where
    F: FnMut(tidings_core::Envelope) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (channel, _) = shared.channel(shared.deadline()).await?;
    let queue = &sub.names.dead_letter;
    let result = async {
        let count = ready_count(&channel, queue, "dead-letter queue").await? as usize;
        let mut taken = 0;
        for delivery in peek(&channel, queue, count).await? {
            let letter = dead_letter_of(&delivery, sub);
            if !which.selects(&letter.envelope.id) {
                continue;
            }
            act(letter.envelope).await?;
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: false })
                .await
                .map_err(|e| from_lapin(e, format_args!("removing a {done} dead letter")))?;
            taken += 1;
        }
        Ok(taken)
    }
    .await;
    let _ = channel.close(200, done.into()).await;
    result
}

pub(crate) async fn purge_dead_letters(
    shared: &Shared,
    spec: &SubscriptionSpec,
    which: &Replay,
) -> Result<usize> {
    let sub = SubInfo::new(spec);
    take_selected(shared, &sub, which, "purged", |_| async { Ok(()) }).await
}
