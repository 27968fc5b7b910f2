//! Consuming: one channel and consumer per subscription with `basic.qos` prefetch,
//! manual acknowledgements sent in batches, retries through the delay queues, dead
//! letters to the dead-letter queue, and the listing and replay of dead letters.
//!
//! Acknowledgements: a settled delivery is recorded at once and a background task sends
//! `basic.ack` with `multiple = true` for the highest delivery tag below which every
//! delivery is settled, so deliveries handled out of order (concurrency above 1) are
//! never acknowledged early. Under load one ack frame covers many deliveries; when idle,
//! each is acknowledged immediately. A delivery dropped unsettled is requeued with
//! `basic.nack` (requeue), sent before any later multiple ack.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};
use tidings_core::{
    attrs, Acker, DeadLetter, DeadLetterInfo, Delivery, Envelope, Error, ErrorKind, Replay, Result,
    Subscriber, SubscriptionSpec,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::from_lapin;
use crate::publisher::outgoing;
use crate::topology::QueueNames;
use crate::transport::Shared;

/// Prefix of the headers that keep the original headers of a message that was not a
/// valid envelope (a poison message), in its dead-letter copy.
pub const ORIGINAL_HEADER_PREFIX: &str = "tidings-original-";

/// One subscription and the names that go with it.
pub(crate) struct SubInfo {
    pub(crate) names: QueueNames,
    service: Arc<str>,
    subscription: Arc<str>,
    topic: Arc<str>,
}

impl SubInfo {
    fn new(spec: &SubscriptionSpec) -> Self {
        SubInfo {
            names: QueueNames::of(spec),
            service: Arc::from(spec.service.as_str()),
            subscription: Arc::from(spec.name.as_str()),
            topic: Arc::from(spec.topic.as_str()),
        }
    }

    fn info(&self, reason: impl Into<String>, attempts: u32) -> DeadLetterInfo {
        DeadLetterInfo::new(
            reason,
            attempts,
            self.service.clone(),
            self.subscription.clone(),
            self.topic.clone(),
        )
    }
}

/// The deliveries of one subscription on RabbitMQ (see [`Subscriber`]).
pub struct RabbitMqSubscriber {
    shared: Arc<Shared>,
    sub: Arc<SubInfo>,
    prefetch: u16,
    active: Option<Active>,
}

struct Active {
    consumer: Consumer,
    acks: Arc<AckBatcher>,
}

impl fmt::Debug for RabbitMqSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSubscriber")
            .field("queue", &self.sub.names.work)
            .field("prefetch", &self.prefetch)
            .field("consuming", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl RabbitMqSubscriber {
    pub(crate) async fn start(shared: Arc<Shared>, spec: &SubscriptionSpec) -> Result<Self> {
        let prefetch = shared.config.prefetch.unwrap_or(spec.prefetch).max(1);
        let mut subscriber = RabbitMqSubscriber {
            shared,
            sub: Arc::new(SubInfo::new(spec)),
            prefetch,
            active: None,
        };
        // Consume now, so that a missing queue is reported by `build()`.
        subscriber.active = Some(subscriber.open().await?);
        Ok(subscriber)
    }

    /// Open a channel with the prefetch and start consuming the work queue.
    async fn open(&self) -> Result<Active> {
        match self.consume().await {
            // The queue is gone (deleted by hand): declare the topology again, once.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(
                    queue = %self.sub.names.work,
                    "the queue does not exist; declaring the topology again"
                );
                self.shared.redeclare(self.shared.deadline()).await?;
                self.consume().await
            }
            other => other,
        }
    }

    async fn consume(&self) -> Result<Active> {
        let deadline = Instant::now()
            + self
                .shared
                .config
                .publish_timeout
                .min(Duration::from_secs(5));
        let (channel, _) = self.shared.channel(deadline).await?;
        let queue = &self.sub.names.work;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| from_lapin(e, format_args!("setting the prefetch of `{queue}`")))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| from_lapin(e, format_args!("consuming the queue `{queue}`")))?;
        let acks = AckBatcher::start(channel, self.prefetch);
        Ok(Active { consumer, acks })
    }

    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            active.acks.retire();
        }
    }

    fn acker(&self, tag: u64, acks: &Arc<AckBatcher>) -> RabbitMqAcker {
        acks.track();
        RabbitMqAcker {
            tag,
            acks: acks.clone(),
            shared: self.shared.clone(),
            sub: self.sub.clone(),
            settled: false,
        }
    }
}

impl Drop for RabbitMqSubscriber {
    fn drop(&mut self) {
        self.retire();
    }
}

impl Subscriber for RabbitMqSubscriber {
    type Acker = RabbitMqAcker;

    async fn next(&mut self) -> Option<Result<Delivery<RabbitMqAcker>>> {
        loop {
            if self.active.is_none() {
                match self.open().await {
                    Ok(active) => self.active = Some(active),
                    Err(e) => return Some(Err(e)),
                }
            }
            let active = self.active.as_mut().expect("active");
            let received = active.consumer.next().await;
            match received {
                Some(Ok(delivery)) => {
                    let acks = active.acks.clone();
                    if acks.has_failed() {
                        // The channel is gone: the broker delivers this again.
                        continue;
                    }
                    let acker = self.acker(delivery.delivery_tag, &acks);
                    match decode(delivery) {
                        (Parsed::Envelope(envelope, attempt), redelivered) => {
                            return Some(Ok(Delivery::new(
                                Arc::new(envelope),
                                attempt,
                                redelivered,
                                acker,
                            )));
                        }
                        (Parsed::Poison(placeholder, reason), _) => {
                            tracing::warn!(
                                queue = %self.sub.names.work, id = %placeholder.id, %reason,
                                "received a message that is not a valid envelope; dead-lettering it"
                            );
                            let info = self.sub.info(reason, 0);
                            if let Err((e, acker)) =
                                acker.dead_letter(Arc::new(placeholder), info).await
                            {
                                drop(acker); // requeued
                                return Some(Err(e.context(
                                    "dead-lettering a message that is not a valid envelope",
                                )));
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    self.retire();
                    return Some(Err(from_lapin(
                        e,
                        format_args!(
                            "receiving from `{}` (the consumer reconnects)",
                            self.sub.names.work
                        ),
                    )));
                }
                None => {
                    self.retire();
                    return Some(Err(Error::unavailable(format!(
                        "the broker cancelled the consumer of `{}` (queue deleted or node restarting); consuming again",
                        self.sub.names.work
                    ))));
                }
            }
        }
    }
}

/// A header value as text, for the envelope; `None` for tables and arrays. Borrowed
/// for the strings tidings writes, so receiving copies no header.
fn value_text(value: &AMQPValue) -> Option<Cow<'_, str>> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()),
        AMQPValue::ShortString(s) => Cow::Borrowed(s.as_str()),
        AMQPValue::Boolean(b) => Cow::Owned(b.to_string()),
        AMQPValue::ShortShortInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortShortUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongLongInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::Timestamp(n) => Cow::Owned(n.to_string()),
        AMQPValue::Float(n) => Cow::Owned(n.to_string()),
        AMQPValue::Double(n) => Cow::Owned(n.to_string()),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => return None,
    })
}

fn value_u32(value: &AMQPValue) -> Option<u32> {
    value_text(value)?.parse().ok()
}

/// Headers RabbitMQ adds when it dead-letters a message (to and from the delay queues).
fn is_broker_header(name: &str) -> bool {
    name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
        || name == "x-delivery-count"
}

/// The string headers of a message, broker headers left out.
fn text_headers(properties: &BasicProperties) -> Vec<(&str, Cow<'_, str>)> {
    let Some(headers) = properties.headers() else {
        return Vec::new();
    };
    headers
        .inner()
        .iter()
        .filter(|(name, _)| !is_broker_header(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), value_text(value)?)))
        .collect()
}

/// What a received message turned out to be.
enum Parsed {
    /// A valid envelope and its delivery attempt.
    Envelope(Envelope, u32),
    /// Not a valid envelope: the placeholder that carries it, and why.
    Poison(Envelope, String),
}

/// The envelope of a message, with its attempt, or the placeholder that stands for it in
/// the dead-letter queue and the reason, if it is not a valid envelope.
fn parse(properties: &BasicProperties, routing_key: &str, body: Vec<u8>) -> Parsed {
    let mut headers = text_headers(properties);
    let mut attempt = 1u32;
    if let Some(at) = headers.iter().position(|(n, _)| *n == attrs::ATTEMPT) {
        let (_, value) = headers.remove(at);
        attempt = value.parse().unwrap_or(1).max(1);
    }
    // Quorum queues count redeliveries (after a crash or a requeue).
    if let Some(count) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(value_u32)
    {
        attempt = attempt.saturating_add(count);
    }
    if !headers.iter().any(|(n, _)| *n == attrs::CONTENT_TYPE) {
        if let Some(ct) = properties.content_type() {
            headers.push((attrs::CONTENT_TYPE, Cow::Borrowed(ct.as_str())));
        }
    }
    let body = Bytes::from(body);
    match Envelope::from_attributes(headers.iter().map(|(n, v)| (*n, v.as_ref())), body.clone()) {
        Ok(envelope) => Parsed::Envelope(envelope, attempt),
        Err(e) => {
            let reason = format!("undecodable: not a valid tidings envelope: {}", e.message());
            Parsed::Poison(placeholder(properties, routing_key, headers, body), reason)
        }
    }
}

/// An envelope carrying a message that is not one: the raw body, its routing key as the
/// type, its message id as the id when it is a UUID, and its original headers renamed
/// with [`ORIGINAL_HEADER_PREFIX`].
fn placeholder(
    properties: &BasicProperties,
    routing_key: &str,
    headers: Vec<(&str, Cow<'_, str>)>,
    body: Bytes,
) -> Envelope {
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_else(|| "application/octet-stream".into());
    let kind = if routing_key.is_empty() {
        "unknown"
    } else {
        routing_key
    };
    let mut envelope = Envelope::new(kind.to_string(), 1, "unknown", content_type, body);
    if let Some(id) = properties
        .message_id()
        .as_ref()
        .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok())
    {
        envelope.id = id;
    }
    for (name, value) in headers {
        // Keep the renamed header within AMQP's 255 bytes, so the dead letter can be sent.
        let mut keep = name.len().min(255 - ORIGINAL_HEADER_PREFIX.len());
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
        envelope.headers.push((
            format!("{ORIGINAL_HEADER_PREFIX}{}", &name[..keep]),
            value.into_owned(),
        ));
    }
    envelope
}

fn decode(delivery: AmqpDelivery) -> (Parsed, bool) {
    let AmqpDelivery {
        routing_key,
        redelivered,
        properties,
        data,
        ..
    } = delivery;
    (parse(&properties, routing_key.as_str(), data), redelivered)
}

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
    /// mandatory), then acknowledge this delivery.
    async fn move_to(
        &mut self,
        envelope: Envelope,
        queue: &str,
        expiration: Option<Duration>,
    ) -> Result<()> {
        if !self.acks.is_open() {
            return Err(self.channel_gone());
        }
        let mut message = outgoing(envelope, "", queue, true)?;
        message.expiration = expiration.map(|delay| delay.as_millis().max(1).to_string().into());
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
}

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
            self.move_to(copy, &queue, None).await
        } else {
            let queue = self.sub.names.delay(delay);
            let deadline = self.shared.deadline();
            match self
                .shared
                .ensure_delay_queue(&self.sub.names, &queue, deadline)
                .await
            {
                Ok(()) => self.move_to(copy, &queue, Some(delay)).await,
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
        let mut copy = (*envelope).clone();
        copy.remove_header(attrs::ATTEMPT);
        info.stamp(&mut copy);
        let queue = self.sub.names.dead_letter.clone();
        match self.move_to(copy, &queue, None).await {
            Ok(()) => Ok(()),
            Err(e) => Err((
                e.context(format_args!("dead-lettering {}", envelope.id)),
                self,
            )),
        }
    }
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
    fn start(channel: Channel, prefetch: u16) -> Arc<Self> {
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
    fn has_failed(&self) -> bool {
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

    fn retire(&self) {
        {
            let mut state = self.lock();
            state.retired = true;
            state.armed = true;
        }
        self.wake.notify_one();
    }

    /// Whether to send now rather than linger for more.
    fn ready(&self) -> bool {
        let state = self.lock();
        !state.requeue.is_empty() || state.retired || state.waiting() >= self.batch
    }

    /// Send the requeues, then one multiple ack for what is settled.
    async fn flush(&self) -> lapin::Result<()> {
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
    let (mut envelope, reason) = match parse(
        &delivery.properties,
        delivery.routing_key.as_str(),
        delivery.data.clone(),
    ) {
        Parsed::Envelope(envelope, _) => (envelope, None),
        Parsed::Poison(placeholder, reason) => (placeholder, Some(reason)),
    };
    if envelope.header(attrs::DLQ_REASON).is_none() || reason.is_some() {
        let reason = reason.unwrap_or_else(|| {
            let broker_reason = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-first-death-reason"))
                .and_then(value_text)
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
    let (channel, _) = shared.channel(shared.deadline()).await?;
    let queue = &sub.names.dead_letter;
    let result = async {
        // Only what is there now, so that a letter dead-lettered again meanwhile is not
        // taken twice.
        let count = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                from_lapin(
                    e,
                    format_args!("looking up the dead-letter queue `{queue}`"),
                )
            })?
            .message_count() as usize;
        let mut moved = 0;
        for delivery in peek(&channel, queue, count).await? {
            let letter = dead_letter_of(&delivery, &sub);
            if !which.selects(&letter.envelope.id) {
                continue; // put back when the channel closes
            }
            let mut envelope = letter.envelope;
            DeadLetterInfo::clear(&mut envelope);
            let message = outgoing(envelope, "", &sub.names.work, true)?;
            shared
                .publisher
                .send(shared, vec![message], shared.deadline())
                .await?;
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: false })
                .await
                .map_err(|e| from_lapin(e, "removing a replayed dead letter"))?;
            moved += 1;
        }
        Ok(moved)
    }
    .await;
    let _ = channel.close(200, "replayed".into()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};

    impl Parsed {
        fn unwrap(self) -> (Envelope, u32) {
            match self {
                Parsed::Envelope(e, attempt) => (e, attempt),
                Parsed::Poison(_, reason) => panic!("not an envelope: {reason}"),
            }
        }

        fn unwrap_err(self) -> (Envelope, String) {
            match self {
                Parsed::Poison(e, reason) => (e, reason),
                Parsed::Envelope(e, _) => panic!("parsed as an envelope: {e:?}"),
            }
        }
    }

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (n, v) in headers {
            table.insert(ShortString::from(*n), v.clone());
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(table)
    }

    #[test]
    fn envelope_round_trips_through_amqp_properties() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            2,
            "lending",
            "application/json",
            &b"{}"[..],
        );
        env.correlation_id = Some(uuid::Uuid::new_v4());
        env.set_header("tenant", "north");
        let properties = crate::publisher::properties(&env).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.message_id().as_ref().unwrap().as_str(),
            env.id.to_string()
        );
        let (back, attempt) =
            parse(&properties, "lending.book-borrowed", env.payload.to_vec()).unwrap();
        assert_eq!(attempt, 1);
        assert_eq!(back.id, env.id);
        assert_eq!(back.event_type, env.event_type);
        assert_eq!(back.correlation_id, env.correlation_id);
        assert_eq!(back.header("tenant"), Some("north"));
        assert_eq!(back.version, 2);
    }

    #[test]
    fn attempt_comes_from_the_header_plus_the_quorum_delivery_count() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let mut headers: Vec<(&str, AMQPValue)> = env
            .attributes()
            .into_iter()
            .map(|(n, v)| {
                (
                    Box::leak(n.into_owned().into_boxed_str()) as &str,
                    AMQPValue::LongString(LongString::from(v)),
                )
            })
            .collect();
        headers.push((attrs::ATTEMPT, AMQPValue::LongString("3".into())));
        headers.push(("x-delivery-count", AMQPValue::LongLongInt(2)));
        headers.push((
            "x-first-death-queue",
            AMQPValue::LongString("q.delay.8ms".into()),
        ));
        let (back, attempt) = parse(&props(&headers), "t", Vec::new()).unwrap();
        assert_eq!(attempt, 5);
        assert!(back.header(attrs::ATTEMPT).is_none());
        assert!(
            back.headers.iter().all(|(n, _)| !n.starts_with("x-")),
            "{:?}",
            back.headers
        );
    }

    #[test]
    fn a_foreign_message_becomes_a_placeholder_keeping_everything() {
        let headers = [
            ("ce_id", AMQPValue::LongString("not-a-uuid".into())),
            ("ce_type", AMQPValue::LongString("x".into())),
            ("custom", AMQPValue::LongString("kept".into())),
        ];
        let (placeholder, reason) =
            parse(&props(&headers), "lending.book-borrowed", b"raw".to_vec()).unwrap_err();
        assert!(reason.contains("ce_id"), "{reason}");
        assert_eq!(placeholder.payload.as_ref(), b"raw");
        assert_eq!(placeholder.event_type, "lending.book-borrowed");
        assert_eq!(
            placeholder.header("tidings-original-ce_id"),
            Some("not-a-uuid")
        );
        assert_eq!(placeholder.header("tidings-original-custom"), Some("kept"));
        // The placeholder itself survives a trip through the dead-letter queue.
        let properties = crate::publisher::properties(&placeholder).unwrap();
        let (again, _) = parse(
            &properties,
            "catalog.lending.dlq",
            placeholder.payload.to_vec(),
        )
        .unwrap();
        assert_eq!(again.id, placeholder.id);
    }

    #[test]
    fn a_placeholder_keeps_renamed_headers_within_amqp_limits() {
        let long = "é".repeat(125); // 250 bytes
        let headers = [(long.as_str(), AMQPValue::LongString("v".into()))];
        let (placeholder, _) = parse(&props(&headers), "k", Vec::new()).unwrap_err();
        let (name, value) = &placeholder.headers[0];
        assert!(
            name.len() <= 255 && name.starts_with(ORIGINAL_HEADER_PREFIX),
            "{name}"
        );
        assert_eq!(value, "v");
        crate::publisher::properties(&placeholder).expect("the dead letter can be sent");
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
