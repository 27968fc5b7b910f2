#![doc = include_str!("../README.md")]

mod config;
mod dead_letter;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;

pub use config::{KafkaConfig, Sasl, SaslMechanism, StartFrom, Tls};
#[doc(hidden)]
pub use subscriber::live_poll_threads;
pub use subscriber::{
    KafkaAcker, KafkaSubscriber, DUE_HEADER, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER,
};
pub use topology::SubscriptionTopics;
pub use transport::Kafka;
