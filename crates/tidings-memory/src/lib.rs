#![doc = include_str!("../README.md")]

mod config;
mod error;
mod publisher;
mod subscriber;
mod topology;
mod transport;

pub use config::{
    MemoryBuilder, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_QUEUE_CAPACITY,
};
pub use subscriber::{MemoryAcker, MemorySubscriber};
pub use transport::{Memory, QueueStats};
