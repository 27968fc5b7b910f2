//! Connections closed by the broker mid-stream (`rabbitmqctl close_connection`, the
//! conformance adversary's fault, checked on its own): both transports reconnect by
//! themselves and every event is handled. Needs `TIDINGS_RABBITMQ_URL` and
//! `TIDINGS_RABBITMQ_CTL`.

mod common;

use std::time::Duration;

use tidings_core::{Bus, Subscription};
use tidings_rabbitmq::RabbitMq;
use tidings_testing::conformance::Adversary;

use common::adversary::LapinAdversary;
use common::{eventually, namespace, record, OrderEvents, OrderPlaced, Seen};

/// The broker closes both transports' connections mid-stream; publishes that fail
/// meanwhile are retryable and succeed when tried again, and every event is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_broker_mid_stream_lose_nothing() {
    const STREAM: u64 = 2000;
    let Some(url) = common::url() else { return };
    if std::env::var("TIDINGS_RABBITMQ_CTL").is_err() {
        println!("skipped: TIDINGS_RABBITMQ_CTL is not set (scripts/test sets it)");
        return;
    }
    let adversary = LapinAdversary::new(&url);
    let ns = namespace();
    let consuming = RabbitMq::new(adversary.config());
    let publishing = RabbitMq::new(adversary.config());
    let seen = Seen::default();
    let catalog = Bus::builder("catalog")
        .namespace(&ns)
        .transport(consuming.clone())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record)
                .concurrency(4),
        )
        .build()
        .await
        .expect("building the consumer");
    let shop = Bus::builder("shop")
        .namespace(&ns)
        .transport(publishing.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .expect("building the publisher");
    let before = (
        consuming.connection_generation(),
        publishing.connection_generation(),
    );

    let mut retried = 0;
    for n in 0..STREAM {
        if n == STREAM / 2 {
            adversary
                .drop_connections()
                .await
                .expect("closing the connections from the broker");
        }
        loop {
            match shop.publish(OrderPlaced { n }).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && retried < 100 => {
                    retried += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publishing {n} after the connections closed: {e}"),
            }
        }
    }
    eventually(
        Duration::from_secs(60),
        "every event handled after the connections closed",
        || seen.distinct() as u64 == STREAM,
    )
    .await;
    assert!(seen.missing(STREAM).is_empty());
    assert!(
        consuming.connection_generation() > before.0
            && publishing.connection_generation() > before.1,
        "both transports reconnected: before {before:?}, after ({}, {})",
        consuming.connection_generation(),
        publishing.connection_generation()
    );
    shop.teardown().await.unwrap();
    catalog.teardown().await.unwrap();
}
