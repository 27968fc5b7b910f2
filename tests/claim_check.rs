//! The claim check through the outbox: a 5 MiB event enqueued in a transaction is stored
//! whole in the outbox row and claim-checked when the relay publishes it through the bus.
#![cfg(all(feature = "claim-check", feature = "outbox-sqlite", feature = "memory"))]

mod claim_store;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use claim_store::{archive, reader, seen_until, ArchiveEvents, ScanStored, Seen};
use tidings::outbox::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tidings::outbox::{Outbox, RelayConfig};
use tidings::{Bus, ClaimCheck, ErrorKind, Memory};

/// A directory of its own in the temp dir, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("tidings-claims-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_claim_checks_what_the_outbox_stored_whole() {
    let dir = Dir::new();
    let db = dir.path().join("outbox.db");
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone()).await.unwrap();
    let claim_check = || ClaimCheck::local(dir.path()).unwrap().prefix("scans");

    let transport = Memory::new();
    let seen: Arc<Seen> = Arc::default();
    let reader = reader(&transport, claim_check(), &seen).await;
    let scan = ScanStored {
        book: "b-1".into(),
        pages: "p".repeat(5 * 1024 * 1024),
    };

    // Without a claim check the outbox refuses it, as publish would.
    let plain = Bus::builder("archive")
        .transport(transport.clone())
        .publishes::<ArchiveEvents>()
        .build()
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let refused = outbox.enqueue(&mut tx, &plain, scan.clone()).await;
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(ErrorKind::MessageTooLarge)
    );
    drop(tx);

    let archive = archive(&transport, claim_check()).await;
    let mut tx = pool.begin().await.unwrap();
    let id = outbox
        .enqueue(&mut tx, &archive, scan.clone())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let relayed = outbox
        .relay_pending(&archive, &RelayConfig::default())
        .await
        .unwrap();
    assert_eq!(relayed, 1);
    assert!(
        dir.path().join("scans").join(id.to_string()).is_file(),
        "the relay did not store the payload at scans/{id}"
    );

    let seen = seen_until(&seen, 1).await;
    assert_eq!(seen.len(), 1, "the event should be handled once");
    assert!(seen[0].0 == scan, "the event arrived changed");
    assert!(seen[0].1, "the event did not come by claim check");

    for bus in [reader, plain, archive] {
        bus.shutdown().await;
    }
    pool.close().await;
}

/// The bus's sweeper deletes stored payloads past the retention by itself, and nothing
/// outside its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_sweeps_payloads_past_the_retention() {
    let dir = Dir::new();
    let stored = dir.path().join("scans").join("left-over");
    let other = dir.path().join("keep").join("this");
    for file in [&stored, &other] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"payload").unwrap();
    }
    let archive = Bus::builder("archive")
        .transport(Memory::new())
        .publishes::<ArchiveEvents>()
        .claim_check(
            ClaimCheck::local(dir.path())
                .unwrap()
                .prefix("scans")
                .retention(Duration::ZERO)
                .sweep_every(Duration::from_millis(20)),
        )
        .build()
        .await
        .unwrap();
    let mut waited = 0;
    while stored.exists() {
        assert!(waited < 300, "{} was not swept in 30 s", stored.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(other.exists(), "the sweeper deleted outside its prefix");
    archive.shutdown().await;
}
