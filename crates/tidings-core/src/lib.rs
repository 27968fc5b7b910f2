//! The core of [tidings](https://docs.rs/tidings): event contracts, the envelope, codecs,
//! the transport trait, the bus with its subscriptions, and the retry and dead-letter
//! policy that is the same on every transport.
//!
//! Applications use the `tidings` facade crate, which re-exports this crate with the
//! derives and the transports. The root holds what applications use; what transport
//! authors implement and call ([`transport::Transport`], [`transport::Subscriber`],
//! [`transport::Acker`], [`transport::Delivery`], the topology, the header names) is in
//! [`transport`], and they run the conformance suite in `tidings-testing`.
//!
//! Features: `msgpack` (default) — the MessagePack codec; `json` — the JSON codec;
//! `claim-check` — payloads too large for the broker travel through an object store
//! (`ClaimCheck`, the local filesystem); `claim-check-s3` — the same on S3-compatible
//! stores; `claim-check-azure` — the same on Azure Blob storage.

mod builder;
mod bus;
pub mod catalog;
pub mod claim_check;
mod codec;
mod companion;
mod consumer;
pub mod domain;
mod envelope;
mod error;
mod event;
mod handler;
mod health;
mod redact;
mod retry;
mod schedule;
mod secret;
mod subscription;
mod telemetry;
mod topology;
pub mod transport;

pub use builder::BusBuilder;
pub use bus::{Bus, PublishOptions};
#[cfg(feature = "claim-check")]
pub use claim_check::ClaimCheck;
pub use codec::{Codec, DecodeLimits, JSON, MSGPACK};
pub use companion::{Companion, Shutdown};
pub use envelope::{Envelope, Headers};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use event::{Event, EventInfo, Publishable, Topic, TopicMember};
pub use handler::{Context, Handler, HandlerError, ResultExt};
pub use health::{Health, SubscriptionHealth, SubscriptionState};
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use subscription::Subscription;
pub use topology::{BrokerObject, DeadLetter, DeadLetterInfo, Replay};

#[doc(hidden)]
pub use event::__private;

/// Re-exports for the derives; not part of the public API.
#[doc(hidden)]
pub mod __macro_support {
    pub use serde;
}

/// object_store, whose stores a [`ClaimCheck`] keeps payloads in (feature `claim-check`).
#[cfg(feature = "claim-check")]
pub use object_store;

/// schemars, whose `JsonSchema` gives events their payload schema (feature `schema`).
#[cfg(feature = "schema")]
pub use schemars;
