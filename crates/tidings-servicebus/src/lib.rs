#![doc = include_str!("../README.md")]

mod client;
mod config;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;
mod wire;

pub use config::{ServiceBusConfig, DEFAULT_CONNECT_TIMEOUT};
pub use subscriber::{ServiceBusAcker, ServiceBusSubscriber};
pub use transport::ServiceBus;
