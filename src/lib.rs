#![doc = include_str!("../README.md")]
//!
//! # Features
//!
//! - `memory` (default): the in-memory transport, [`Memory`].
//! - `msgpack` (default): the MessagePack codec.
//! - `json`: the JSON codec.
//! - `rabbitmq`: the RabbitMQ transport, [`RabbitMq`] (`amqp://`, `amqps://`).
//! - `kafka`: the Kafka transport, [`Kafka`] (`kafka://`).
//! - `servicebus`: the Azure Service Bus transport, [`ServiceBus`] (`servicebus://`).
//! - `outbox-sqlite`, `outbox-postgres`: the transactional outbox and idempotent inbox,
//!   [`outbox`].
//! - `claim-check`: payloads too large for the broker travel through an object store,
//!   [`ClaimCheck`] ([`object_store`], the local filesystem); `claim-check-s3` and
//!   `claim-check-azure`: the same on S3-compatible stores (`object_store::aws`) and on
//!   Azure Blob storage (`object_store::azure`).

pub use tidings_core::*;
pub use tidings_macros::{Event, Topic};

/// The in-memory transport (feature `memory`, default); see the `tidings-memory` crate.
#[cfg(feature = "memory")]
pub mod memory {
    pub use tidings_memory::*;
}
#[cfg(feature = "memory")]
pub use tidings_memory::{Memory, MemoryConfig};

/// The RabbitMQ transport (feature `rabbitmq`); see the `tidings-rabbitmq` crate.
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq {
    pub use tidings_rabbitmq::*;
}
#[cfg(feature = "rabbitmq")]
pub use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

/// The Kafka transport (feature `kafka`); see the `tidings-kafka` crate.
#[cfg(feature = "kafka")]
pub mod kafka {
    pub use tidings_kafka::*;
}
#[cfg(feature = "kafka")]
pub use tidings_kafka::{Kafka, KafkaConfig};

/// The Azure Service Bus transport (feature `servicebus`); see the `tidings-servicebus`
/// crate.
#[cfg(feature = "servicebus")]
pub mod servicebus {
    pub use tidings_servicebus::*;
}
#[cfg(feature = "servicebus")]
pub use tidings_servicebus::{ServiceBus, ServiceBusConfig};

/// The transactional outbox and idempotent inbox (features `outbox-sqlite`,
/// `outbox-postgres`); see the `tidings-outbox` crate.
#[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
pub mod outbox {
    pub use tidings_outbox::*;
}

/// The dead-letter dashboard, to mount in a service's own axum app (feature `dashboard`);
/// see the `tidings-dashboard` crate.
#[cfg(feature = "dashboard")]
pub mod dashboard {
    pub use tidings_dashboard::*;
}

mod url;
pub use url::{connect, TransportUrl};

/// `url` with passwords and keys masked, for logs and messages.
pub fn redact_url(url: &str) -> String {
    tidings_core::transport::redact_url(url)
}

/// The names most services need: `use tidings::prelude::*;`.
pub mod prelude {
    #[cfg(any(feature = "outbox-sqlite", feature = "outbox-postgres"))]
    pub use crate::outbox::BusBuilderExt;
    #[cfg(feature = "memory")]
    pub use crate::Memory;
    pub use crate::{
        Bus, Context, Event, HandlerError, PublishOptions, Replay, ResultExt, RetryPolicy,
        Subscription, Topic, TransportUrl,
    };
}
