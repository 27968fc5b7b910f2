#![doc = include_str!("../README.md")]
//!
//! # Features
//!
//! - `memory` (default): the in-memory transport, [`Memory`].
//! - `msgpack` (default): the MessagePack codec.
//! - `json`: the JSON codec.

pub use tidings_core::*;
pub use tidings_macros::{Event, Topic};

#[cfg(feature = "memory")]
pub use tidings_memory::Memory;

mod url;
pub use url::{connect, TransportUrl};

/// The names most services need: `use tidings::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "memory")]
    pub use crate::Memory;
    pub use crate::{
        Bus, Context, Event, HandlerError, PublishOptions, Replay, RetryPolicy, Subscription,
        Topic, TransportUrl,
    };
}
