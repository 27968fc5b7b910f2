//! The consumer loop, the same for every transport: take deliveries within the
//! concurrency limit, keep per-key order, run the handler with the retry policy, settle.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, BusInner};
use crate::codec::{Codec, DecodeLimits};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind};
use crate::retry::RetryPolicy;
use crate::subscription::{Call, Failure, HandlerEntry, Upcaster};
use crate::topology::{DeadLetterInfo, SubscriptionSpec};
use crate::transport::{Acker, Delivery, Subscriber};

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

/// Routes envelopes of one subscription to its typed handlers and decides how each
/// delivery is settled.
pub(crate) struct Dispatcher {
    pub(crate) spec: SubscriptionSpec,
    /// Few per subscription: a linear scan beats hashing the wire name.
    pub(crate) handlers: Vec<HandlerEntry>,
    pub(crate) upcasters: HashMap<(&'static str, u32), Upcaster>,
    pub(crate) policy: RetryPolicy,
    pub(crate) concurrency: usize,
    pub(crate) limits: DecodeLimits,
    /// Whether the transport redelivers after a delay; otherwise the bus waits in place.
    pub(crate) delayed_redelivery: bool,
    pub(crate) service: Arc<str>,
    pub(crate) subscription: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) bus: OnceLock<Weak<BusInner>>,
}

/// How a delivery ends.
enum Outcome {
    Ack,
    Retry { next_attempt: u32, delay: Duration },
    DeadLetter(DeadLetterInfo),
}

impl Dispatcher {
    fn bus(&self) -> Option<Bus> {
        self.bus.get().and_then(Weak::upgrade).map(Bus::from_inner)
    }

    fn dead_letter(&self, reason: String, attempts: u32) -> Outcome {
        Outcome::DeadLetter(DeadLetterInfo::new(
            reason,
            attempts,
            self.service.clone(),
            self.subscription.clone(),
            self.topic.clone(),
        ))
    }

    /// Run the handler for one delivery by the retry policy and say how to settle it.
    async fn handle(
        &self,
        env: &Arc<Envelope>,
        attempt: u32,
        redelivered: bool,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let Some(entry) = self.handlers.iter().find(|h| h.name == env.event_type) else {
            tracing::debug!(
                subscription = %self.subscription, event_type = %env.event_type, id = %env.id,
                "no handler for this event in the subscription; acknowledged and skipped"
            );
            return Outcome::Ack;
        };
        if env.version > entry.version {
            return self.dead_letter(
                format!(
                    "unsupported version: `{}` v{} is newer than v{}, the newest this service understands; upgrade the subscriber's contracts",
                    env.event_type, env.version, entry.version
                ),
                0,
            );
        }
        let Some(codec) = Codec::for_content_type(&env.content_type) else {
            return self.dead_letter(
                format!(
                    "undecodable: content type `{}` has no codec compiled in (enable the `json` or `msgpack` feature)",
                    env.content_type
                ),
                0,
            );
        };
        let upcaster = if env.version < entry.version {
            self.upcasters
                .get(&(entry.name, env.version))
                .map(|u| u.as_ref() as &(dyn std::any::Any + Send + Sync))
        } else {
            None
        };
        let Some(bus) = self.bus() else {
            // The bus is gone; leave the delivery for redelivery.
            return Outcome::Retry {
                next_attempt: attempt,
                delay: Duration::ZERO,
            };
        };
        let immediate = self.policy.immediate_attempts();
        // Deliveries count from 1; don't let a transport's 0 underflow the arithmetic.
        let attempt = attempt.max(1);
        let mut redelivery = attempt;
        let mut runs_before = (attempt - 1) * immediate;
        loop {
            let mut last_error = None;
            for run in 1..=immediate {
                let call = Call {
                    envelope: env,
                    codec,
                    limits: self.limits,
                    upcaster,
                    attempt: runs_before + run,
                    redelivered: redelivered || redelivery > 1,
                    bus: bus.clone(),
                };
                match entry.handler.call(call).await {
                    Ok(()) => return Outcome::Ack,
                    Err(Failure::Poison(e)) => {
                        let reason = match e.kind() {
                            ErrorKind::MessageTooLarge => format!("oversized: {e}"),
                            _ => format!("undecodable as `{}` v{}: {e}", entry.name, env.version),
                        };
                        return self.dead_letter(reason, 0);
                    }
                    Err(Failure::Handler(e)) => {
                        tracing::warn!(
                            subscription = %self.subscription, event_type = %env.event_type, id = %env.id,
                            run = runs_before + run, error = %e, "handler failed"
                        );
                        if e.is_permanent() {
                            return self.dead_letter(
                                format!("handler failed permanently: {e}"),
                                runs_before + run,
                            );
                        }
                        last_error = Some(e);
                    }
                }
            }
            runs_before += immediate;
            let error = last_error.expect("at least one run");
            match self.policy.redelivery_delay(redelivery) {
                None => {
                    return self.dead_letter(
                        format!("handler failed after {runs_before} attempts: {error}"),
                        runs_before,
                    )
                }
                Some(delay) if self.delayed_redelivery && env.ordering_key.is_none() => {
                    return Outcome::Retry {
                        next_attempt: redelivery + 1,
                        delay,
                    }
                }
                Some(delay) => {
                    // Keyed envelopes wait in place so later events of the key can't
                    // overtake them; so do all envelopes on transports without delays.
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {
                            return Outcome::Retry { next_attempt: redelivery + 1, delay: Duration::ZERO };
                        }
                    }
                    redelivery += 1;
                }
            }
        }
    }

    /// Handle and settle one delivery. A settle that fails is tried again with backoff
    /// while the bus runs; a dead letter the broker refuses as too large is parked without
    /// its payload. A delivery that still cannot be settled is dropped, which makes the
    /// transport deliver it again.
    async fn process<A: Acker>(&self, delivery: Delivery<A>, shutdown: &CancellationToken) {
        let Delivery {
            envelope,
            attempt,
            redelivered,
            acker,
            undecodable,
            ..
        } = delivery;
        let outcome = match undecodable {
            Some(reason) => self.dead_letter(reason, 0),
            None => self.handle(&envelope, attempt, redelivered, shutdown).await,
        };
        let mut envelope = envelope;
        if let Outcome::DeadLetter(info) = &outcome {
            tracing::warn!(
                subscription = %self.subscription, event_type = %envelope.event_type,
                id = %envelope.id, reason = %info.reason, "dead-lettering envelope"
            );
        }
        let mut acker = acker;
        let mut backoff = settle_backoff();
        loop {
            let result = match &outcome {
                Outcome::Ack => acker.ack().await,
                Outcome::Retry {
                    next_attempt,
                    delay,
                } => acker.retry(envelope.clone(), *next_attempt, *delay).await,
                Outcome::DeadLetter(info) => {
                    acker.dead_letter(envelope.clone(), info.clone()).await
                }
            };
            let (error, back) = match result {
                Ok(()) => return,
                Err(failed) => failed,
            };
            acker = back;
            if matches!(outcome, Outcome::DeadLetter(_))
                && error.kind() == ErrorKind::MessageTooLarge
                && !envelope.payload.is_empty()
            {
                tracing::warn!(
                    subscription = %self.subscription, id = %envelope.id, %error,
                    "the broker refused the dead letter as too large; parking it without its payload"
                );
                envelope = Arc::new(crate::transport::wire::without_payload(&envelope));
                continue;
            }
            let Some(wait) = backoff.next().filter(|_| !shutdown.is_cancelled()) else {
                tracing::error!(
                    subscription = %self.subscription, id = %envelope.id, %error,
                    "could not settle the delivery; leaving it to be delivered again"
                );
                return;
            };
            tracing::warn!(
                subscription = %self.subscription, id = %envelope.id, %error, retry_in = ?wait,
                "settling a delivery failed; trying again"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

/// How often and how long a failed settle is tried again: 50 ms doubling to 2 s, eight
/// times (about 8 s in all), then the delivery is left to the broker.
fn settle_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(8)
        .with_jitter()
        .build()
}

/// How long to wait after the subscriber fails to receive: 200 ms doubling to 6.4 s, for
/// as long as it keeps failing; started afresh after a delivery arrives.
fn receive_backoff() -> impl Iterator<Item = Duration> {
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
pub(crate) async fn run<S: Subscriber>(mut subscriber: S, worker: Worker) {
    let Worker {
        dispatcher,
        shutdown,
    } = worker;
    let mut failures = receive_backoff();
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
                next = subscriber.next() => next,
                _ = &mut cancelled => break,
            };
            match next {
                Some(Ok(delivery)) => {
                    failures = receive_backoff();
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
            next = subscriber.next() => next,
            _ = &mut cancelled => break,
        };
        let delivery = match next {
            Some(Ok(d)) => {
                failures = receive_backoff();
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

/// Log a transient subscriber error and wait before asking again; false on shutdown.
async fn pause_after_error(
    dispatcher: &Dispatcher,
    error: &Error,
    failures: &mut impl Iterator<Item = Duration>,
    shutdown: &CancellationToken,
) -> bool {
    let delay = failures.next().unwrap_or(Duration::from_secs(6));
    tracing::warn!(
        subscription = %dispatcher.subscription, topic = %dispatcher.topic, %error,
        retry_in = ?delay, "receiving failed; trying again"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}
