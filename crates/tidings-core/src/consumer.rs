//! The consumer loop, the same for every transport: take deliveries within the
//! concurrency limit, keep per-key order, and hand each to the subscription's
//! [`Dispatcher`] (`dispatch.rs`), which runs the handler with the retry policy and
//! settles.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::health::Monitor;
use crate::transport::{Delivery, Subscriber};

mod dispatch;

pub(crate) use dispatch::Dispatcher;

/// The bus's side of a running subscription, handed to the transport's consumer loop by
/// `DynTransport::consume_dyn`. Only the bus creates one.
pub struct Worker {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) shutdown: CancellationToken,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("subscription", &self.dispatcher.spec.name)
            .field("topic", &self.dispatcher.spec.topic)
            .finish_non_exhaustive()
    }
}

/// How long to wait after the subscriber fails to receive: 200 ms doubling to 6.4 s, for
/// as long as it keeps failing; started afresh after a delivery arrives.
fn receive_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(6400))
        .without_max_times()
        .with_jitter()
        .build()
}

/// A delivery waiting for an earlier one with the same ordering key, with the permit it
/// holds (so lanes count toward the concurrency limit).
type Queued<A> = (Delivery<A>, OwnedSemaphorePermit);
type Lanes<A> = Arc<Mutex<HashMap<String, VecDeque<Queued<A>>>>>;

/// The consumer loop of one subscription; returns after shutdown, once every handler it
/// started has finished.
pub(crate) async fn run<S: Subscriber>(subscriber: S, worker: Worker) {
    let dispatcher = worker.dispatcher.clone();
    consume(subscriber, worker).await;
    dispatcher.monitor.stopped();
}

async fn consume<S: Subscriber>(mut subscriber: S, worker: Worker) {
    let Worker {
        dispatcher,
        shutdown,
    } = worker;
    // Built on the first failure and dropped on the next delivery: building it costs
    // more than handing a delivery over.
    let mut failures = None;
    // One cancellation future for the whole loop: registering a new one per delivery costs
    // more than handing the delivery over.
    let cancelled = shutdown.clone().cancelled_owned();
    tokio::pin!(cancelled);
    if dispatcher.concurrency == 1 {
        loop {
            // A ready delivery is taken without polling the cancellation future; shutdown
            // is still seen between deliveries.
            if shutdown.is_cancelled() {
                break;
            }
            let next = tokio::select! {
                biased;
                next = receive(&mut subscriber, &dispatcher.monitor) => next,
                _ = &mut cancelled => break,
            };
            match next {
                Some(Ok(delivery)) => {
                    failures = None;
                    dispatcher.monitor.consuming();
                    dispatcher.process(delivery, &shutdown).await;
                }
                Some(Err(error)) => {
                    if !pause_after_error(&dispatcher, &error, &mut failures, &shutdown).await {
                        break;
                    }
                }
                None => break,
            }
        }
        return;
    }

    let permits = Arc::new(Semaphore::new(dispatcher.concurrency));
    let lanes: Lanes<S::Acker> = Arc::default();
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        if shutdown.is_cancelled() {
            break;
        }
        let next = tokio::select! {
            biased;
            next = receive(&mut subscriber, &dispatcher.monitor) => next,
            _ = &mut cancelled => break,
        };
        let delivery = match next {
            Some(Ok(d)) => {
                failures = None;
                dispatcher.monitor.consuming();
                d
            }
            Some(Err(error)) => {
                drop(permit);
                if !pause_after_error(&dispatcher, &error, &mut failures, &shutdown).await {
                    break;
                }
                continue;
            }
            None => break,
        };
        let key = delivery.envelope.ordering_key.clone();
        if let Some(key) = &key {
            let mut lanes = lanes.lock().expect("lanes lock");
            if let Some(waiting) = lanes.get_mut(key) {
                waiting.push_back((delivery, permit));
                continue;
            }
            lanes.insert(key.clone(), VecDeque::new());
        }
        let dispatcher = dispatcher.clone();
        let shutdown = shutdown.clone();
        let lanes = lanes.clone();
        tasks.spawn(async move {
            dispatcher.process(delivery, &shutdown).await;
            drop(permit);
            let Some(key) = key else { return };
            loop {
                let next = {
                    let mut lanes = lanes.lock().expect("lanes lock");
                    let waiting = lanes.get_mut(&key).expect("lane exists while in use");
                    match waiting.pop_front() {
                        Some(next) if !shutdown.is_cancelled() => next,
                        popped => {
                            // Shutting down: release the waiters oldest first, so a
                            // transport that requeues at the back keeps their order.
                            drop(popped);
                            lanes.remove(&key);
                            return;
                        }
                    }
                };
                let (delivery, permit) = next;
                dispatcher.process(delivery, &shutdown).await;
                drop(permit);
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    // Deliveries still waiting in lanes are dropped with `lanes`: redelivered later.
}

/// How long a consumer that failed to receive must wait on the broker without a new
/// failure to count as consuming again: a reconnected subscription with no events to
/// deliver gives no other sign.
const BACK_AFTER: Duration = Duration::from_secs(1);

/// The subscriber's next delivery; after a failure, a receive still pending after
/// [`BACK_AFTER`] marks the subscription consuming again.
async fn receive<S: Subscriber>(
    subscriber: &mut S,
    monitor: &Monitor,
) -> Option<crate::error::Result<Delivery<S::Acker>>> {
    let next = subscriber.next();
    if !monitor.is_troubled() {
        return next.await;
    }
    tokio::pin!(next);
    tokio::select! {
        biased;
        received = &mut next => return received,
        _ = tokio::time::sleep(BACK_AFTER) => monitor.consuming(),
    }
    next.await
}

/// Log a transient subscriber error and wait before asking again; false on shutdown.
async fn pause_after_error(
    dispatcher: &Dispatcher,
    error: &Error,
    failures: &mut Option<backon::ExponentialBackoff>,
    shutdown: &CancellationToken,
) -> bool {
    let delay = failures
        .get_or_insert_with(receive_backoff)
        .next()
        .unwrap_or(Duration::from_secs(6));
    dispatcher.monitor.reconnecting(error);
    tracing::warn!(
        subscription = %dispatcher.subscription, topic = %dispatcher.topic, %error,
        retry_in = ?delay, "receiving failed; trying again"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}
