//! The claim check against the local filesystem: check-in, restore, the refusals, the
//! sweep.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{check_in, restore, ClaimCheck};
use crate::claim_check::{Claims, CLAIM_CHECK, CLAIM_CHECK_SHA256, CLAIM_CHECK_SIZE};
use crate::envelope::Envelope;
use crate::subscription::Failure;

fn claims(dir: &tempfile::TempDir) -> Claims {
    Some(Arc::new(
        ClaimCheck::local(dir.path())
            .unwrap()
            .threshold(1024)
            .prefix("claims"),
    ))
}

fn envelope(size: usize) -> Envelope {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    Envelope::new("test.big", 1, "tests", "application/msgpack", payload)
}

async fn checked_in(claims: &Claims, size: usize) -> (Envelope, Envelope) {
    let original = envelope(size);
    let mut sent = [original.clone()];
    check_in(claims, 1 << 20, &mut sent).await.unwrap();
    let [sent] = sent;
    (original, sent)
}

async fn restored(claims: &Claims, sent: Envelope) -> Result<Envelope, String> {
    let mut out = None;
    match restore(claims, &Arc::new(sent.clone()), &mut out).await {
        Ok(()) => Ok(out.map(|e| Envelope::clone(&e)).unwrap_or(sent)),
        Err(Failure::Poison(e)) => Err(format!("poison: {e}")),
        Err(Failure::Handler(e)) => Err(format!("transient: {e}")),
    }
}

#[tokio::test]
async fn a_large_payload_round_trips_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims(&dir);
    let (original, sent) = checked_in(&claims, 5000).await;
    assert!(sent.payload.is_empty(), "the payload should be left out");
    let location = format!("claims/{}", original.id);
    assert_eq!(sent.header(CLAIM_CHECK), Some(location.as_str()));
    assert_eq!(sent.header(CLAIM_CHECK_SIZE), Some("5000"));
    assert_eq!(sent.header(CLAIM_CHECK_SHA256).map(str::len), Some(64));
    let back = restored(&claims, sent).await.unwrap();
    assert_eq!(back.payload, original.payload);
    assert_eq!(back.id, original.id);
}

#[tokio::test]
async fn a_small_payload_travels_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims(&dir);
    let (original, sent) = checked_in(&claims, 100).await;
    assert_eq!(sent.payload, original.payload);
    assert_eq!(sent.header(CLAIM_CHECK), None);
}

#[tokio::test]
async fn missing_and_corrupt_payloads_are_poison_naming_the_location() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims(&dir);
    let store = claims.as_ref().unwrap().store().clone();

    let (original, sent) = checked_in(&claims, 5000).await;
    let path = Path::from(format!("claims/{}", original.id));
    let mut corrupt = original.payload.to_vec();
    corrupt[10] ^= 1;
    store.put(&path, corrupt.into()).await.unwrap();
    let error = restored(&claims, sent.clone()).await.unwrap_err();
    assert!(
        error.starts_with("poison:") && error.contains(path.as_ref()) && error.contains("SHA-256"),
        "{error}"
    );

    store
        .put(&path, original.payload[..100].to_vec().into())
        .await
        .unwrap();
    let error = restored(&claims, sent.clone()).await.unwrap_err();
    assert!(
        error.starts_with("poison:") && error.contains("100 bytes"),
        "{error}"
    );

    store.delete(&path).await.unwrap();
    let error = restored(&claims, sent.clone()).await.unwrap_err();
    assert!(
        error.starts_with("poison:") && error.contains(path.as_ref()) && error.contains("missing"),
        "{error}"
    );

    let error = restored(&None, sent).await.unwrap_err();
    assert!(error.contains("no claim check configured"), "{error}");
}

#[tokio::test]
async fn a_reference_outside_the_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims(&dir);
    let (_, mut sent) = checked_in(&claims, 5000).await;
    for (name, value) in &mut sent.headers {
        if name == CLAIM_CHECK {
            *value = "secrets/key".to_string();
        }
    }
    let error = restored(&claims, sent).await.unwrap_err();
    assert!(
        error.starts_with("poison:") && error.contains("secrets/key") && error.contains("prefix"),
        "{error}"
    );
}

#[tokio::test]
async fn the_sweep_deletes_only_what_is_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let keep = ClaimCheck::local(dir.path())
        .unwrap()
        .prefix("claims")
        .retention(Duration::from_secs(3600));
    let claims = claims(&dir);
    let (original, _) = checked_in(&claims, 5000).await;
    let path = Path::from(format!("claims/{}", original.id));
    // Something outside the prefix is never touched.
    let other = Path::from("elsewhere/file");
    keep.store()
        .put(&other, b"x".to_vec().into())
        .await
        .unwrap();

    assert_eq!(keep.sweep().await.unwrap(), 0);
    assert!(
        keep.store().head(&path).await.is_ok(),
        "a fresh payload was swept"
    );

    let now = keep.clone().retention(Duration::ZERO);
    assert_eq!(now.sweep().await.unwrap(), 1);
    assert!(matches!(
        now.store().head(&path).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(
        now.store().head(&other).await.is_ok(),
        "the sweep deleted outside its prefix"
    );
}
