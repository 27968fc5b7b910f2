//! Settling: a delivery is acknowledged through the [`AckBatcher`] of its channel,
//! redelivered later by publishing a copy to a wait queue (or the work queue), or
//! dead-lettered by publishing a copy to the dead-letter queue; the original is
//! acknowledged once the copy is confirmed.
//!
//! A copy redelivered later carries its due time (`tidings-deliver-at`) and waits in the
//! wait queue of the largest bucket not above its delay (see [`crate::topology`]): it
//! comes back early by less than the bucket, and the core puts it back for the rest, so
//! it is never handled before its delay and late only by the hops' latency.
//!
//! Acknowledgements: a settled delivery is recorded at once and a background task sends
//! `basic.ack` with `multiple = true` for the highest delivery tag below which every
//! delivery is settled, so deliveries handled out of order (concurrency above 1) are
//! never acknowledged early. Under load one ack frame covers many deliveries; when idle,
//! each is acknowledged immediately. A delivery dropped unsettled is requeued with
//! `basic.nack` (requeue), sent before any later multiple ack.
//!
//! A settle that fails is handed back to the core's consumer loop, which tries again with
//! backoff; nothing here loops.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use tidings_core::{
    transport::{attrs, deliver_at, set_deliver_at, Acker},
    DeadLetterInfo, Envelope, Error, ErrorKind, Result,
};
use tokio::sync::Notify;

use crate::publisher::{check_size, outgoing};
use crate::subscriber::SubInfo;
use crate::topology::delay_bucket_ms;
use crate::transport::Shared;

/// Settles one RabbitMQ delivery (see [`Acker`]). Dropped unsettled, the delivery is
/// requeued.
pub struct RabbitMqAcker {
    tag: u64,
    acks: Arc<AckBatcher>,
    shared: Arc<Shared>,
    sub: Arc<SubInfo>,
    settled: bool,
}

impl fmt::Debug for RabbitMqAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqAcker")
            .field("queue", &self.sub.names.work)
            .field("delivery_tag", &self.tag)
            .field("settled", &self.settled)
            .finish()
    }
}

impl RabbitMqAcker {
    /// The acker of delivery `tag`, received on the channel of `acks`.
    pub(crate) fn new(
        tag: u64,
        acks: &Arc<AckBatcher>,
        shared: Arc<Shared>,
        sub: Arc<SubInfo>,
    ) -> Self {
        acks.track();
        RabbitMqAcker {
            tag,
            acks: acks.clone(),
            shared,
            sub,
            settled: false,
        }
    }

    fn channel_gone(&self) -> Error {
        Error::unavailable(format!(
            "the channel of `{}` closed before delivery {} was settled; the broker delivers it again",
            self.sub.names.work, self.tag
        ))
    }

    fn finish(&mut self) {
        self.settled = true;
        self.acks.ack(self.tag);
    }

    /// Publish `envelope` to the queue `queue` through the default exchange (confirmed,
    /// mandatory), then acknowledge this delivery. A copy larger than the transport or the
    /// broker takes is [`MessageTooLarge`](tidings_core::ErrorKind::MessageTooLarge) (the core then dead-letters it
    /// without its payload).
    async fn move_to(&mut self, envelope: Envelope, queue: &str) -> Result<()> {
        check_size(&envelope, self.shared.config.max_message_size)?;
        if !self.acks.is_open() {
            return Err(self.channel_gone());
        }
        let message = outgoing(envelope, "", queue, true)?;
        let deadline = self.shared.deadline();
        self.shared
            .publisher
            .send(&self.shared, vec![message], deadline)
            .await?;
        if !self.acks.is_open() {
            // The copy is out but the original will come back too: at least once.
            return Err(self.channel_gone());
        }
        self.finish();
        Ok(())
    }

    /// Like [`move_to`](Self::move_to), for an envelope put back until it is due: the
    /// copy is sent now and this delivery acknowledged once the broker confirms it, in the
    /// background, so that a subscription putting back many scheduled envelopes has many
    /// confirms in flight instead of one at a time. Until then the delivery stays
    /// unacknowledged; if the copy is not confirmed, the delivery is requeued after
    /// [`PUT_BACK_PAUSE`] and the core puts it back again (at least once, as ever).
    fn move_in_background(
        mut self,
        envelope: Envelope,
        queue: String,
    ) -> Result<(), (Error, Self)> {
        if let Err(e) = check_size(&envelope, self.shared.config.max_message_size) {
            return Err((e, self));
        }
        if !self.acks.is_open() {
            return Err((self.channel_gone(), self));
        }
        let message = match outgoing(envelope, "", &queue, true) {
            Ok(message) => message,
            Err(e) => return Err((e, self)),
        };
        tokio::spawn(async move {
            let shared = self.shared.clone();
            let deadline = shared.deadline();
            match shared
                .publisher
                .send(&shared, vec![message], deadline)
                .await
            {
                // A channel gone by now requeues the original with it: at least once.
                Ok(()) if self.acks.is_open() => self.finish(),
                Ok(()) => {}
                Err(e) => {
                    if e.kind() == ErrorKind::NotFound {
                        shared.forget_delay_queue(&queue);
                    }
                    tracing::warn!(
                        error = %e, queue = %queue, work_queue = %self.sub.names.work,
                        "an envelope put back until it is due was not taken by its wait queue; requeued to be put back again"
                    );
                    tokio::time::sleep(PUT_BACK_PAUSE).await;
                    // Dropped unsettled: requeued.
                }
            }
        });
        Ok(())
    }
}

/// How long a delivery whose put-back copy was not confirmed stays unacknowledged before
/// it is requeued, so a broker that keeps refusing the copy is not asked in a tight loop.
const PUT_BACK_PAUSE: Duration = Duration::from_secs(1);

impl Drop for RabbitMqAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.acks.requeue(self.tag);
        }
    }
}

impl Acker for RabbitMqAcker {
    async fn ack(mut self) -> Result<(), (Error, Self)> {
        // Only the batcher's own flag: asking lapin for the channel state on every
        // delivery contends with its IO thread. An ack recorded just as the channel dies
        // is lost with it, and the broker delivers the envelope again.
        if self.acks.has_failed() {
            return Err((self.channel_gone(), self));
        }
        self.finish();
        Ok(())
    }

    async fn retry(
        mut self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        let mut copy = (*envelope).clone();
        copy.set_header(attrs::ATTEMPT, next_attempt.to_string());
        let result = if delay.is_zero() {
            let queue = self.sub.names.work.clone();
            self.move_to(copy, &queue).await
        } else {
            let put_back = stamp_due(&mut copy, SystemTime::now(), delay);
            let bucket = delay_bucket_ms(delay);
            let queue = self.sub.names.wait_bucket(bucket);
            let deadline = self.shared.deadline();
            let declared = self
                .shared
                .ensure_delay_queue(&self.sub.names, &queue, bucket, deadline)
                .await;
            match declared {
                Ok(()) if put_back => {
                    return match self.move_in_background(copy, queue) {
                        Ok(()) => Ok(()),
                        Err((e, acker)) => Err((
                            e.context(format_args!("putting back {} until it is due", envelope.id)),
                            acker,
                        )),
                    };
                }
                Ok(()) => {
                    let moved = self.move_to(copy, &queue).await;
                    if matches!(&moved, Err(e) if e.kind() == ErrorKind::NotFound) {
                        self.shared.forget_delay_queue(&queue);
                    }
                    moved
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err((
                e.context(format_args!("scheduling the redelivery of {}", envelope.id)),
                self,
            )),
        }
    }

    async fn dead_letter(
        mut self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        let copy = info.stamped(&envelope);
        let queue = self.sub.names.dead_letter.clone();
        match self.move_to(copy, &queue).await {
            Ok(()) => Ok(()),
            Err(e) => Err((
                e.context(format_args!("dead-lettering {}", envelope.id)),
                self,
            )),
        }
    }
}

/// The precision of `tidings-deliver-at`: it keeps milliseconds.
const HEADER_PRECISION: Duration = Duration::from_millis(1);

/// Mark `copy`, redelivered `delay` after `now`, due no earlier than then (rounded up to
/// the millisecond the header keeps), unless it carries that time already or a later one
/// (a scheduled event). The core puts back a copy that comes back before its time. A time
/// that cannot be read is left for the core, which dead-letters it.
///
/// When the core puts back an early copy, `delay` is what is left until the time the copy
/// carries, measured a moment before `now`: that time, within the header's precision, is
/// kept as it is, so the hops of a long delay do not add up rounding and handling time.
/// Returns whether the copy kept the time it carried: it is being put back until due
/// (a handler only runs for an envelope that is due, so a retry after a failure always
/// gets a new time).
fn stamp_due(copy: &mut Envelope, now: SystemTime, delay: Duration) -> bool {
    let due = now + delay;
    match deliver_at(copy) {
        Ok(Some(at)) if at + HEADER_PRECISION > due => return true,
        Err(_) => return false,
        _ => {}
    }
    set_deliver_at(copy, due);
    false
}

/// How long settled deliveries may wait for more before their acknowledgement is sent,
/// when fewer than a batch are waiting.
const ACK_LINGER: Duration = Duration::from_millis(2);

/// Acknowledgements of one channel, sent in batches by a background task.
pub(crate) struct AckBatcher {
    channel: Channel,
    /// Send at once when this many settled deliveries wait (a quarter of the prefetch, so
    /// the broker never runs dry); fewer wait up to [`ACK_LINGER`].
    batch: u64,
    state: Mutex<AckState>,
    wake: Notify,
}

struct AckState {
    /// The lowest delivery tag not yet settled.
    low: u64,
    /// Settled tags above `low`.
    settled: BTreeSet<u64>,
    /// Every tag up to this one is acknowledged or requeued on the broker.
    sent: u64,
    /// Tags to requeue (sent before the next multiple ack).
    requeue: Vec<u64>,
    /// Requeued tags not yet passed by a multiple ack: a multiple ack must name a tag
    /// that is still unacknowledged, so it never names one of these.
    nacked: BTreeSet<u64>,
    /// The sending task was woken for the settled deliveries not yet sent.
    armed: bool,
    /// Ackers handed out and not yet settled or dropped.
    outstanding: usize,
    /// The subscriber let go of the channel: close it once nothing is outstanding.
    retired: bool,
    /// The retired subscriber's consumer, until the task cancels it.
    to_cancel: Option<Consumer>,
    /// The cancelled consumer, kept until the channel is closed: dropping it
    /// earlier makes lapin cancel it from another task, and a `basic.cancel` that reaches
    /// the broker after the channel's close is a connection error that fails everything
    /// else on the connection.
    cancelled: Option<Consumer>,
    /// The channel failed or was closed.
    closed: bool,
}

impl AckState {
    fn new() -> Self {
        AckState {
            low: 1,
            settled: BTreeSet::new(),
            sent: 0,
            requeue: Vec::new(),
            nacked: BTreeSet::new(),
            armed: false,
            outstanding: 0,
            retired: false,
            to_cancel: None,
            cancelled: None,
            closed: false,
        }
    }

    fn settle(&mut self, tag: u64) {
        if tag == self.low {
            self.low += 1;
            while self.settled.remove(&self.low) {
                self.low += 1;
            }
        } else if tag > self.low {
            self.settled.insert(tag);
        }
    }

    /// Settled deliveries whose acknowledgement is not sent yet.
    fn waiting(&self) -> u64 {
        (self.low - 1).saturating_sub(self.sent)
    }

    fn done(&self) -> bool {
        self.retired && self.outstanding == 0 && self.requeue.is_empty()
    }
}

impl AckBatcher {
    pub(crate) fn start(channel: Channel, prefetch: u16) -> Arc<Self> {
        let batcher = Arc::new(AckBatcher {
            channel,
            batch: (u64::from(prefetch) / 4).clamp(1, 256),
            state: Mutex::new(AckState::new()),
            wake: Notify::new(),
        });
        tokio::spawn(batcher.clone().run());
        batcher
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().expect("ack lock")
    }

    fn is_open(&self) -> bool {
        !self.has_failed() && self.channel.status().connected()
    }

    /// Whether sending on the channel failed or it was closed (cheap: no lapin lock).
    pub(crate) fn has_failed(&self) -> bool {
        self.lock().closed
    }

    fn track(&self) {
        self.lock().outstanding += 1;
    }

    fn ack(&self, tag: u64) {
        let wake = {
            let mut state = self.lock();
            state.outstanding -= 1;
            state.settle(tag);
            if !state.armed {
                state.armed = true;
                true
            } else {
                state.waiting() >= self.batch || state.done()
            }
        };
        if wake {
            self.wake.notify_one();
        }
    }

    fn requeue(&self, tag: u64) {
        {
            let mut state = self.lock();
            state.outstanding -= 1;
            state.requeue.push(tag);
            state.armed = true;
        }
        self.wake.notify_one();
    }

    /// The subscriber let go of the channel and its `consumer`: the task cancels the
    /// consumer, sends what is settled and closes the channel once nothing is outstanding.
    pub(crate) fn retire(&self, consumer: Consumer) {
        {
            let mut state = self.lock();
            state.retired = true;
            state.to_cancel = Some(consumer);
            state.armed = true;
        }
        self.wake.notify_one();
    }

    /// Whether to send now rather than linger for more.
    fn ready(&self) -> bool {
        let state = self.lock();
        !state.requeue.is_empty() || state.retired || state.waiting() >= self.batch
    }

    /// Cancel a retired consumer, send the requeues, then one multiple ack for what is
    /// settled.
    async fn flush(&self) -> lapin::Result<()> {
        let to_cancel = self.lock().to_cancel.take();
        if let Some(consumer) = to_cancel {
            // The broker ignores a cancel of a consumer it already cancelled.
            let cancelled = self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await;
            self.lock().cancelled = Some(consumer);
            cancelled?;
        }
        let requeue = std::mem::take(&mut self.lock().requeue);
        for tag in requeue {
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            self.channel.basic_nack(tag, options).await?;
            let mut state = self.lock();
            state.nacked.insert(tag);
            state.settle(tag);
        }
        let (upto, floor, sent) = {
            let mut state = self.lock();
            let floor = state.low - 1;
            let mut upto = floor;
            while upto > state.sent && state.nacked.contains(&upto) {
                upto -= 1;
            }
            state.nacked.retain(|t| *t > floor);
            (upto, floor, state.sent)
        };
        if upto > sent {
            let options = BasicAckOptions { multiple: true };
            self.channel.basic_ack(upto, options).await?;
        }
        let mut state = self.lock();
        state.sent = state.sent.max(floor);
        Ok(())
    }

    /// Send what was settled, in batches, until the channel closes or is retired with
    /// nothing outstanding.
    async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let until = tokio::time::Instant::now() + ACK_LINGER;
                while !self.ready() {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
                if let Err(e) = self.flush().await {
                    return self.fail(e);
                }
                let (done, again) = {
                    let mut state = self.lock();
                    let again = state.waiting() > 0 || !state.requeue.is_empty();
                    if !again {
                        state.armed = false;
                    }
                    (state.done(), again)
                };
                if done && !again {
                    self.lock().closed = true;
                    // Closing requeues what the broker sent ahead and nobody took.
                    let _ = self.channel.close(200, "subscriber stopped".into()).await;
                    return;
                }
                if !again {
                    break;
                }
            }
        }
    }

    fn fail(&self, e: lapin::Error) {
        self.lock().closed = true;
        tracing::debug!(error = %e, "channel closed while acknowledging; the broker redelivers what was not acknowledged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;
    use tidings_core::transport::DELIVER_AT;

    fn envelope() -> Envelope {
        Envelope::new("t.e", 1, "s", "application/json", &b"{}"[..])
    }

    #[test]
    fn a_redelivered_copy_is_due_no_earlier_than_its_delay() {
        let mut copy = envelope();
        let now = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert!(!stamp_due(&mut copy, now, Duration::from_millis(1500)));
        assert_eq!(
            copy.header(DELIVER_AT),
            Some("2023-11-14T22:13:21.624Z"),
            "rounded up to the millisecond"
        );
        assert!(deliver_at(&copy).unwrap().unwrap() >= now + Duration::from_millis(1500));
    }

    #[test]
    fn a_later_time_already_carried_is_kept_and_an_earlier_one_moved() {
        let now = SystemTime::now();
        let later = humantime::format_rfc3339_millis(now + Duration::from_secs(60)).to_string();
        let mut copy = envelope();
        copy.set_header(DELIVER_AT, later.clone());
        assert!(stamp_due(&mut copy, now, Duration::from_secs(5)));
        assert_eq!(copy.header(DELIVER_AT), Some(later.as_str()));

        let earlier = humantime::format_rfc3339_millis(now - Duration::from_secs(60)).to_string();
        copy.set_header(DELIVER_AT, earlier);
        assert!(!stamp_due(&mut copy, now, Duration::from_secs(5)));
        let at = deliver_at(&copy).unwrap().unwrap();
        assert!(at >= now + Duration::from_secs(5) && at < now + Duration::from_secs(6));

        // What the core puts back: the rest until the time the copy carries, measured a
        // moment before; the time is kept as it is.
        let carried = humantime::format_rfc3339_millis(now + Duration::from_secs(3)).to_string();
        copy.set_header(DELIVER_AT, carried.clone());
        let at = deliver_at(&copy).unwrap().unwrap();
        let rest = at.duration_since(now).unwrap();
        assert!(stamp_due(&mut copy, now + Duration::from_micros(200), rest));
        assert_eq!(copy.header(DELIVER_AT), Some(carried.as_str()));

        copy.set_header(DELIVER_AT, "tomorrow");
        assert!(!stamp_due(&mut copy, now, Duration::from_secs(5)));
        assert_eq!(
            copy.header(DELIVER_AT),
            Some("tomorrow"),
            "left for the core"
        );
    }

    #[test]
    fn ack_state_advances_only_over_contiguous_settled_tags() {
        let mut s = AckState::new();
        s.settle(2);
        s.settle(4);
        assert_eq!(s.low, 1);
        s.settle(1);
        assert_eq!(s.low, 3);
        s.settle(3);
        assert_eq!(s.low, 5);
        assert!(s.settled.is_empty());
    }
}
