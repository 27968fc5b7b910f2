//! Publishing: envelopes become persistent AMQP messages (CloudEvents binary mode: the
//! attributes in headers, the payload as the body), sent on one confirm-mode channel with
//! many confirms in flight; a publish resolves once the broker confirmed every message.
//!
//! Messages whose confirm was lost with a dropped channel or connection are sent again
//! on a new one until the publish deadline; a negative confirm is a
//! [`ErrorKind::Rejected`] error, an unroutable `mandatory` message (a dead-letter,
//! wait or replay queue that does not exist) a [`ErrorKind::NotFound`] error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tidings_core::{Envelope, Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{from_lapin, is_transient};
use crate::transport::Shared;

/// One message to send. Its AMQP properties are built when it is sent (again for each
/// resend), so the common case builds them once and never clones them.
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    /// Return the message if no queue takes it (used for queue-addressed messages).
    pub(crate) mandatory: bool,
    pub(crate) envelope: Envelope,
}

impl Outgoing {
    fn properties(&self) -> BasicProperties {
        build_properties(&self.envelope)
    }
}

fn short(what: &str, value: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| too_long(what, value))
}

fn too_long(what: &str, value: &str) -> Error {
    Error::new(
        ErrorKind::Encode,
        format!("the {what} `{value}` is longer than AMQP's limit of 255 bytes"),
    )
}

/// Check that `envelope` fits AMQP's 255-byte short strings (header names, content
/// type, type), so that building its properties cannot fail.
fn check(envelope: &Envelope) -> Result<()> {
    if envelope.content_type.len() > 255 {
        return Err(too_long("content type", &envelope.content_type));
    }
    if envelope.event_type.len() > 255 {
        return Err(too_long("event type", &envelope.event_type));
    }
    if let Some((name, _)) = envelope.headers.iter().find(|(n, _)| n.len() > 255) {
        return Err(too_long("header name", name));
    }
    Ok(())
}

/// The AMQP properties of `envelope`: persistent, its id as message id, its content type,
/// its correlation id, and every attribute as a header.
#[cfg(test)]
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties> {
    check(envelope)?;
    Ok(build_properties(envelope))
}

/// [`properties`] for an envelope that passed [`check`].
fn build_properties(envelope: &Envelope) -> BasicProperties {
    // Built in one go (sorted bulk insert) rather than header by header.
    let headers: BTreeMap<ShortString, AMQPValue> = envelope
        .attributes()
        .into_iter()
        .map(|(name, value)| {
            (
                ShortString::from(String::from(name)),
                AMQPValue::LongString(LongString::from(value)),
            )
        })
        .collect();
    let headers = FieldTable::from(headers);
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(envelope.content_type.as_ref()))
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(envelope.event_type.as_ref()))
        .with_headers(headers);
    if let Ok(since) = envelope.time.duration_since(UNIX_EPOCH) {
        properties = properties.with_timestamp(since.as_secs());
    }
    if let Some(id) = envelope.correlation_id {
        properties = properties.with_correlation_id(ShortString::from(id.to_string()));
    }
    properties
}

/// Refuse an envelope over the transport's `limit` with [`ErrorKind::MessageTooLarge`].
pub(crate) fn check_size(envelope: &Envelope, limit: usize) -> Result<()> {
    let size = envelope.wire_size();
    if size > limit {
        return Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!(
                "`{}` is about {size} bytes, over the RabbitMQ transport's limit of {limit} bytes",
                envelope.event_type
            ),
        ));
    }
    Ok(())
}

/// `envelope` addressed to `exchange` with routing key `routing_key`.
pub(crate) fn outgoing(
    envelope: Envelope,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
) -> Result<Outgoing> {
    check(&envelope)?;
    Ok(Outgoing {
        exchange: short("exchange", exchange)?,
        routing_key: short("routing key", routing_key)?,
        mandatory,
        envelope,
    })
}

/// Publish `envelopes` to the topic exchange `topic`, routing key = wire name.
///
/// Not `mandatory`: a topic no subscription is bound to yet takes the message and drops
/// it, as publish/subscribe means (the broker still confirms it).
pub(crate) async fn publish_to_topic(
    shared: &Shared,
    topic: &str,
    envelopes: Vec<Envelope>,
) -> Result<()> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let messages = envelopes
        .into_iter()
        .map(|e| {
            check_size(&e, shared.config.max_message_size)?;
            let routing_key = e.event_type.clone();
            outgoing(e, topic, &routing_key, false)
        })
        .collect::<Result<Vec<_>>>()?;
    let deadline = shared.deadline();
    shared.check_exchange(topic, deadline).await?;
    shared.publisher.send(shared, messages, deadline).await
}

/// The shared confirm-mode channel and the window of unconfirmed messages.
pub(crate) struct Publisher {
    slot: Mutex<Option<(Channel, u64)>>,
    opening: tokio::sync::Mutex<()>,
    window: Arc<Semaphore>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("free_window", &self.window.available_permits())
            .finish_non_exhaustive()
    }
}

/// What became of one round of sending.
#[derive(Default)]
struct Round {
    /// Indices to send again on a new channel.
    again: Vec<usize>,
    /// The first error that sending again cannot fix.
    fatal: Option<Error>,
    /// The last transient error, for the message if the deadline passes.
    transient: Option<Error>,
}

impl Round {
    fn settle(&mut self, index: usize, result: lapin::Result<Confirmation>, what: &Outgoing) {
        match result {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
            Ok(Confirmation::Ack(Some(_))) => {
                self.fatal.get_or_insert_with(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "RabbitMQ returned the message for `{}` as unroutable: the queue does not exist (it is declared by the subscribing bus's build())",
                            what.routing_key
                        ),
                    )
                });
            }
            Ok(Confirmation::Nack(_)) => {
                self.fatal.get_or_insert_with(|| {
                    Error::new(
                        ErrorKind::Rejected,
                        format!(
                            "RabbitMQ refused the message for `{}` (negative publisher confirm: queue limit or internal error)",
                            what.routing_key
                        ),
                    )
                });
            }
            Err(e) if lost_with_channel(&e, what) => {
                self.again.push(index);
                self.transient = Some(from_lapin(
                    e,
                    "the channel closed before the broker confirmed",
                ));
            }
            Err(e) => {
                self.fatal.get_or_insert_with(|| {
                    from_lapin(e, format_args!("publishing to `{}`", what.exchange))
                });
            }
        }
    }
}

/// Whether `e` means the message was lost with its channel and sending it again on a new
/// one may succeed: a dropped connection, or the shared channel closed by the broker
/// over another message (a publish to a missing exchange names that exchange).
fn lost_with_channel(e: &lapin::Error, m: &Outgoing) -> bool {
    if is_transient(e) {
        return true;
    }
    match crate::error::amqp_error(e) {
        Some(amqp) if amqp.get_id() == crate::error::code::NOT_FOUND => {
            let ours = format!("'{}'", m.exchange);
            m.exchange.as_str().is_empty() || !amqp.get_message().as_str().contains(&ours)
        }
        _ => false,
    }
}

impl Publisher {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Publisher {
            slot: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            window: Arc::new(Semaphore::new(max_in_flight)),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn current(&self) -> Option<(Channel, u64)> {
        let slot = self.slot.lock().expect("publisher lock");
        slot.as_ref()
            .filter(|(c, _)| c.status().connected())
            .cloned()
    }

    /// The publishing channel, opened (and put in confirm mode) if needed.
    async fn channel(&self, shared: &Shared, deadline: Instant) -> Result<(Channel, u64)> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let Ok(_guard) = tokio::time::timeout_at(deadline, self.opening.lock()).await else {
            return Err(Error::new(
                ErrorKind::Timeout,
                "timed out waiting for the RabbitMQ publishing channel",
            ));
        };
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let (channel, _) = shared.channel(deadline).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| from_lapin(e, "enabling publisher confirms"))?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.slot.lock().expect("publisher lock") = Some((channel.clone(), id));
        Ok((channel, id))
    }

    /// Forget channel `id` (it failed); the next send opens a new one.
    fn discard(&self, id: u64) {
        let mut slot = self.slot.lock().expect("publisher lock");
        if slot.as_ref().is_some_and(|(_, current)| *current == id) {
            *slot = None;
        }
    }

    /// Send `messages` and wait for all their confirms, sending again what a dropped
    /// channel lost, until `deadline`.
    pub(crate) async fn send(
        &self,
        shared: &Shared,
        messages: Vec<Outgoing>,
        deadline: Instant,
    ) -> Result<()> {
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut backoff = shared.config.reconnect.backoff();
        loop {
            let (channel, id) = self.channel(shared, deadline).await?;
            let round = self.round(&channel, &messages, &pending, deadline).await;
            if let Some(fatal) = round.fatal {
                return Err(fatal);
            }
            if round.again.is_empty() {
                return Ok(());
            }
            self.discard(id);
            let delay = backoff.next().unwrap_or(shared.config.reconnect.max_delay);
            if Instant::now() + delay >= deadline {
                let e = Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "RabbitMQ at {} did not confirm {} of {} messages within {:?}; they may not have been published",
                        shared.redacted,
                        round.again.len(),
                        messages.len(),
                        shared.config.publish_timeout
                    ),
                );
                return Err(match round.transient {
                    Some(t) => e.with_source(t),
                    None => e,
                });
            }
            tracing::debug!(
                again = round.again.len(), retry_in = ?delay,
                "publishing channel dropped before the broker confirmed; sending again"
            );
            pending = round.again;
            tokio::time::sleep(delay).await;
        }
    }

    /// Send `pending` messages on `channel` (window-limited), then collect the confirms.
    async fn round(
        &self,
        channel: &Channel,
        messages: &[Outgoing],
        pending: &[usize],
        deadline: Instant,
    ) -> Round {
        let mut round = Round::default();
        let mut in_flight = FuturesUnordered::new();
        for (n, &index) in pending.iter().enumerate() {
            // A permit of the shared window, settling finished confirms meanwhile.
            let permit: OwnedSemaphorePermit = loop {
                if let Ok(p) = self.window.clone().try_acquire_owned() {
                    break p;
                }
                tokio::select! {
                    Some((i, result)) = in_flight.next(), if !in_flight.is_empty() => {
                        round.settle(i, result, &messages[i]);
                    }
                    p = self.window.clone().acquire_owned() => break p.expect("window never closed"),
                    _ = tokio::time::sleep_until(deadline) => {
                        round.again.extend_from_slice(&pending[n..]);
                        round.transient.get_or_insert_with(|| Error::new(ErrorKind::Timeout, "too many messages waiting for confirms"));
                        return self.drain(round, in_flight, messages, deadline).await;
                    }
                }
            };
            let m = &messages[index];
            let sent = channel
                .basic_publish(
                    m.exchange.clone(),
                    m.routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: m.mandatory,
                        immediate: false,
                    },
                    &m.envelope.payload,
                    m.properties(),
                )
                .await;
            match sent {
                Ok(confirm) => in_flight.push(async move {
                    let result = confirm.await;
                    drop(permit);
                    (index, result)
                }),
                Err(e) => {
                    // The channel is gone: the rest goes on a new one.
                    round.again.extend_from_slice(&pending[n..]);
                    if lost_with_channel(&e, m) {
                        round.transient = Some(from_lapin(e, "publishing"));
                    } else {
                        round.fatal.get_or_insert_with(|| {
                            from_lapin(e, format_args!("publishing to `{}`", m.exchange))
                        });
                    }
                    break;
                }
            }
            if round.fatal.is_some() {
                break;
            }
        }
        self.drain(round, in_flight, messages, deadline).await
    }

    async fn drain<F>(
        &self,
        mut round: Round,
        mut in_flight: FuturesUnordered<F>,
        messages: &[Outgoing],
        deadline: Instant,
    ) -> Round
    where
        F: std::future::Future<Output = (usize, lapin::Result<Confirmation>)>,
    {
        loop {
            match tokio::time::timeout_at(deadline, in_flight.next()).await {
                Ok(Some((i, result))) => round.settle(i, result, &messages[i]),
                Ok(None) => return round,
                Err(_) => {
                    round.fatal.get_or_insert_with(|| {
                        Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "RabbitMQ did not confirm {} messages in time (is the broker blocking publishers for a resource alarm?); they may or may not have been published",
                                in_flight.len()
                            ),
                        )
                    });
                    return round;
                }
            }
        }
    }
}
