#![doc = include_str!("../README.md")]

mod acker;
mod client;
mod config;
mod dead_letter;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;
mod wire;

pub use acker::ServiceBusAcker;
pub use config::ServiceBusConfig;
pub use subscriber::ServiceBusSubscriber;
pub use transport::ServiceBus;
