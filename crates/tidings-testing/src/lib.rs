//! Testing tools for [tidings](https://docs.rs/tidings).
//!
//! - [`TestBus`]: the harness for application tests. Every bus built from it runs on one
//!   memory hub through a [`Recording`] transport, so a test can build several services,
//!   drive them, assert on what they published ([`assert_published`](TestBus::assert_published),
//!   [`published`](TestBus::published), [`assert_not_published`](TestBus::assert_not_published))
//!   and [`settle`](TestBus::settle) until every queue is drained and every handler done.
//! - [`conformance`]: the transport conformance suite that every transport runs.
//! - `telemetry` (feature `opentelemetry`): the OpenTelemetry SDK with in-memory
//!   exporters behind a `tracing` subscriber, to check the spans and metrics a test's
//!   buses record.
//!
//! ```
//! # use tidings_core::*;
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! # struct BookBorrowed { book_id: u32 }
//! # impl Event for BookBorrowed { const NAME: &'static str = "lending.book-borrowed"; const VERSION: u32 = 1; }
//! # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
//! # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! # struct BookReturned { book_id: u32 }
//! # impl Event for BookReturned { const NAME: &'static str = "lending.book-returned"; const VERSION: u32 = 1; }
//! # impl TopicMember for BookReturned { type Topic = LendingEvents; }
//! # struct LendingEvents;
//! # impl Topic for LendingEvents { const NAME: &'static str = "lending"; fn events() -> &'static [EventInfo] { &[] } }
//! use tidings_testing::TestBus;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings_core::Result<()> {
//! let harness = TestBus::new();
//! let lending = harness.builder("lending").publishes::<LendingEvents>().build().await?;
//!
//! lending.publish(BookBorrowed { book_id: 7 }).await?;
//!
//! let event = harness.assert_published::<BookBorrowed>();
//! assert_eq!(event.book_id, 7);
//! harness.assert_not_published::<BookReturned>();
//! harness.settle().await;
//! # Ok(()) }
//! ```

pub mod conformance;
mod harness;
mod recording;
#[cfg(feature = "opentelemetry")]
pub mod telemetry;

pub use harness::{TestBus, DEFAULT_SETTLE_TIMEOUT};
pub use recording::Recording;
pub use tidings_memory::Memory;
