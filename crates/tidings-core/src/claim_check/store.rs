//! The claim check on an `object_store` store: configuration, check-in on publish,
//! restore before handling, and the retention sweeper.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Claims, CLAIM_CHECK, CLAIM_CHECK_SHA256, CLAIM_CHECK_SIZE};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::HandlerError;
use crate::subscription::Failure;

/// Where payloads too large for the broker go: an [`ObjectStore`] (the local filesystem is
/// compiled in; S3-compatible stores with the feature `claim-check-s3`), set on the bus
/// with [`BusBuilder::claim_check`](crate::BusBuilder::claim_check).
///
/// An envelope whose size on the wire is over the [threshold](Self::threshold) is
/// published with its payload stored at `<prefix>/<envelope id>` and a reference in its
/// headers ([`CLAIM_CHECK`](crate::transport::wire::CLAIM_CHECK), with the size and the
/// SHA-256). A subscribing bus with a claim check on the same store and prefix fetches and
/// verifies the payload before its handler runs: the handler sees the event as published.
/// A missing or corrupt stored payload is dead-lettered at once, naming the location;
/// any other store error is a failed run, retried by the retry policy. A sweeper running
/// with the bus deletes stored payloads older than the [retention](Self::retention).
///
/// ```
/// # fn f() -> tidings_core::Result<()> {
/// use std::time::Duration;
/// use tidings_core::ClaimCheck;
///
/// let dir = std::env::temp_dir().join("tidings-claims-doc");
/// std::fs::create_dir_all(&dir).unwrap();
/// let claim_check = ClaimCheck::local(&dir)?
///     .threshold(128 * 1024)
///     .retention(Duration::from_secs(3 * 24 * 3600))
///     .prefix("lending");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClaimCheck {
    store: Arc<dyn ObjectStore>,
    threshold: Option<usize>,
    retention: Duration,
    sweep_every: Duration,
    prefix: String,
    max_payload: usize,
}

impl ClaimCheck {
    /// A claim check on `store`, with the defaults: threshold three quarters of the
    /// transport's largest message, retention 7 days, swept every hour, prefix
    /// `tidings-claims`, stored payloads up to 64 MiB.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ClaimCheck {
            store,
            threshold: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_every: Duration::from_secs(3600),
            prefix: "tidings-claims".to_string(),
            max_payload: 64 * 1024 * 1024,
        }
    }

    /// A claim check on the local directory `dir` (which must exist): for one machine,
    /// development and tests.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "claim-check directory `{}` cannot be used: {e}",
                    dir.display()
                ),
            )
        })?;
        Ok(ClaimCheck::new(Arc::new(store)))
    }

    /// Envelopes larger than `bytes` on the wire are claim-checked (default: three
    /// quarters of the transport's largest message, leaving room for headers and framing).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = Some(bytes);
        self
    }

    /// How long a stored payload is kept (default 7 days). Keep it longer than an event
    /// may wait in a queue or as a dead letter: a payload swept before its event is
    /// handled makes that event a dead letter.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How often the sweeper looks for payloads past the retention (default hourly).
    pub fn sweep_every(mut self, every: Duration) -> Self {
        self.sweep_every = every.max(Duration::from_millis(1));
        self
    }

    /// The path under which payloads are stored (default `tidings-claims`); publishers
    /// and subscribers of a topic must use the same one. A subscriber refuses references
    /// outside it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_matches('/').to_string();
        self
    }

    /// The largest payload stored or fetched, in bytes (default 64 MiB): a larger event is
    /// refused on publish as `MessageTooLarge`, and a reference to a larger one is
    /// dead-lettered. Payloads fetched from the store are bounded by this rather than by
    /// [`DecodeLimits::max_size`](crate::DecodeLimits).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the payload of the envelope with `id` is stored.
    pub fn location(&self, id: uuid::Uuid) -> String {
        if self.prefix.is_empty() {
            id.to_string()
        } else {
            format!("{}/{id}", self.prefix)
        }
    }

    /// Delete the stored payloads under the prefix older than the retention, once (the
    /// bus's sweeper calls it every [`sweep_every`](Self::sweep_every)); returns how many
    /// were deleted.
    pub async fn sweep(&self) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(self.retention)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut listed = self.store.list(prefix.as_ref());
        let mut deleted = 0;
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| store_error("listing", &self.prefix, e))?;
            if meta.last_modified.timestamp_millis() <= cutoff {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(store_error("deleting", meta.location.as_ref(), e)),
                }
            }
        }
        Ok(deleted)
    }
}

impl fmt::Debug for ClaimCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimCheck")
            .field("store", &self.store.to_string())
            .field("threshold", &self.threshold)
            .field("retention", &self.retention)
            .field("prefix", &self.prefix)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

fn store_error(doing: &str, location: &str, e: object_store::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("claim check: {doing} `{location}` in the store failed: {e}"),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The size over which `env` is refused on publish: the transport's limit, or with a claim
/// check the largest payload it stores (an envelope not checked in yet).
pub(crate) fn size_limit(claims: &Claims, env: &Envelope, max_message_size: usize) -> usize {
    match claims {
        Some(cc) if env.header(CLAIM_CHECK).is_none() => cc.max_payload.max(max_message_size),
        _ => max_message_size,
    }
}

/// Store the payload of every envelope over the threshold and replace it with a
/// reference. `max_message_size` is the transport's largest message.
pub(crate) async fn check_in(
    claims: &Claims,
    max_message_size: usize,
    envelopes: &mut [Envelope],
) -> Result<()> {
    let Some(cc) = claims else { return Ok(()) };
    let threshold = cc.threshold.unwrap_or(max_message_size / 4 * 3);
    for env in envelopes.iter_mut() {
        if env.wire_size() <= threshold || env.header(CLAIM_CHECK).is_some() {
            continue;
        }
        let location = cc.location(env.id);
        let payload = std::mem::take(&mut env.payload);
        let (size, sha) = (payload.len(), sha256_hex(&payload));
        cc.store
            .put(&Path::from(location.as_str()), payload.into())
            .await
            .map_err(|e| store_error("storing the payload at", &location, e))?;
        env.headers.push((CLAIM_CHECK.to_string(), location));
        env.headers
            .push((CLAIM_CHECK_SIZE.to_string(), size.to_string()));
        env.headers.push((CLAIM_CHECK_SHA256.to_string(), sha));
    }
    Ok(())
}

/// Put the stored payload back into a claim-checked `env`, into `restored` (once; later
/// runs reuse it). A reference that can never be fetched is `Failure::Poison` with the
/// reason; a store error is a transient handler failure.
pub(crate) async fn restore(
    claims: &Claims,
    env: &Arc<Envelope>,
    restored: &mut Option<Arc<Envelope>>,
) -> std::result::Result<(), Failure> {
    let Some(location) = env.header(CLAIM_CHECK) else {
        return Ok(());
    };
    if restored.is_some() {
        return Ok(());
    }
    let poison = |why: String| {
        Failure::Poison(Error::new(
            ErrorKind::NotFound,
            format!("claim check `{location}`: {why}"),
        ))
    };
    let Some(cc) = claims else {
        return Err(poison(
            "this bus has no claim check configured to fetch the payload from".into(),
        ));
    };
    if !cc.prefix.is_empty() && !location.starts_with(&format!("{}/", cc.prefix)) {
        return Err(poison(format!(
            "outside this bus's claim-check prefix `{}`",
            cc.prefix
        )));
    }
    let size: usize = env
        .header(CLAIM_CHECK_SIZE)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| poison(format!("no valid `{CLAIM_CHECK_SIZE}` header")))?;
    let Some(sha) = env.header(CLAIM_CHECK_SHA256) else {
        return Err(poison(format!("no `{CLAIM_CHECK_SHA256}` header")));
    };
    if size > cc.max_payload {
        return Err(poison(format!(
            "the stored payload of {size} bytes is over the claim check's max_payload of {} bytes",
            cc.max_payload
        )));
    }
    let path = Path::parse(location).map_err(|e| poison(format!("not a valid location: {e}")))?;
    let fetched = match cc.store.get(&path).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    let payload: Bytes = match fetched {
        Ok(payload) => payload,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(poison(
                "the stored payload is missing (deleted, swept after the retention, or in another store)".into(),
            ))
        }
        Err(e) => {
            return Err(Failure::Handler(HandlerError::transient(store_error(
                "fetching", location, e,
            ))))
        }
    };
    if payload.len() != size {
        return Err(poison(format!(
            "corrupt: the stored payload has {} bytes, the envelope says {size}",
            payload.len()
        )));
    }
    if !sha.eq_ignore_ascii_case(&sha256_hex(&payload)) {
        return Err(poison(
            "corrupt: the stored payload's SHA-256 does not match the envelope's".into(),
        ));
    }
    let mut whole = Envelope::clone(env);
    whole.payload = payload;
    *restored = Some(Arc::new(whole));
    Ok(())
}

/// The retention sweeper of a bus: sweeps at once and then every `sweep_every` until
/// shutdown; a failed sweep is logged and tried at the next turn.
pub(crate) async fn sweeper(cc: Arc<ClaimCheck>, shutdown: CancellationToken) {
    loop {
        match cc.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(deleted = n, prefix = %cc.prefix, "claim check: swept stored payloads past the retention")
            }
            Err(error) => {
                tracing::warn!(%error, "claim check: sweeping stored payloads failed; trying again later")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cc.sweep_every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
