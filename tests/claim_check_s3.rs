//! The claim check on an S3-compatible store: moto in server mode, started by
//! `scripts/test` (`scripts/services/moto.sh`), at `TIDINGS_S3_URL`. Unset: the test prints
//! a line and returns; set but unreachable: it fails.
#![cfg(feature = "claim-check-s3")]

mod claim_store;

use std::sync::Arc;

use tidings::object_store::aws::AmazonS3Builder;
use tidings::object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    claim_store::round_trip_and_sweep(store).await;
}
