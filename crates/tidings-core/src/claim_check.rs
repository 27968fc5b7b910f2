//! Claim check: a payload too large for the broker goes to an object store and travels as
//! a reference, checked in on publish and fetched back before the handler runs (feature
//! `claim-check`). Without the feature the hooks the bus calls do nothing.
//!
//! The rules, the same on every transport:
//! - publish: an envelope whose wire size is over the threshold has its payload put at
//!   `<prefix>/<envelope id>`; the envelope carries [`CLAIM_CHECK`] (the location),
//!   [`CLAIM_CHECK_SIZE`] and [`CLAIM_CHECK_SHA256`] and an empty payload;
//! - consume: the payload is fetched and checked (size and SHA-256) before decoding; a
//!   missing object, a mismatch, or a location outside the prefix is dead-lettered at
//!   once with a reason naming the location; any other store error is a failed run,
//!   retried by the subscription's retry policy;
//! - retention: a sweeper running with the bus deletes objects under the prefix older
//!   than the retention.

#[cfg(feature = "claim-check")]
mod store;

#[cfg(feature = "claim-check")]
pub use store::ClaimCheck;
#[cfg(feature = "claim-check")]
pub(crate) use store::{check_in, restore, size_limit, sweeper};

/// The header of a claim-checked envelope naming where its payload is stored.
pub const CLAIM_CHECK: &str = "tidings-claim-check";
/// The header of a claim-checked envelope with the stored payload's size in bytes.
pub const CLAIM_CHECK_SIZE: &str = "tidings-claim-check-size";
/// The header of a claim-checked envelope with the stored payload's SHA-256, lower-case
/// hex.
pub const CLAIM_CHECK_SHA256: &str = "tidings-claim-check-sha256";

/// What a bus and its consumers keep of the claim-check configuration.
#[cfg(feature = "claim-check")]
pub(crate) type Claims = Option<std::sync::Arc<ClaimCheck>>;
/// Without the feature there is nothing to keep.
#[cfg(not(feature = "claim-check"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims;

#[cfg(not(feature = "claim-check"))]
mod disabled {
    use std::sync::Arc;

    use super::Claims;
    use crate::envelope::Envelope;
    use crate::error::Result;
    use crate::subscription::Failure;

    pub(crate) async fn check_in(_: &Claims, _: usize, _: &mut [Envelope]) -> Result<()> {
        Ok(())
    }

    pub(crate) async fn restore(
        _: &Claims,
        _: &Arc<Envelope>,
        _: &mut Option<Arc<Envelope>>,
    ) -> std::result::Result<(), Failure> {
        Ok(())
    }

    pub(crate) fn size_limit(_: &Claims, _: &Envelope, max_message_size: usize) -> usize {
        max_message_size
    }
}

#[cfg(not(feature = "claim-check"))]
pub(crate) use disabled::{check_in, restore, size_limit};
