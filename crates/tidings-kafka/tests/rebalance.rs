//! A subscription that fell behind and lost its partitions in a rebalance consumes them
//! again when they come back (issue 9, defect 9). The poll thread pauses every partition
//! when the bus has been behind for a while; librdkafka keeps such a pause across a revoke
//! and a new assignment, so partitions that came back paused used to stay paused for good.

extern crate tidings_core as tidings;

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, eventually, namespace, Lending, Note};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_kafka::Kafka;

type Handled = Arc<Mutex<BTreeSet<u64>>>;

async fn catalog(brokers: &str, ns: &str, handled: &Handled, pause: Duration) -> Bus {
    let handled = handled.clone();
    Bus::builder("catalog")
        .transport(Kafka::new(common::config(brokers)).unwrap())
        .namespace(ns)
        .subscribe(
            Subscription::to::<Lending>()
                .prefetch(4)
                .on(move |note: Note, _cx: Context| {
                    let handled = handled.clone();
                    async move {
                        tokio::time::sleep(pause).await;
                        handled.lock().unwrap().insert(note.n);
                        Ok::<(), HandlerError>(())
                    }
                }),
        )
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_paused_while_behind_are_consumed_again_after_a_rebalance() {
    let Some(brokers) =
        brokers("partitions_paused_while_behind_are_consumed_again_after_a_rebalance")
    else {
        return;
    };
    let ns = namespace("kt-rebalance");
    let handled: Handled = Arc::default();
    let slow = catalog(&brokers, &ns, &handled, Duration::from_millis(100)).await;
    let lending = Bus::builder("lending")
        .transport(Kafka::new(common::config(&brokers)).unwrap())
        .namespace(&ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap();
    lending
        .publish_batch((0..200).map(|n| Note { n }))
        .await
        .unwrap();
    // Behind for longer than the poll thread waits before it pauses every partition.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // A second instance joins: the first loses its partitions while paused, gets some
    // back, and gets all of them back when the second leaves.
    let before = handled.lock().unwrap().len();
    let fast = catalog(&brokers, &ns, &handled, Duration::ZERO).await;
    eventually(
        "the second instance to handle events",
        Duration::from_secs(60),
        || handled.lock().unwrap().len() > before + 10,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    fast.shutdown().await;
    lending
        .publish_batch((200..230).map(|n| Note { n }))
        .await
        .unwrap();
    let all: BTreeSet<u64> = (0..230).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let missing: Vec<u64> = all.difference(&handled.lock().unwrap()).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events never handled after the rebalance (partitions left paused?): {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    slow.shutdown().await;
    slow.teardown().await.unwrap();
    lending.shutdown().await;
}
