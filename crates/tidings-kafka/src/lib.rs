#![doc = include_str!("../README.md")]

mod acker;
mod backlog;
mod config;
mod dead_letter;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;
mod wire;

pub use acker::KafkaAcker;
pub use config::{KafkaConfig, Sasl, SaslMechanism, StartFrom, Tls};
#[doc(hidden)]
pub use subscriber::live_poll_threads;
pub use subscriber::KafkaSubscriber;
pub use topology::SubscriptionTopics;
pub use transport::Kafka;
pub use wire::{DUE_HEADER, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER};
