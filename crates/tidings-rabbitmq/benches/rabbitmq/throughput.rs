//! End-to-end throughput and batch publishing, raw lapin against tidings (see the module
//! docs of `main.rs` for what each side does).

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tidings_core::Bus;
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

use crate::ours::{counter, tick, tidings_consumer, Tick};
use crate::raw::{purge, raw_publish, Side};
use crate::{ACK_EVERY, PREFETCH};

/// Raw lapin end to end: a consumer (prefetch, decode, `basic.ack multiple` every
/// ACK_EVERY) started untimed; timed from the first publish (sliding window of confirms)
/// until the consumer has decoded and acknowledged the last of `n` events.
pub(crate) async fn raw_throughput(
    conn: &Connection,
    channel: &Channel,
    s: &Side,
    headers: &FieldTable,
    n: u64,
) -> Duration {
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
    let acking = consuming.clone();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.unwrap();
            let event: Tick = rmp_serde::from_slice(&delivery.data).unwrap();
            std::hint::black_box(event);
            seen += 1;
            if seen.is_multiple_of(ACK_EVERY) || seen == n {
                acking
                    .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
            if seen == n {
                break;
            }
        }
    });
    raw_publish(channel, s, headers, n).await;
    reader.await.unwrap();
    let elapsed = start.elapsed();
    let _ = consuming.close(200, "done".into()).await;
    elapsed
}

/// Tidings end to end: a consuming bus (typed handler, prefetch, the transport's batched
/// acks) built untimed; timed from `publish_batch` of `n` events (the transport's confirm
/// window) until the handler has seen the last.
pub(crate) async fn tidings_throughput(url: &str, publisher: &Bus, ns: &str, n: u64) -> Duration {
    let transport = RabbitMq::connect(RabbitMqConfig::new(url)).await.unwrap();
    let counter = counter(n, false);
    let bus = tidings_consumer(transport, ns, counter.clone()).await;
    let start = Instant::now();
    publisher.publish_batch((0..n).map(tick)).await.unwrap();
    counter.done.notified().await;
    let elapsed = start.elapsed();
    bus.shutdown().await;
    elapsed
}

/// `n` events as one `publish_batch`, or as `n` `publish` calls all in flight at once;
/// the queue purged afterwards, untimed.
pub(crate) async fn tidings_publish_n(
    conn: &Connection,
    publisher: &Bus,
    s: &Side,
    n: u64,
    batch: bool,
) -> Duration {
    let start = Instant::now();
    if batch {
        publisher.publish_batch((0..n).map(tick)).await.unwrap();
    } else {
        let all = (0..n).map(|i| publisher.publish(tick(i)));
        for r in futures::future::join_all(all).await {
            r.unwrap();
        }
    }
    let elapsed = start.elapsed();
    purge(conn, s).await;
    elapsed
}

/// `batches` batches of `size` events, `concurrent` of them in flight at once; the queue
/// purged afterwards, untimed.
pub(crate) async fn tidings_stream(
    conn: &Connection,
    publisher: &Bus,
    s: &Side,
    batches: u64,
    size: u64,
    concurrent: usize,
) -> Duration {
    let start = Instant::now();
    let mut sending = stream::iter(0..batches)
        .map(|b| publisher.publish_batch((b * size..(b + 1) * size).map(tick)))
        .buffer_unordered(concurrent);
    while let Some(r) = sending.next().await {
        r.unwrap();
    }
    let elapsed = start.elapsed();
    purge(conn, s).await;
    elapsed
}

/// Raw lapin publishing `n` events in its sliding window; the queue purged afterwards.
pub(crate) async fn raw_publish_n(
    conn: &Connection,
    channel: &Channel,
    s: &Side,
    headers: &FieldTable,
    n: u64,
) -> Duration {
    let start = Instant::now();
    raw_publish(channel, s, headers, n).await;
    let elapsed = start.elapsed();
    purge(conn, s).await;
    elapsed
}
