//! What the claim-check tests share: the archive's contract and its publisher and reader
//! on the memory transport (the outbox test, `claim_check.rs`), and the round trip of a
//! 5 MiB event through a real object store, then swept (S3 on moto, Azure Blob on
//! Azurite).

#![allow(unreachable_pub)]
// Each test binary uses its part of the module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::object_store::path::Path;
use tidings::object_store::{ObjectStore, ObjectStoreExt};
use tidings::transport::wire::CLAIM_CHECK;
use tidings::{Bus, ClaimCheck, Context, Event, HandlerError, Memory, Subscription, Topic};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(name = "archive.scan-stored", version = 1)]
pub struct ScanStored {
    pub book: String,
    pub pages: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "archive")]
pub enum ArchiveEvents {
    ScanStored(ScanStored),
}

/// What the reader handled: the event, and whether it came by claim check.
pub type Seen = Mutex<Vec<(ScanStored, bool)>>;

/// The subscriber, recording what it handles into `seen`.
pub async fn reader(transport: &Memory, claim_check: ClaimCheck, seen: &Arc<Seen>) -> Bus {
    Bus::builder("reader")
        .transport(transport.clone())
        .claim_check(claim_check)
        .subscribe(
            Subscription::to::<ArchiveEvents>()
                .with_shared_state(seen.clone())
                .on(|e: ScanStored, cx: Context<Seen>| async move {
                    let claimed = cx.envelope().header(CLAIM_CHECK).is_some();
                    cx.state().lock().unwrap().push((e, claimed));
                    Ok::<(), HandlerError>(())
                }),
        )
        .build()
        .await
        .expect("the subscriber")
}

/// The publisher.
pub async fn archive(transport: &Memory, claim_check: ClaimCheck) -> Bus {
    Bus::builder("archive")
        .transport(transport.clone())
        .publishes::<ArchiveEvents>()
        .claim_check(claim_check)
        .build()
        .await
        .expect("the publisher")
}

/// Wait up to 30 s until `seen` holds `n` events.
pub async fn seen_until(seen: &Seen, n: usize) -> Vec<(ScanStored, bool)> {
    for _ in 0..300 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.lock().unwrap().clone()
}

/// A 5 MiB event published with a claim check on `store` (prefix `scans`) is stored at
/// `scans/<id>`, handled once exactly as published and by claim check; a sweep keeps the
/// fresh payload, and a sweep past a retention of zero deletes it.
pub async fn round_trip_and_sweep(store: Arc<dyn ObjectStore>) {
    let claim_check = ClaimCheck::new(store.clone()).prefix("scans");
    let transport = Memory::new();
    let seen: Arc<Seen> = Arc::default();
    let subscriber = reader(&transport, claim_check.clone(), &seen).await;
    let publisher = archive(&transport, claim_check.clone()).await;

    let scan = ScanStored {
        book: "b-1".into(),
        pages: "p".repeat(5 * 1024 * 1024),
    };
    let id = publisher
        .publish(scan.clone())
        .await
        .expect("publishing 5 MiB");
    let location = Path::from(format!("scans/{id}"));
    let stored = store
        .head(&location)
        .await
        .unwrap_or_else(|e| panic!("nothing stored at {location}: {e}"));
    assert!(
        stored.size > 5 * 1024 * 1024,
        "{location} holds {} bytes",
        stored.size
    );

    let seen = seen_until(&seen, 1).await;
    assert_eq!(seen.len(), 1, "the event should be handled once");
    assert!(seen[0].0 == scan, "the event arrived changed");
    assert!(seen[0].1, "the event did not come by claim check");

    // Fresh: kept. Past a retention of zero: swept.
    assert_eq!(claim_check.sweep().await.expect("sweeping"), 0);
    let swept = claim_check.clone().retention(Duration::ZERO).sweep().await;
    assert_eq!(swept.expect("sweeping"), 1);
    assert!(
        store.head(&location).await.is_err(),
        "{location} survived the sweep"
    );

    publisher.shutdown().await;
    subscriber.shutdown().await;
}
