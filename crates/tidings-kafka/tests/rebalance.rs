//! A subscription that paused its partitions while it was behind, and lost some of them to
//! another group member meanwhile, consumes them again when they come back (issue 9,
//! defect 9).
//!
//! The poll thread pauses every partition when the bus has been behind for 5 s and
//! resumes them when it caught up. librdkafka keeps an application's pause on a partition
//! across a revoke and a new assignment, so a partition that another member held while the
//! bus caught up (and was therefore not resumed with the rest) came back paused and stayed
//! paused for good: the broker-restart test lost 16,000 of 20,000 events that way, when the
//! group re-formed around a member that was behind. Here the other member is a plain
//! rdkafka consumer of the same group that takes some partitions and leaves again.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, eventually, namespace, Lending, Note};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_kafka::Kafka;

type Handled = Arc<Mutex<BTreeSet<u64>>>;

/// A plain member of `group` on `topics` that polls (so it keeps its partitions) but
/// neither handles nor commits anything, until `stop`; then it leaves the group.
fn other_member(
    brokers: &str,
    group: &str,
    topics: &[&str],
    assigned: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(topics).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let _ = consumer.poll(Duration::from_millis(100));
            let count = consumer.assignment().map_or(0, |a| a.count());
            assigned.store(count, Ordering::SeqCst);
        }
        consumer.unsubscribe();
        // Dropping the consumer closes it: it leaves the group.
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_lost_while_paused_are_consumed_again_when_they_come_back() {
    let Some(brokers) =
        brokers("partitions_lost_while_paused_are_consumed_again_when_they_come_back")
    else {
        return;
    };
    let ns = namespace("kt-rebalance");
    let handled: Handled = Arc::default();
    // Handlers wait at this gate until it opens: the bus falls behind.
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let catalog = {
        let handled = handled.clone();
        Bus::builder("catalog")
            // A revoke waits for handlers in flight at most this long; they are held at
            // the gate, and their events are delivered again after the rebalance.
            .transport(
                Kafka::new(common::config(&brokers).drain_timeout(Duration::from_secs(1))).unwrap(),
            )
            .namespace(&ns)
            .subscribe(Subscription::to::<Lending>().prefetch(4).on(
                move |note: Note, _cx: Context| {
                    let handled = handled.clone();
                    let mut gate = gate_rx.clone();
                    async move {
                        let _ = gate.wait_for(|open| *open).await;
                        handled.lock().unwrap().insert(note.n);
                        Ok::<(), HandlerError>(())
                    }
                },
            ))
            .build()
            .await
            .unwrap()
    };
    let lending = common::publisher(&brokers, &ns).await;
    lending
        .publish_batch((0..60).map(|n| Note { n }))
        .await
        .unwrap();
    // Behind for longer than the poll thread waits before it pauses every partition.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Another member joins and takes some of the partitions while they are paused.
    let assigned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let member = other_member(
        &brokers,
        &format!("{ns}.catalog.{ns}.lending"),
        // The topics the subscription consumes: its topic and its retry topic.
        &[
            &format!("{ns}.lending"),
            &format!("{ns}.catalog.{ns}.lending.retry"),
        ],
        assigned.clone(),
        stop.clone(),
    );
    eventually(
        "the other member to get partitions",
        Duration::from_secs(60),
        || assigned.load(Ordering::SeqCst) > 0,
    )
    .await;
    // The bus catches up on the partitions it kept (and resumes them) while the other
    // member holds the rest.
    gate.send_replace(true);
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = handled.lock().unwrap().len();
        if now > 0 && now == last {
            break; // nothing new for a second: caught up (and resumed)
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus never caught up on its own partitions ({now} handled)"
        );
        last = now;
    }

    // The other member leaves: every partition comes back to the bus.
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || member.join().unwrap())
        .await
        .unwrap();
    lending
        .publish_batch((60..90).map(|n| Note { n }))
        .await
        .unwrap();

    let all: BTreeSet<u64> = (0..90).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let missing: Vec<u64> = all.difference(&handled.lock().unwrap()).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events never handled after the partitions came back (left paused?): {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    catalog.shutdown().await;
    catalog.teardown().await.unwrap();
    lending.shutdown().await;
}
