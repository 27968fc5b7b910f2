//! The claim check on Azure Blob storage: Azurite's blob service, started by
//! `scripts/test` (`scripts/services/azurite.sh`), at `TIDINGS_AZURE_BLOB_URL` (the account
//! URL, `http://127.0.0.1:10000/devstoreaccount1`). Unset: the tests print a line and
//! return; set but unreachable: they fail.
#![cfg(feature = "claim-check-azure")]

mod claim_store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use claim_store::{archive, reader, seen_until, ArchiveEvents, ScanStored, Seen};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tidings::object_store::azure::MicrosoftAzureBuilder;
use tidings::object_store::ObjectStore;
use tidings::{ClaimCheck, Memory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Azurite's well-known development account key, published in Microsoft's Azurite
/// documentation (not a secret).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `TIDINGS_AZURE_BLOB_URL`, or `None` after printing why the test is skipped.
fn blob_url() -> Option<String> {
    match std::env::var("TIDINGS_AZURE_BLOB_URL") {
        Ok(url) => Some(url.trim_end_matches('/').to_string()),
        Err(_) => {
            println!(
                "skipped: TIDINGS_AZURE_BLOB_URL is not set (scripts/services/azurite.sh start)"
            );
            None
        }
    }
}

/// The account: the last segment of the URL's path (Azurite's URLs are path-style).
fn account(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// A container operation (`PUT` creates, `DELETE` deletes) as a bare HTTP request signed
/// with the account's shared key (object_store has no call for containers); returns the
/// status code. Panics when nothing answers at `url`.
async fn container(url: &str, method: &str, name: &str) -> u16 {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("TIDINGS_AZURE_BLOB_URL={url} is not an http:// URL"));
    let (address, base) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{base}/{name}");
    let date = httpdate::fmt_http_date(SystemTime::now());
    let version = "2021-08-06";
    // https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key:
    // verb, eleven empty standard headers (Content-Length is empty when 0), the x-ms-
    // headers, then the account, the path and the query parameters.
    let to_sign = format!(
        "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{}{path}\nrestype:container",
        account(url)
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("TIDINGS_AZURE_BLOB_URL={url} is set but unreachable: {e}"));
    let request = format!(
        "{method} {path}?restype=container HTTP/1.1\r\nHost: {address}\r\n\
         x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
         Authorization: SharedKey {}:{signature}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        account(url)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default();
    status
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} container {name}: not an HTTP answer: {status}"))
}

/// A container of its own (deleted when dropped) and an object_store store on it.
struct Container {
    url: String,
    name: String,
    store: Arc<dyn ObjectStore>,
}

impl Container {
    async fn new(url: &str) -> Self {
        let name = format!("tidings-{}", uuid::Uuid::new_v4().simple());
        let status = container(url, "PUT", &name).await;
        assert_eq!(status, 201, "creating container {name}");
        let store = MicrosoftAzureBuilder::new()
            .with_endpoint(url.to_string())
            .with_allow_http(true)
            .with_account(account(url))
            .with_access_key(AZURITE_KEY)
            .with_container_name(&name)
            .build()
            .expect("an Azure Blob store on Azurite");
        Container {
            url: url.to_string(),
            name,
            store: Arc::new(store),
        }
    }

    /// Delete the container, with whatever is left in it.
    async fn delete(self) {
        let status = container(&self.url, "DELETE", &self.name).await;
        assert_eq!(status, 202, "deleting container {}", self.name);
    }
}

#[tokio::test]
async fn a_large_event_travels_through_azure_blob_and_is_swept() {
    let Some(url) = blob_url() else { return };
    let container = Container::new(&url).await;
    claim_store::round_trip_and_sweep(container.store.clone()).await;
    container.delete().await;
}

/// A reference to a blob the subscriber's container does not hold (Azurite answers 404)
/// is dead-lettered at once naming the location; the next event is handled.
#[tokio::test]
async fn a_payload_missing_from_azure_blob_is_dead_lettered() {
    let Some(url) = blob_url() else { return };
    let elsewhere = Container::new(&url).await;
    let here = Container::new(&url).await;
    let claim_check = |c: &Container| ClaimCheck::new(c.store.clone()).prefix("scans");

    let transport = Memory::new();
    let seen: Arc<Seen> = Arc::default();
    let subscriber = reader(&transport, claim_check(&here), &seen).await;
    let astray = archive(&transport, claim_check(&elsewhere).threshold(1024)).await;
    let sound = archive(&transport, claim_check(&here).threshold(1024)).await;

    let scan = |book: &str| ScanStored {
        book: book.into(),
        pages: "p".repeat(64 * 1024),
    };
    let missing = astray.publish(scan("b-1")).await.expect("publishing b-1");
    sound.publish(scan("b-2")).await.expect("publishing b-2");

    let seen = seen_until(&seen, 1).await;
    let books: Vec<&str> = seen.iter().map(|(e, _)| e.book.as_str()).collect();
    assert_eq!(books, ["b-2"], "only b-2 should reach the handler");
    assert!(seen[0].1, "b-2 did not come by claim check");

    let mut dead = Vec::new();
    for _ in 0..300 {
        dead = subscriber
            .dead_letters::<ArchiveEvents>(10)
            .await
            .expect("listing dead letters");
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter expected: {dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.envelope.id, missing);
    let reason = &letter.info.reason;
    assert!(
        reason.contains(&format!("scans/{missing}")) && reason.contains("missing"),
        "the reason should name the location `scans/{missing}` and say `missing`: {reason}"
    );
    assert_eq!(letter.info.attempts, 0, "the missing payload was retried");

    for bus in [astray, sound, subscriber] {
        bus.shutdown().await;
    }
    elsewhere.delete().await;
    here.delete().await;
}
