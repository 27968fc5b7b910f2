#![doc = include_str!("../README.md")]

mod acker;
mod config;
mod dead_letter;
mod error;
mod publisher;
mod queue;
mod subscriber;
mod topology;
mod transport;
mod wire;

pub use acker::MemoryAcker;
pub use config::MemoryConfig;
pub use subscriber::MemorySubscriber;
pub use transport::{Memory, QueueStats};
