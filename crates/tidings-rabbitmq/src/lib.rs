#![doc = include_str!("../README.md")]

mod acker;
mod config;
mod dead_letter;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;
mod wire;

pub use acker::RabbitMqAcker;
pub use config::{QueueType, RabbitMqConfig, Reconnect, TlsConfig};
pub use subscriber::RabbitMqSubscriber;
pub use topology::QueueNames;
pub use transport::RabbitMq;
