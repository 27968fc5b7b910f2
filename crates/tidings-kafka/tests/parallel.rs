//! Parallel consumption on a multi-partition topic, against the broker at
//! `TIDINGS_KAFKA_BROKERS` (tansu in `scripts/test`): a subscription with
//! `.concurrency(4)` runs several handlers at once across partitions, keeps the order of
//! each ordering key, and commits a partition's offset only past records that were
//! handled. The test prints a line and passes when the variable is unset, and fails when
//! it is set but the broker does not answer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, committed, eventually, namespace, read_raw, BookBorrowed, Lending};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_kafka::Kafka;

const PATIENCE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;
const KEYS: usize = 6;
const PER_KEY: u64 = 8;
/// The ordering key of the one event whose handler is held until the test releases it.
const HELD: &str = "held";

/// What the handlers saw.
#[derive(Default)]
struct Seen {
    running: AtomicUsize,
    most_running: AtomicUsize,
    release: AtomicBool,
    handled: Mutex<Vec<(String, u64)>>,
}

async fn handle(e: BookBorrowed, cx: Context<Seen>) -> Result<(), HandlerError> {
    let seen = cx.state();
    let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_running.fetch_max(now, Ordering::SeqCst);
    if e.book == HELD {
        while !seen.release.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.handled.lock().unwrap().push((e.book, e.n));
    seen.running.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_across_partitions_keep_key_order_and_commit_only_handled() {
    let Some(brokers) =
        brokers("concurrent_handlers_across_partitions_keep_key_order_and_commit_only_handled")
    else {
        return;
    };
    let ns = namespace("kt-parallel");
    let kafka = || {
        Kafka::new(
            common::config(&brokers)
                .partitions(PARTITIONS)
                .commit_interval(Duration::from_millis(100)),
        )
        .unwrap()
    };
    let seen = Arc::new(Seen::default());
    let catalog = Bus::builder("catalog")
        .transport(kafka())
        .namespace(&ns)
        .subscribe(
            Subscription::to::<Lending>()
                .with_shared_state(seen.clone())
                .concurrency(4)
                .on(handle),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(kafka())
        .namespace(&ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap();

    // The held event first, then the keys interleaved, each key's events numbered in
    // publish order.
    lending
        .publish(BookBorrowed {
            book: HELD.into(),
            n: 0,
        })
        .await
        .unwrap();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            lending
                .publish(BookBorrowed {
                    book: format!("k{k}"),
                    n,
                })
                .await
                .unwrap();
        }
    }
    let total = KEYS * PER_KEY as usize;
    eventually("every event but the held one handled", PATIENCE, || {
        seen.handled.lock().unwrap().len() == total
    })
    .await;

    // Where the records are: the held one, and how many each partition has.
    let topic = format!("{ns}.lending");
    let records = read_raw(&brokers, &topic, total + 1);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &records {
        let end = ends.entry(r.partition).or_default();
        *end = (*end).max(r.offset + 1);
    }
    assert!(
        ends.len() > 1,
        "the events should be spread over several partitions: {ends:?}"
    );
    let held = records
        .iter()
        .find(|r| r.key.as_deref() == Some(HELD))
        .expect("the held record is in the topic");

    assert!(
        seen.most_running.load(Ordering::SeqCst) > 1,
        "with concurrency 4, more than one handler should run at once"
    );
    let handled = seen.handled.lock().unwrap().clone();
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, n) in &handled {
        per_key.entry(key.clone()).or_default().push(*n);
    }
    for (key, ns) in &per_key {
        assert_eq!(
            ns,
            &(0..PER_KEY).collect::<Vec<_>>(),
            "key {key}: handled in this order"
        );
    }

    // While the held record's handler runs, its partition's commit point stays at or
    // below it, over several commit intervals; the other partitions commit everything.
    let group = format!("{ns}.catalog.{ns}.lending");
    let others: BTreeSet<i32> = ends
        .keys()
        .copied()
        .filter(|p| *p != held.partition)
        .collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = committed(&brokers, &group, &topic, PARTITIONS);
        let done = now
            .iter()
            .filter(|(p, _)| others.contains(p))
            .all(|(p, c)| *c == Some(ends[p]));
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the partitions without the held record never committed to their end {ends:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = committed(&brokers, &group, &topic, PARTITIONS);
    let on_held = now
        .iter()
        .find(|(p, _)| *p == held.partition)
        .and_then(|(_, c)| *c);
    assert!(
        on_held.is_none_or(|c| c <= held.offset),
        "partition {} committed {on_held:?} while the record at offset {} was still being handled",
        held.partition,
        held.offset
    );

    seen.release.store(true, Ordering::SeqCst);
    let end = ends[&held.partition];
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = committed(&brokers, &group, &topic, PARTITIONS);
        if now
            .iter()
            .any(|(p, c)| *p == held.partition && *c == Some(end))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partition {} never committed to {end} after the held record was handled: {now:?}",
            held.partition
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    catalog.shutdown().await;
    lending.shutdown().await;
}
