//! [`TestBus`]: several services on one memory hub, with every published envelope
//! recorded for assertions and [`settle`](TestBus::settle) to wait until all handling is
//! done.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{transport::DynTransport, Bus, BusBuilder, Envelope, Event};
use tidings_memory::Memory;

use crate::recording::Recording;

/// How long [`TestBus::settle`] waits by default before it panics.
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A test harness: a memory hub shared by every bus built from it, a recording of every
/// event those buses publish, and [`settle`](Self::settle).
///
/// ```
/// # use tidings_core::*;
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// # struct BookBorrowed { book_id: u32 }
/// # impl Event for BookBorrowed { const NAME: &'static str = "lending.book-borrowed"; const VERSION: u32 = 1; }
/// # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
/// # struct LendingEvents;
/// # impl Topic for LendingEvents { const NAME: &'static str = "lending"; fn events() -> &'static [EventInfo] { &[EventInfo { name: "lending.book-borrowed", version: 1, type_name: "BookBorrowed" }] } }
/// # async fn noted(_: BookBorrowed, _: Context<()>) -> Result<(), HandlerError> { Ok(()) }
/// use tidings_testing::TestBus;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings_core::Result<()> {
/// let harness = TestBus::new();
/// let lending = harness.builder("lending").publishes::<LendingEvents>().build().await?;
/// let catalog = harness
///     .builder("catalog")
///     .subscribe(Subscription::to::<LendingEvents>().on(noted))
///     .build()
///     .await?;
///
/// lending.publish(BookBorrowed { book_id: 7 }).await?;
/// assert_eq!(harness.assert_published::<BookBorrowed>(), BookBorrowed { book_id: 7 });
/// harness.settle().await; // catalog has handled it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TestBus {
    memory: Memory,
    recording: Arc<Recording<Memory>>,
    settle_timeout: Duration,
}

impl TestBus {
    /// A harness on a new private memory hub.
    pub fn new() -> Self {
        TestBus::with_memory(Memory::new())
    }

    /// A harness on `memory` (for other queue limits, or a hub shared with code that
    /// reaches it through a `memory://name` URL). Only publishes through this harness's
    /// buses are recorded; [`settle`](Self::settle) covers the whole hub.
    pub fn with_memory(memory: Memory) -> Self {
        TestBus {
            recording: Arc::new(Recording::new(memory.clone())),
            memory,
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
        }
    }

    /// How long [`settle`](Self::settle) waits before it panics (default 10 s). Make it
    /// longer than the retry delays the test expects to sit out.
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// A bus builder for `service`, wired to the harness's recording memory transport.
    /// Add what the service publishes and subscribes to, then `build()`.
    pub fn builder(&self, service: impl Into<String>) -> BusBuilder {
        Bus::builder(service).transport_shared(self.transport())
    }

    /// The recording transport, for buses built by hand.
    pub fn transport(&self) -> Arc<dyn DynTransport> {
        self.recording.clone()
    }

    /// The memory hub.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The recording.
    pub fn recording(&self) -> &Recording<Memory> {
        &self.recording
    }

    /// The most recently published `E`, decoded. Panics, listing what was published, if
    /// no `E` was.
    #[track_caller]
    pub fn assert_published<E: Event>(&self) -> E {
        self.recording.assert_published::<E>()
    }

    /// Every `E` published so far, oldest first.
    #[track_caller]
    pub fn published<E: Event>(&self) -> Vec<E> {
        self.recording.published::<E>()
    }

    /// Panics if an `E` was published.
    #[track_caller]
    pub fn assert_not_published<E: Event>(&self) {
        self.recording.assert_not_published::<E>()
    }

    /// Every envelope published so far, oldest first.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.recording.envelopes()
    }

    /// Forget what was recorded so far (the hub's queues are untouched).
    pub fn clear(&self) {
        self.recording.clear()
    }

    /// Wait until the hub is idle: every queue drained, every delivery acknowledged or
    /// dead-lettered, no retry waiting out its delay. Events that handlers publish are
    /// part of it (they are queued before the handler's own delivery is acknowledged), so
    /// a whole chain of services has finished when this returns.
    ///
    /// Panics after the [settle timeout](Self::settle_timeout) with what is still pending:
    /// usually a handler that never returns, a retry delay longer than the timeout, or a
    /// queue whose service was shut down or never built.
    pub async fn settle(&self) {
        if tokio::time::timeout(self.settle_timeout, self.memory.idle())
            .await
            .is_err()
        {
            panic!("{}", self.not_settled());
        }
    }

    fn not_settled(&self) -> String {
        let pending = self.memory.pending();
        let queues = self.memory.queues();
        let waiting: usize = queues.iter().map(|q| q.waiting).sum();
        let mut msg = format!(
            "TestBus::settle: the memory hub was not idle after {:?}: {pending} envelope(s) pending, {waiting} waiting in queues and {} delivered to a handler that has not finished or waiting out a retry delay",
            self.settle_timeout,
            pending.saturating_sub(waiting)
        );
        for q in queues.iter().filter(|q| q.waiting > 0) {
            let _ = write!(
                msg,
                "; `{}.{}` has {} waiting (is its service built and running?)",
                q.subscription, q.topic, q.waiting
            );
        }
        msg
    }
}

impl Default for TestBus {
    fn default() -> Self {
        TestBus::new()
    }
}

impl fmt::Debug for TestBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBus")
            .field("memory", &self.memory)
            .field("recorded", &self.recording.envelopes().len())
            .field("settle_timeout", &self.settle_timeout)
            .finish()
    }
}
