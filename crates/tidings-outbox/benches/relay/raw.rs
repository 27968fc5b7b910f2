//! The raw lapin side: the same envelopes sent as the RabbitMQ transport sends them
//! (persistent, CloudEvents attributes as headers, message id, type, timestamp), with a
//! sliding window of unconfirmed messages; the sink queue the events land in; a consumer
//! that timestamps each delivery.

use std::time::{Instant, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tidings_core::Envelope;
use tokio::sync::mpsc;

/// Unconfirmed messages in flight: the RabbitMQ transport's default `max_in_flight`.
pub(crate) const WINDOW: usize = 1024;

/// The AMQP properties the transport gives `envelope`, built the same way (every
/// attribute as a long-string header, persistent, id, type, content type, timestamp).
pub(crate) fn properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in envelope.attributes() {
        headers.insert(
            ShortString::from(String::from(name)),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(envelope.content_type.as_ref()))
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(envelope.event_type.as_ref()))
        .with_headers(headers);
    if let Ok(since) = envelope.time.duration_since(UNIX_EPOCH) {
        properties = properties.with_timestamp(since.as_secs());
    }
    properties
}

/// Publish `envelopes` to the topic exchange `exchange` (routing key = event type) on the
/// confirm-mode `channel`, up to [`WINDOW`] unconfirmed, and wait for every confirm.
pub(crate) async fn publish(channel: &Channel, exchange: &str, envelopes: &[Envelope]) {
    let mut in_flight = FuturesUnordered::new();
    for envelope in envelopes {
        if in_flight.len() >= WINDOW {
            let confirm: lapin::Result<lapin::Confirmation> = in_flight.next().await.unwrap();
            assert!(confirm.unwrap().is_ack());
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                envelope.event_type.as_ref().into(),
                BasicPublishOptions::default(),
                &envelope.payload,
                properties(envelope),
            )
            .await
            .unwrap();
        in_flight.push(confirm);
    }
    while let Some(confirm) = in_flight.next().await {
        assert!(confirm.unwrap().is_ack());
    }
}

/// Declare the durable queue `queue` bound to `exchange` for every routing key: where
/// the relayed and the raw events are stored (persistent messages on a durable queue,
/// so the broker confirms after writing them, the same for both sides).
pub(crate) async fn declare_sink(conn: &Connection, exchange: &str, queue: &str) {
    let channel = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = channel.close(200, "declared".into()).await;
}

/// Empty `queue` (between rounds, untimed).
pub(crate) async fn purge(conn: &Connection, queue: &str) {
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let _ = channel.close(200, "purged".into()).await;
}

/// Delete `queue` at the end of the run.
pub(crate) async fn delete(conn: &Connection, queue: &str) {
    let channel = conn.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = channel.close(200, "deleted".into()).await;
}

/// Consume `queue` (auto-ack), sending the instant of every delivery; stops when the
/// returned channel is closed.
pub(crate) async fn arrivals(
    conn: &Connection,
    queue: &str,
) -> (Channel, mpsc::UnboundedReceiver<Instant>) {
    let channel = conn.create_channel().await.unwrap();
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(_delivery)) = consumer.next().await {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    (channel, rx)
}
