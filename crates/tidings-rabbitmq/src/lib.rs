#![doc = include_str!("../README.md")]

mod config;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;

pub use config::{QueueType, RabbitMqConfig, Reconnect, TlsConfig};
pub use subscriber::{RabbitMqAcker, RabbitMqSubscriber, ORIGINAL_HEADER_PREFIX};
pub use topology::QueueNames;
pub use transport::RabbitMq;
