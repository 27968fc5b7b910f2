//! A broker restart in the middle of a stream loses nothing: every event whose publish was
//! confirmed is handled at least once after the broker is back.
//!
//! This needs a broker that keeps its data across a restart. With
//! `TIDINGS_KAFKA_STORAGE` set to a persistent engine (not `memory://`), the test restarts
//! the shared broker through `TIDINGS_KAFKA_CTL restart`. Otherwise it starts a private
//! tansu on a free loopback port with SQLite storage in a temporary directory, when a
//! tansu binary built with the `libsql` engine is found (`TANSU_BIN`, `tansu` on `PATH`,
//! or `~/.cargo/bin/tansu`); without one it prints why and passes. It runs only when
//! `TIDINGS_KAFKA_BROKERS` is set, like the other broker tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{brokers, namespace, Lending, Note, PrivateTansu};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_kafka::{Kafka, KafkaConfig};

/// How the test restarts its broker.
enum Broker {
    Shared { ctl: String },
    Private(PrivateTansu),
}

impl Broker {
    fn address(&self, shared: &str) -> String {
        match self {
            Broker::Shared { .. } => shared.to_string(),
            Broker::Private(t) => t.address(),
        }
    }

    fn restart(&mut self) {
        match self {
            Broker::Shared { ctl } => {
                let status = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{ctl} restart"))
                    .status()
                    .unwrap();
                assert!(status.success(), "{ctl} restart failed");
            }
            Broker::Private(t) => {
                t.stop();
                // Away for longer than the consumer's session timeout.
                std::thread::sleep(Duration::from_secs(10));
                t.start(&[]);
            }
        }
    }
}

fn choose_broker() -> Result<Broker, String> {
    let storage = std::env::var("TIDINGS_KAFKA_STORAGE").unwrap_or_else(|_| "memory://".into());
    if let (Ok(ctl), false) = (
        std::env::var("TIDINGS_KAFKA_CTL"),
        storage.starts_with("memory:"),
    ) {
        return Ok(Broker::Shared { ctl });
    }
    let mut tansu = PrivateTansu::new().ok_or_else(|| {
        format!(
            "the shared broker keeps its data in memory ({storage}) and no tansu with the libsql engine was found (cargo install tansu --locked --features dynostore,libsql, or TANSU_BIN)"
        )
    })?;
    tansu.start(&[]);
    Ok(Broker::Private(tansu))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let Some(shared) = brokers("a_broker_restart_mid_stream_loses_nothing") else {
        return;
    };
    let mut broker = match choose_broker() {
        Ok(b) => b,
        Err(why) => {
            println!("skipped: a_broker_restart_mid_stream_loses_nothing: {why}");
            return;
        }
    };
    let address = broker.address(&shared);
    let address_for_report = address.clone();
    let ns = namespace("restart");
    let kafka = || {
        let mut config = KafkaConfig::new(&address);
        // librdkafka's own debug contexts (`cgrp,consumer,...`) when asked for.
        if let Ok(debug) = std::env::var("TIDINGS_KAFKA_DEBUG") {
            config = config.property("debug", debug);
        }
        Kafka::new(
            config
                .partitions(3)
                .message_timeout(Duration::from_secs(120))
                // tansu 0.6 (SQLite storage) answers every produce of an idempotent
                // producer that outlived a broker restart with UNKNOWN_SERVER_ERROR; Kafka
                // keeps producer state across restarts. Plain acks=all publishing here.
                .idempotence(false),
        )
        .unwrap()
    };

    let handled: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let h = handled.clone();
    let catalog =
        Bus::builder("catalog")
            .transport(kafka())
            .namespace(&ns)
            .subscribe(Subscription::to::<Lending>().concurrency(4).on(
                move |e: Note, _cx: Context| {
                    let h = h.clone();
                    async move {
                        *h.lock().unwrap().entry(e.n).or_default() += 1;
                        Ok::<(), HandlerError>(())
                    }
                },
            ))
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

    // Thousands of events from many publishers, the broker restarted once while they
    // publish: at a few hundred the consumer recovered, at twenty thousand it did not.
    // 5,000 keeps the run within minutes: tansu's SQLite storage slows down as it grows,
    // and a 20,000-event run took from 2.5 to over 17 minutes on this machine.
    const N: u64 = 5_000;
    const PUBLISHERS: u64 = 16;
    const BATCH: usize = 8;
    let confirmed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let lending = Arc::new(lending);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (c, lending) = (confirmed.clone(), lending.clone());
            tokio::spawn(async move {
                let mut failures = 0;
                let mine: Vec<u64> = (p..N).step_by(PUBLISHERS as usize).collect();
                for batch in mine.chunks(BATCH) {
                    // A publish that fails while the broker is away is tried again (the
                    // events that did arrive arrive twice: at-least-once allows it).
                    loop {
                        match lending
                            .publish_batch(batch.iter().map(|&n| Note { n }))
                            .await
                        {
                            Ok(_) => break,
                            Err(e) => {
                                failures += 1;
                                assert!(failures < 400, "publishing keeps failing: {e}");
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                        }
                    }
                    c.lock().unwrap().extend(batch.iter().copied());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().unwrap().len() < (N / 3) as usize {
        assert!(Instant::now() < deadline, "publishing did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = handled.lock().unwrap().len();
    let restarting = Instant::now();
    // Kept until the end of the test: dropping a private broker stops it.
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    println!(
        "restarted the broker after {before} events were handled; it was away for {:?}",
        restarting.elapsed()
    );

    for p in publishers {
        tokio::time::timeout(Duration::from_secs(300), p)
            .await
            .expect("publishing did not finish within 5 minutes of the restart")
            .unwrap();
    }
    let lending = Arc::into_inner(lending).expect("the publishers are done");
    let published = Instant::now();
    let deadline = published + Duration::from_secs(120);
    loop {
        let missing: Vec<u64> = {
            let handled = handled.lock().unwrap();
            confirmed
                .lock()
                .unwrap()
                .iter()
                .filter(|n| !handled.contains_key(n))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        if published.elapsed().as_secs().is_multiple_of(10)
            && published.elapsed().subsec_millis() < 100
        {
            println!(
                "{:?} after the last publish: {} confirmed events not handled yet",
                published.elapsed(),
                missing.len()
            );
        }
        if Instant::now() >= deadline {
            let (topic, group) = (
                format!("{ns}.lending"),
                format!("{ns}.catalog.{ns}.lending"),
            );
            let report = tokio::task::spawn_blocking(move || {
                where_the_records_are(&address_for_report, &topic, &group)
            })
            .await
            .unwrap();
            panic!(
                "{} confirmed events never handled after the restart: {:?}\n{report}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let twice = handled.lock().unwrap().values().filter(|c| **c > 1).count();
    println!(
        "all {} confirmed events of {N} handled, {:?} after the last publish; {twice} handled more than once (at-least-once allows it)",
        confirmed.lock().unwrap().len(),
        published.elapsed()
    );
    catalog.shutdown().await;
    lending.shutdown().await;
    drop(broker);
}

/// For a failure: per partition, the broker's watermarks, the group's committed offset,
/// and how many records a raw rdkafka consumer reads from that offset on: records the
/// broker still serves past the commit point mean the consumer, not the broker, is at
/// fault.
fn where_the_records_are(address: &str, topic: &str, group: &str) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let committed = common::committed(address, group, topic, 3);
    let raw: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", format!("raw-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut out = String::new();
    for (partition, commit) in committed {
        let (low, high) = raw
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap_or((-1, -1));
        let from = commit.unwrap_or(low.max(0));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .unwrap();
        raw.assign(&tpl).unwrap();
        let mut read = 0;
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(_)) = raw.poll(Duration::from_millis(100)) {
                read += 1;
                quiet = Instant::now();
            }
        }
        out.push_str(&format!(
            "partition {partition}: watermarks {low}..{high}, committed {commit:?}, a raw consumer reads {read} records from the commit point\n"
        ));
    }
    out
}
