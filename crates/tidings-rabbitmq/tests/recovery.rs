//! Recovery for real: the RabbitMQ server restarts in the middle of a stream of events;
//! publishers and consumers reconnect by themselves, the topology is declared again, and
//! every event is handled at least once; events scheduled before the restart are handled
//! after it, none before its time. Needs `TIDINGS_RABBITMQ_URL` and
//! `TIDINGS_RABBITMQ_CTL` (a command supporting `restart`, e.g.
//! `scripts/services/rabbitmq.sh`). The only test of its binary, so the restart hits no
//! other test.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tidings_core::{Bus, Context, HandlerError, PublishOptions, Subscription};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

use common::{eventually, namespace, OrderEvents, OrderPlaced, Seen};

/// Thousands of events, from several publishers at once, so the restart hits a stream
/// under load with many messages in flight.
const EVENTS: u64 = 4000;
const PUBLISHERS: u64 = 4;

/// Scheduled events handled before their time (must stay 0).
static EARLY: AtomicUsize = AtomicUsize::new(0);

/// Events scheduled just before the restart, to be handled after it.
const SCHEDULED: u64 = 20;

async fn record(e: OrderPlaced, cx: Context<Seen>) -> Result<(), HandlerError> {
    if let Ok(Some(at)) = tidings_core::transport::deliver_at(cx.envelope()) {
        if SystemTime::now() < at {
            EARLY.fetch_add(1, Ordering::Relaxed);
        }
    }
    cx.state().record(e.n, cx.attempt(), cx.redelivered());
    Ok(())
}

async fn restart_broker(ctl: &str) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{ctl} restart"))
        .status()
        .await
        .expect("running TIDINGS_RABBITMQ_CTL");
    assert!(status.success(), "`{ctl} restart` failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let Some(url) = common::url() else { return };
    let Ok(ctl) = std::env::var("TIDINGS_RABBITMQ_CTL") else {
        println!("skipped: TIDINGS_RABBITMQ_CTL is not set (scripts/test sets it)");
        return;
    };
    let ns = namespace();
    // Generous deadlines: a publish waits through the whole restart.
    let config = RabbitMqConfig::new(&url).publish_timeout(Duration::from_secs(180));
    let consuming = RabbitMq::new(config.clone().connection_name("recovery-consumer"));
    let publishing = RabbitMq::new(config.connection_name("recovery-publisher"));

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

    // Steady streams of single publishes, each awaited: none may fail or vanish.
    let streams: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let shop = shop.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for n in (p..EVENTS).step_by(PUBLISHERS as usize) {
                    if let Err(e) = shop.publish(OrderPlaced { n }).await {
                        failures.push((n, e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failures
            })
        })
        .collect();

    eventually(Duration::from_secs(60), "the stream under way", || {
        seen.distinct() as u64 >= EVENTS / 4
    })
    .await;
    // Scheduled events waiting in the wait queues while the broker restarts (3 to 13 s
    // ahead; the restart takes about 10 s): durable, they are handled after it, none early.
    for i in 0..SCHEDULED {
        shop.publish_with(
            OrderPlaced { n: EVENTS + 1 + i },
            PublishOptions::new().deliver_after(Duration::from_millis(3000 + 500 * i)),
        )
        .await
        .expect("scheduling an order before the restart");
    }
    let before = (
        consuming.connection_generation(),
        publishing.connection_generation(),
    );
    restart_broker(&ctl).await;
    println!(
        "broker restarted after {} events were handled",
        seen.distinct()
    );

    let mut failures = Vec::new();
    for stream in streams {
        failures.extend(stream.await.expect("publisher task"));
    }
    assert!(
        failures.is_empty(),
        "publishes failed across the restart: {failures:?}"
    );
    eventually(
        Duration::from_secs(120),
        "every event handled after the restart",
        || seen.missing(EVENTS).is_empty(),
    )
    .await;
    assert!(seen.missing(EVENTS).is_empty());
    assert!(
        consuming.connection_generation() > before.0
            && publishing.connection_generation() > before.1,
        "both transports reconnected: before {before:?}, after ({}, {})",
        consuming.connection_generation(),
        publishing.connection_generation()
    );
    println!(
        "handled {} distinct events in {} runs (duplicates are allowed: at least once)",
        seen.distinct(),
        seen.total()
    );

    eventually(
        Duration::from_secs(120),
        "every order scheduled before the restart handled after it",
        || (EVENTS + 1..=EVENTS + SCHEDULED).all(|n| !seen.runs(n).is_empty()),
    )
    .await;
    assert_eq!(
        EARLY.load(Ordering::Relaxed),
        0,
        "scheduled orders were handled before their time"
    );

    // Topology was declared again: a new subscriber-side event still flows.
    shop.publish(OrderPlaced { n: EVENTS })
        .await
        .expect("publishing after recovery");
    eventually(Duration::from_secs(30), "an event after recovery", || {
        !seen.runs(EVENTS).is_empty()
    })
    .await;
    shop.teardown().await.unwrap();
    catalog.teardown().await.unwrap();
}
