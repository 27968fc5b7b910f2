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

extern crate tidings_core as tidings;

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
    let ns = namespace("restart");
    let kafka = || {
        Kafka::new(
            KafkaConfig::new(&address)
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

    const N: u64 = 300;
    let confirmed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let c = confirmed.clone();
    let publisher = tokio::spawn(async move {
        let mut failures = 0;
        for n in 0..N {
            // A publish that fails while the broker is away is tried again.
            loop {
                match lending.publish(Note { n }).await {
                    Ok(_) => break,
                    Err(e) => {
                        failures += 1;
                        assert!(failures < 200, "publishing keeps failing: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
            c.lock().unwrap().insert(n);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lending
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().unwrap().len() < (N / 3) as usize {
        assert!(Instant::now() < deadline, "publishing did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = handled.lock().unwrap().len();
    // Kept until the end of the test: dropping a private broker stops it.
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    println!("restarted the broker after {before} events were handled");

    let lending = publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
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
        assert!(
            Instant::now() < deadline,
            "{} confirmed events never handled after the restart: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let twice = handled.lock().unwrap().values().filter(|c| **c > 1).count();
    println!("all {N} events handled; {twice} handled more than once (at-least-once allows it)");
    catalog.shutdown().await;
    lending.shutdown().await;
    drop(broker);
}
