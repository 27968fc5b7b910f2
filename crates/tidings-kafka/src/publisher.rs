//! Publishing: envelopes become records (key = ordering key, headers and value as
//! `wire` writes them) sent by one idempotent producer with `acks=all`, and confirmed.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tidings_core::{Envelope, Error, ErrorKind, Result};

use crate::config::KafkaConfig;
use crate::error::from_kafka;
use crate::wire::headers_of;

/// The producer shared by publishing, retries, dead-lettering and replay.
pub(crate) fn create_producer(config: &KafkaConfig) -> Result<FutureProducer> {
    let mut c = config.client_config();
    c.set("acks", "all")
        .set(
            "enable.idempotence",
            if config.idempotence { "true" } else { "false" },
        )
        .set("linger.ms", config.linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        .set(
            "message.max.bytes",
            (config.max_message_size.max(1000) + 64 * 1024).to_string(),
        )
        // Many records in flight; the idempotent producer keeps them in order (at most 5).
        .set("max.in.flight.requests.per.connection", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    c.create()
        .map_err(|e| from_kafka("creating the Kafka producer", e))
}

/// One record to send.
pub(crate) struct Outgoing<'a> {
    pub(crate) key: Option<&'a str>,
    pub(crate) headers: OwnedHeaders,
    pub(crate) payload: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// The record for librdkafka, addressed to `topic`.
    fn to(self, topic: &'a str) -> FutureRecord<'a, str, [u8]> {
        let rec = FutureRecord::to(topic)
            .payload(self.payload)
            .headers(self.headers);
        match self.key {
            Some(key) => rec.key(key),
            None => rec,
        }
    }
}

/// Send `records` to `topic` and wait until the broker acknowledged every one of them.
/// Many records are in flight at once; the first failure is returned after every record
/// has an outcome (so none is left in an unknown state).
pub(crate) async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<Outgoing<'_>>,
) -> Result<()> {
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(records.len());
    let mut first_error: Option<Error> = None;
    for record in records {
        let mut rec = record.to(topic);
        loop {
            match producer.send_result(rec) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for the oldest record, or a moment.
                    rec = back;
                    match pending.pop_front() {
                        Some(oldest) => note(&mut first_error, topic, oldest.await),
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => {
                    note_error(
                        &mut first_error,
                        from_kafka(format_args!("publishing to the Kafka topic {topic}"), e),
                    );
                    break;
                }
            }
        }
    }
    for delivery in pending {
        note(&mut first_error, topic, delivery.await);
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn note<E>(
    first: &mut Option<Error>,
    topic: &str,
    outcome: std::result::Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) {
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err((e, _))) => note_error(
            first,
            from_kafka(format_args!("publishing to the Kafka topic {topic}"), e),
        ),
        Err(_) => note_error(
            first,
            Error::closed("the Kafka producer was dropped before the broker answered"),
        ),
    }
}

fn note_error(first: &mut Option<Error>, error: Error) {
    if first.is_none() {
        *first = Some(error);
    }
}

/// Publish `envelopes` to `topic`: refuse oversized ones before sending anything, then
/// send all and wait for the acknowledgements.
pub(crate) async fn publish(
    producer: &FutureProducer,
    max_message_size: usize,
    topic: &str,
    envelopes: &[Envelope],
) -> Result<()> {
    for env in envelopes {
        let size = env.wire_size();
        if size > max_message_size {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "the envelope {} of `{}` takes {size} bytes, more than the Kafka transport's limit of {max_message_size} (KafkaConfig::max_message_size); nothing of this batch was sent",
                    env.id, env.event_type
                ),
            ));
        }
    }
    fn outgoing(env: &Envelope) -> Outgoing<'_> {
        Outgoing {
            key: env.ordering_key.as_deref(),
            headers: headers_of(env, &[]),
            payload: &env.payload,
        }
    }
    if let [env] = envelopes {
        // One event (`Bus::publish`): no queue of pending deliveries to allocate.
        return send_one(producer, topic, outgoing(env)).await;
    }
    send_all(producer, topic, envelopes.iter().map(outgoing).collect()).await
}

/// Send one record to `topic` and wait until the broker acknowledged it; what
/// [`send_all`] does for one record, without its queue.
pub(crate) async fn send_one(
    producer: &FutureProducer,
    topic: &str,
    record: Outgoing<'_>,
) -> Result<()> {
    let mut rec = record.to(topic);
    loop {
        match producer.send_result(rec) {
            Ok(delivery) => {
                let mut first_error = None;
                note(&mut first_error, topic, delivery.await);
                return first_error.map_or(Ok(()), Err);
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The local queue is full: wait a moment for it to drain.
                rec = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => {
                return Err(from_kafka(
                    format_args!("publishing to the Kafka topic {topic}"),
                    e,
                ))
            }
        }
    }
}
