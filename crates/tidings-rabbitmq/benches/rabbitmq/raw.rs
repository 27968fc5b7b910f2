//! The raw lapin side: a durable topic exchange and queue, messages with the headers
//! tidings would write, a sliding window of confirms, and a consumer acking in batches.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tidings_core::Envelope;

use crate::ours::{now_micros, tick, Tick};
use crate::{ACK_EVERY, PREFETCH, WINDOW};

/// The broker objects of one side (raw or tidings): names as tidings makes them.
pub(crate) struct Side {
    pub(crate) exchange: String,
    pub(crate) queue: String,
}

pub(crate) fn side(ns: &str) -> Side {
    Side {
        exchange: format!("{ns}.bench"),
        queue: format!("{ns}.reader.{ns}.bench"),
    }
}

/// Headers like the ones tidings writes, built once: what a hand-rolled publisher that
/// wants the same metadata on the wire would send.
pub(crate) fn raw_headers() -> FieldTable {
    let env = Envelope::new("bench.tick", 1, "writer", "application/msgpack", Vec::new());
    let mut table = FieldTable::default();
    for (name, value) in env.attributes() {
        table.insert(
            ShortString::from(name.as_ref()),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    table
}

pub(crate) fn raw_properties(headers: &FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/msgpack".into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
        .with_headers(headers.clone())
}

pub(crate) async fn raw_declare(channel: &Channel, s: &Side) {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            s.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(s.queue.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            s.queue.as_str().into(),
            s.exchange.as_str().into(),
            "bench.tick".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Raw lapin: publish `n` events in a sliding window of unconfirmed messages.
pub(crate) async fn raw_publish(channel: &Channel, s: &Side, headers: &FieldTable, n: u64) {
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        if in_flight.len() >= WINDOW {
            let confirm: lapin::Result<lapin::Confirmation> = in_flight.next().await.unwrap();
            assert!(confirm.unwrap().is_ack());
        }
        let payload = rmp_serde::to_vec_named(&tick(i)).unwrap();
        let confirm = channel
            .basic_publish(
                s.exchange.as_str().into(),
                "bench.tick".into(),
                BasicPublishOptions::default(),
                &payload,
                raw_properties(headers),
            )
            .await
            .unwrap();
        in_flight.push(confirm);
    }
    while let Some(confirm) = in_flight.next().await {
        assert!(confirm.unwrap().is_ack());
    }
}

/// Raw lapin: consume and decode `n` events, `basic.ack multiple` every ACK_EVERY.
pub(crate) async fn raw_consume(conn: &Connection, s: &Side, n: u64) -> Duration {
    let start = Instant::now();
    let channel = conn.create_channel().await.unwrap();
    raw_declare(&channel, s).await;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            s.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // A spawned task, like the consumer loop of a bus: the same threads do the work.
    let acking = channel.clone();
    tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.unwrap();
            let event: Tick = rmp_serde::from_slice(&delivery.data).unwrap();
            std::hint::black_box(event);
            seen += 1;
            if seen.is_multiple_of(ACK_EVERY) || seen == n {
                let options = BasicAckOptions { multiple: true };
                acking
                    .basic_ack(delivery.delivery_tag, options)
                    .await
                    .unwrap();
            }
            if seen == n {
                break;
            }
        }
    })
    .await
    .unwrap();
    let elapsed = start.elapsed();
    let _ = channel.close(200, "done".into()).await;
    elapsed
}

pub(crate) async fn purge(conn: &Connection, s: &Side) {
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_purge(s.queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let _ = channel.close(200, "purged".into()).await;
}

pub(crate) async fn raw_end_to_end(
    conn: &Connection,
    channel: &Channel,
    s: &Side,
    headers: &FieldTable,
    n: u64,
) -> Histogram<u64> {
    let consuming = conn.create_channel().await.unwrap();
    consuming
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consuming
        .basic_consume(
            s.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut seen = 0u64;
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.unwrap();
            let event: Tick = rmp_serde::from_slice(&delivery.data).unwrap();
            h.saturating_record(now_micros().saturating_sub(event.sent_micros));
            seen += 1;
            // Batched where safe: everything up to here is handled.
            if seen.is_multiple_of(ACK_EVERY) || seen == n {
                consuming
                    .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
            if seen == n {
                break;
            }
        }
        let _ = consuming.close(200, "done".into()).await;
        h
    });
    for i in 0..n {
        let payload = rmp_serde::to_vec_named(&tick(i)).unwrap();
        let confirm = channel
            .basic_publish(
                s.exchange.as_str().into(),
                "bench.tick".into(),
                BasicPublishOptions::default(),
                &payload,
                raw_properties(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    reader.await.unwrap()
}
