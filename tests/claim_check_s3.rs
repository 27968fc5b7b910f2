//! The claim check on an S3-compatible store: moto in server mode, started by
//! `scripts/test` (`scripts/services/moto.sh`), at `TIDINGS_S3_URL`. Unset: the test prints
//! a line and returns; set but unreachable: it fails.
#![cfg(feature = "claim-check-s3")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::object_store::aws::AmazonS3Builder;
use tidings::object_store::path::Path;
use tidings::object_store::{ObjectStore, ObjectStoreExt};
use tidings::transport::wire::CLAIM_CHECK;
use tidings::{Bus, ClaimCheck, Context, Event, HandlerError, Memory, Subscription, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(name = "archive.scan-stored", version = 1)]
struct ScanStored {
    book: String,
    pages: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "archive")]
enum ArchiveEvents {
    ScanStored(ScanStored),
}

/// Create `bucket` with a bare path-style `PUT` (moto takes any credentials).
async fn create_bucket(url: &str, bucket: &str) {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("TIDINGS_S3_URL={url} is set but unreachable: {e}"));
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {}",
        response.lines().next().unwrap_or_default()
    );
}

#[tokio::test]
async fn a_large_event_travels_through_s3_and_is_swept() {
    let Ok(url) = std::env::var("TIDINGS_S3_URL") else {
        println!("skipped: TIDINGS_S3_URL is not set (scripts/services/moto.sh start)");
        return;
    };
    let bucket = format!("tidings-{}", uuid::Uuid::new_v4().simple());
    create_bucket(&url, &bucket).await;
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&url)
            .with_allow_http(true)
            .with_bucket_name(&bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("an S3 store on moto"),
    );
    let claim_check = ClaimCheck::new(store.clone()).prefix("scans");

    let transport = Memory::new();
    let handled: Arc<Mutex<Vec<(ScanStored, bool)>>> = Arc::default();
    let subscriber = Bus::builder("reader")
        .transport(transport.clone())
        .claim_check(claim_check.clone())
        .subscribe(
            Subscription::to::<ArchiveEvents>()
                .with_shared_state(handled.clone())
                .on(
                    |e: ScanStored, cx: Context<Mutex<Vec<(ScanStored, bool)>>>| async move {
                        let claimed = cx.envelope().header(CLAIM_CHECK).is_some();
                        cx.state().lock().unwrap().push((e, claimed));
                        Ok::<(), HandlerError>(())
                    },
                ),
        )
        .build()
        .await
        .expect("the subscriber");
    let publisher = Bus::builder("archive")
        .transport(transport)
        .publishes::<ArchiveEvents>()
        .claim_check(claim_check.clone())
        .build()
        .await
        .expect("the publisher");

    let scan = ScanStored {
        book: "b-1".into(),
        pages: "p".repeat(5 * 1024 * 1024),
    };
    let id = publisher
        .publish(scan.clone())
        .await
        .expect("publishing 5 MiB");
    let location = Path::from(format!("scans/{id}"));
    assert!(
        store.head(&location).await.is_ok(),
        "nothing stored at {location}"
    );

    for _ in 0..300 {
        if !handled.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = handled.lock().unwrap().clone();
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
