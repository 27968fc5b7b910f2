//! `Bus::shutdown()` returns only once the subscription's Kafka consumer is closed: its
//! poll thread has made the last commit, left the group and ended (issue 9, defect 7).
//! Deleting the subscription's topics right after it (teardown) used to race the consumer
//! still committing, and crashed librdkafka in some runs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{brokers, eventually, namespace, Lending, Note};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_kafka::{live_poll_threads, Kafka};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_consumer_so_teardown_can_follow_at_once() {
    let Some(brokers) = brokers("shutdown_closes_the_consumer_so_teardown_can_follow_at_once")
    else {
        return;
    };
    for run in 0..5 {
        let ns = namespace("kt-shutdown");
        let group = format!("{ns}.catalog.{ns}.lending");
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let catalog = Bus::builder("catalog")
            .transport(Kafka::new(common::config(&brokers)).unwrap())
            .namespace(&ns)
            .subscribe(
                Subscription::to::<Lending>().on(move |_: Note, _cx: Context| {
                    let h = h.clone();
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), HandlerError>(())
                    }
                }),
            )
            .build()
            .await
            .unwrap();
        let lending = common::publisher(&brokers, &ns).await;
        lending
            .publish_batch((0..20).map(|n| Note { n }))
            .await
            .unwrap();
        eventually("some notes handled", Duration::from_secs(60), || {
            handled.load(Ordering::SeqCst) >= 5
        })
        .await;
        assert_eq!(live_poll_threads(&group), 1, "run {run}: the consumer runs");
        catalog.shutdown().await;
        assert_eq!(
            live_poll_threads(&group),
            0,
            "run {run}: the poll thread still ran after shutdown() returned"
        );
        // At once: nothing of the subscription may still talk to these topics.
        catalog.teardown().await.unwrap();
        lending.shutdown().await;
        lending.teardown().await.unwrap();
    }
}

/// The topic names a broker reports right now, among `names`.
fn existing(brokers: &str, names: &[String]) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && names.iter().any(|n| n == t.name()))
        .map(|t| t.name().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_deletes_every_topic_the_bus_created_and_may_run_twice() {
    let Some(brokers) = brokers("teardown_deletes_every_topic_the_bus_created_and_may_run_twice")
    else {
        return;
    };
    let ns = namespace("kt-teardown");
    let catalog = Bus::builder("catalog")
        .transport(Kafka::new(common::config(&brokers)).unwrap())
        .namespace(&ns)
        .subscribe(
            Subscription::to::<Lending>()
                .on(|_: Note, _cx: Context| async { Ok::<(), HandlerError>(()) }),
        )
        .build()
        .await
        .unwrap();
    let names: Vec<String> = catalog
        .broker_objects()
        .into_iter()
        .map(|o| {
            assert_eq!(o.kind, "topic");
            o.name
        })
        .collect();
    assert_eq!(
        names,
        [
            format!("{ns}.lending"),
            format!("{ns}.catalog.{ns}.lending.retry"),
            format!("{ns}.catalog.{ns}.lending.dlq"),
            format!("{ns}.catalog.{ns}.lending.dlq.replayed"),
        ]
    );
    assert_eq!(existing(&brokers, &names).len(), 4, "build() created them");
    catalog.shutdown().await;
    catalog.teardown().await.unwrap();
    let b = brokers.clone();
    let left = tokio::task::spawn_blocking(move || existing(&b, &names))
        .await
        .unwrap();
    assert!(left.is_empty(), "still there after teardown: {left:?}");
    catalog.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_while_the_broker_is_away() {
    let Some(_) = brokers("shutdown_returns_while_the_broker_is_away") else {
        return;
    };
    let Some(mut tansu) = common::PrivateTansu::new() else {
        println!("skipped: shutdown_returns_while_the_broker_is_away needs a tansu with the libsql engine");
        return;
    };
    tansu.start(&[]);
    let config = || {
        tidings_kafka::KafkaConfig::new(tansu.address())
            .idempotence(false)
            .message_timeout(Duration::from_secs(5))
    };
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let catalog = Bus::builder("catalog")
        .transport(Kafka::new(config()).unwrap())
        .namespace("away")
        .subscribe(
            Subscription::to::<Lending>().on(move |_: Note, _cx: Context| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(Kafka::new(config()).unwrap())
        .namespace("away")
        .publishes::<Lending>()
        .build()
        .await
        .unwrap();
    lending
        .publish_batch((0..20).map(|n| Note { n }))
        .await
        .unwrap();
    eventually("the notes handled", Duration::from_secs(60), || {
        handled.load(Ordering::SeqCst) >= 20
    })
    .await;
    let tansu = tokio::task::spawn_blocking(move || {
        tansu.stop();
        tansu
    })
    .await
    .unwrap();
    // The last commit cannot reach the broker; shutdown must still return (it waits a
    // bounded time for the commit, then lets the consumer close in the background). The
    // bound here only keeps a hang from stalling the test run.
    tokio::time::timeout(Duration::from_secs(120), catalog.shutdown())
        .await
        .expect("shutdown() never returned while the broker was away");
    drop(lending);
    drop(tansu);
}
