//! Domain events: facts that stay inside one bounded context, handled in process.
//!
//! Unlike integration events they have no wire name, no version and no broker: an
//! [`EventQueue`] is a bounded in-process channel with handlers, and its events are lost
//! when the process stops. Use them for reactions inside a context (Lending updating a
//! patron's loan count after a borrow); publish an integration event for other contexts.
//! [`Converters`] turn domain events into those integration events: the queue publishes
//! them ([`EventQueueBuilder::publish_converted`]), or the outbox writes them in the
//! transaction of the domain change (`Outbox::enqueue_converted` in `tidings-outbox`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
//! use tidings_core::domain::EventQueue;
//!
//! #[derive(Debug, Clone)]
//! enum LendingDomainEvent { BookBorrowed { patron: u32 } }
//!
//! let loans = Arc::new(AtomicU32::new(0));
//! let counter = loans.clone();
//! let queue = EventQueue::builder()
//!     .handler(move |e: LendingDomainEvent| {
//!         let counter = counter.clone();
//!         async move {
//!             let LendingDomainEvent::BookBorrowed { .. } = e;
//!             counter.fetch_add(1, Ordering::SeqCst);
//!             Ok(())
//!         }
//!     })
//!     .start();
//! queue.enqueue(LendingDomainEvent::BookBorrowed { patron: 7 }).await.unwrap();
//! queue.drain().await.unwrap();
//! assert_eq!(loans.load(Ordering::SeqCst), 1);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, Notify};
use tracing::{Instrument, Span};

use crate::bus::{Bus, PublishOptions};
use crate::error::{Error, Result};
use crate::handler::HandlerError;

mod convert;

pub use convert::Converters;

/// A handler, given the event and the options its follow-up publishes carry.
type DomainHandler<E> =
    Box<dyn Fn(&E, &PublishOptions) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Builds an [`EventQueue`]: its handlers, run in registration order for every event, and
/// its capacity.
pub struct EventQueueBuilder<E> {
    handlers: Vec<DomainHandler<E>>,
    capacity: usize,
}

impl<E> fmt::Debug for EventQueueBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueueBuilder")
            .field("handlers", &self.handlers.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<E: Clone + Send + Sync + 'static> EventQueueBuilder<E> {
    /// Add a handler: `async fn(E) -> Result<(), HandlerError>`. Each handler gets its own
    /// clone of the event.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers
            .push(Box::new(move |e: &E, _: &PublishOptions| {
                Box::pin(handler(e.clone()))
            }));
        self
    }

    /// Publish the integration events `converters` make of each domain event on `bus`, as
    /// a handler in registration order (after the handlers added before it): a converter
    /// returning `None` publishes nothing, and a failed publish is a handler failure that
    /// [`EventQueue::drain`] reports. The events carry the options the domain event was
    /// queued with ([`EventQueue::enqueue_with`]; in an integration event's handler,
    /// `cx.follow_up()`), so the correlation id runs on.
    ///
    /// With an outbox, write them in the domain change's transaction instead
    /// (`Outbox::enqueue_converted`): then they are published exactly when it commits.
    pub fn publish_converted(mut self, bus: &Bus, converters: Converters<E>) -> Self {
        let bus = bus.clone();
        self.handlers
            .push(Box::new(move |e: &E, options: &PublishOptions| {
                let (bus, converters) = (bus.clone(), converters.clone());
                let envelopes = converters.envelopes(&bus, e, options);
                Box::pin(async move {
                    for (topic, envelope) in envelopes.map_err(HandlerError::permanent)? {
                        // Built for this publish: its send span is a child of the span
                        // that queued the domain event, and its consumers' of the send.
                        bus.publish_built_to(&topic, vec![envelope])
                            .await
                            .map_err(HandlerError::transient)?;
                    }
                    Ok(())
                })
            }));
        self
    }

    /// How many events may wait before `enqueue` waits (default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Start the queue's worker on the current tokio runtime.
    pub fn start(self) -> EventQueue<E> {
        let (tx, mut rx) = mpsc::channel::<Queued<E>>(self.capacity);
        let state = Arc::new(State {
            inner: Mutex::new(Counts::default()),
            idle: Notify::new(),
        });
        let worker_state = state.clone();
        let handlers = self.handlers;
        tokio::spawn(async move {
            while let Some((event, options, span)) = rx.recv().await {
                for handler in &handlers {
                    // A panicking handler is a failure like any other: the worker lives on
                    // and `drain` still returns. It runs in the span that queued the event,
                    // so what it publishes continues that trace.
                    let run = std::panic::AssertUnwindSafe(
                        async { handler(&event, &options).await }.instrument(span.clone()),
                    )
                    .catch_unwind();
                    let result = run.await.unwrap_or_else(|_| {
                        Err(HandlerError::msg("domain event handler panicked"))
                    });
                    if let Err(e) = result {
                        tracing::error!(error = %e, "domain event handler failed");
                        let mut counts = worker_state.inner.lock().expect("event queue state");
                        counts.failures.push(e);
                    }
                }
                let mut counts = worker_state.inner.lock().expect("event queue state");
                counts.outstanding -= 1;
                if counts.outstanding == 0 {
                    worker_state.idle.notify_waiters();
                }
            }
        });
        EventQueue { tx, state }
    }
}

#[derive(Default)]
struct Counts {
    outstanding: usize,
    failures: Vec<HandlerError>,
}

struct State {
    inner: Mutex<Counts>,
    idle: Notify,
}

/// A queued domain event: its options and the span current when it was queued.
type Queued<E> = (E, PublishOptions, Span);

/// A bounded in-process queue of domain events with handlers. Cheap to clone.
pub struct EventQueue<E> {
    tx: mpsc::Sender<Queued<E>>,
    state: Arc<State>,
}

impl<E> Clone for EventQueue<E> {
    fn clone(&self) -> Self {
        EventQueue {
            tx: self.tx.clone(),
            state: self.state.clone(),
        }
    }
}

impl<E> fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outstanding = self.state.inner.lock().map(|c| c.outstanding).unwrap_or(0);
        f.debug_struct("EventQueue")
            .field("outstanding", &outstanding)
            .finish()
    }
}

impl<E: Clone + Send + Sync + 'static> EventQueue<E> {
    /// A builder with no handlers and a capacity of 1024.
    pub fn builder() -> EventQueueBuilder<E> {
        EventQueueBuilder {
            handlers: Vec::new(),
            capacity: 1024,
        }
    }
}

impl<E: Send + 'static> EventQueue<E> {
    /// Queue an event for the handlers; waits while the queue is full.
    pub async fn enqueue(&self, event: E) -> Result<()> {
        self.enqueue_with(event, PublishOptions::default()).await
    }

    /// [`enqueue`](Self::enqueue) with the options the integration events converted from
    /// it carry ([`EventQueueBuilder::publish_converted`]): a correlation id, headers; in
    /// an integration event's handler, `cx.follow_up()`.
    pub async fn enqueue_with(&self, event: E, options: PublishOptions) -> Result<()> {
        self.state
            .inner
            .lock()
            .expect("event queue state")
            .outstanding += 1;
        let queued = (event, options, Span::current());
        if self.tx.send(queued).await.is_err() {
            self.state
                .inner
                .lock()
                .expect("event queue state")
                .outstanding -= 1;
            return Err(Error::closed("the domain event queue's worker has stopped"));
        }
        Ok(())
    }

    /// Wait until every queued event was handled; returns the first handler failure since
    /// the last `drain` (every failure is also logged).
    pub async fn drain(&self) -> Result<(), HandlerError> {
        loop {
            let idle = self.state.idle.notified();
            {
                let mut counts = self.state.inner.lock().expect("event queue state");
                if counts.outstanding == 0 {
                    let mut failures = std::mem::take(&mut counts.failures);
                    return if failures.is_empty() {
                        Ok(())
                    } else {
                        Err(failures.swap_remove(0))
                    };
                }
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handlers_run_in_order_and_failures_surface_on_drain() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (seen.clone(), seen.clone());
        let queue = EventQueue::builder()
            .capacity(2)
            .handler(move |n: u32| {
                let a = a.clone();
                async move {
                    a.lock().unwrap().push(("first", n));
                    Ok(())
                }
            })
            .handler(move |n: u32| {
                let b = b.clone();
                async move {
                    b.lock().unwrap().push(("second", n));
                    if n == 3 {
                        return Err(HandlerError::msg("three is unlucky"));
                    }
                    Ok(())
                }
            })
            .start();
        for n in 1..=5 {
            queue.enqueue(n).await.unwrap();
        }
        let err = queue.drain().await.unwrap_err();
        assert_eq!(err.to_string(), "three is unlucky");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[0], ("first", 1));
        assert_eq!(seen[1], ("second", 1));
        assert_eq!(seen[9], ("second", 5));
        assert!(queue.drain().await.is_ok(), "failures are reported once");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_failure_and_the_queue_keeps_working() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let queue = EventQueue::builder()
            .handler(move |n: u32| {
                let sink = sink.clone();
                async move {
                    if n == 1 {
                        panic!("handler bug");
                    }
                    sink.lock().unwrap().push(n);
                    Ok(())
                }
            })
            .start();
        queue.enqueue(1).await.unwrap();
        queue.enqueue(2).await.unwrap();
        let drained = tokio::time::timeout(std::time::Duration::from_secs(10), queue.drain());
        let err = drained
            .await
            .expect("drain returns although a handler panicked")
            .unwrap_err();
        assert_eq!(err.to_string(), "domain event handler panicked");
        assert_eq!(*seen.lock().unwrap(), vec![2]);
    }
}
