//! PostgreSQL only, when `TIDINGS_POSTGRES_URL` is set: several relays of one service on
//! one database, and `LISTEN` wake-ups across processes.
#![allow(missing_docs)]
#![cfg(feature = "postgres")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::suite::*;
use common::*;
use tidings_memory::Memory;
use tidings_outbox::{Outbox, RelayConfig};
use uuid::Uuid;

async fn two_relays(exclusive: bool) {
    let test = if exclusive {
        "two_exclusive_relays"
    } else {
        "two_sharing_relays"
    };
    let Some(pool_a) = common::postgres::pool(test).await else {
        return;
    };
    let pool_b = common::postgres::pool(test).await.unwrap();
    let prefix = unique("t");
    let _cleanup = Cleanup {
        sqlite_file: None,
        postgres_prefix: Some(prefix.clone()),
    };
    let outbox_a = Outbox::builder(pool_a.clone())
        .table_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let outbox_b = Outbox::builder(pool_b.clone())
        .table_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let hub = Memory::new();
    let (observer, log) = recorder(&hub).await;
    // Two instances of the lending service, each with its own pool and relay; their
    // transports count what each relay published.
    let (transport_a, transport_b) = (Switchable::new(hub.clone()), Switchable::new(hub.clone()));
    let (published_a, published_b) = (transport_a.published.clone(), transport_b.published.clone());
    let config = fast().batch_size(8).exclusive(exclusive);
    let lending_a = lending_with_relay(transport_a, &outbox_a, config.clone()).await;
    let lending_b = lending_with_relay(transport_b, &outbox_b, config).await;
    for chunk in 0..20u32 {
        let mut tx = pool_a.begin().await.unwrap();
        outbox_a
            .enqueue_batch(
                &mut tx,
                &lending_a,
                (chunk * 25..chunk * 25 + 25).map(|n| BookBorrowed {
                    book: "m".into(),
                    n,
                }),
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    eventually("500 events arrive", || async {
        log.lock().unwrap().len() >= 500
    })
    .await;
    eventually("the outbox is drained", || async {
        outbox_a.counts(None).await.unwrap().pending == 0
    })
    .await;
    hub.idle().await;
    let seen = log.lock().unwrap().clone();
    let ids: HashSet<Uuid> = seen.iter().map(|s| s.id).collect();
    assert_eq!(seen.len(), 500, "a row was published twice");
    assert_eq!(ids.len(), 500);
    let (published_a, published_b) = (
        published_a.load(Ordering::SeqCst),
        published_b.load(Ordering::SeqCst),
    );
    assert!(
        published_a > 0 && published_b > 0 || exclusive,
        "both relays worked"
    );
    assert_eq!(published_a + published_b, 500);
    if exclusive {
        assert_eq!(
            ns(&log),
            (0..500).collect::<Vec<_>>(),
            "exclusive relays keep the order"
        );
    }
    lending_a.shutdown().await;
    lending_b.shutdown().await;
    observer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exclusive_relays_never_publish_a_row_twice_and_keep_the_order() {
    two_relays(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sharing_relays_never_publish_a_row_twice() {
    two_relays(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_another_process_wakes_the_relay_through_listen() {
    let test = "a_commit_in_another_process_wakes_the_relay_through_listen";
    let Some(pool_a) = common::postgres::pool(test).await else {
        return;
    };
    let pool_b = common::postgres::pool(test).await.unwrap();
    let prefix = unique("t");
    let _cleanup = Cleanup {
        sqlite_file: None,
        postgres_prefix: Some(prefix.clone()),
    };
    let outbox_a = Outbox::builder(pool_a.clone())
        .table_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    // Another process: its own pool and outbox (so its in-process wake-up cannot reach
    // the relay).
    let outbox_b = Outbox::builder(pool_b.clone())
        .table_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let hub = Memory::new();
    let (observer, log) = recorder(&hub).await;
    let lending = lending_bus(hub.clone()).await;
    let enqueue = |n: u32| {
        let (pool_b, outbox_b, lending) = (pool_b.clone(), outbox_b.clone(), lending.clone());
        async move {
            let mut tx = pool_b.begin().await.unwrap();
            outbox_b
                .enqueue(
                    &mut tx,
                    &lending,
                    BookBorrowed {
                        book: "l".into(),
                        n,
                    },
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    enqueue(1).await;
    // Polls once an hour: only NOTIFY can bring the second event in time.
    let relay = lending_with_relay(
        hub.clone(),
        &outbox_a,
        RelayConfig::default().poll_interval(Duration::from_secs(3600)),
    )
    .await;
    eventually("the first event arrives", || async {
        !log.lock().unwrap().is_empty()
    })
    .await;
    // Let the relay's short look-again phase after that batch pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    enqueue(2).await;
    eventually("the second event arrives without polling", || async {
        log.lock().unwrap().len() >= 2
    })
    .await;
    assert_eq!(ns(&log), vec![1, 2]);
    relay.shutdown().await;
    observer.shutdown().await;
}
