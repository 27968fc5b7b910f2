//! Dispatching one delivery: decode (after restoring a claim-checked payload), upcast,
//! run the typed handler with the retry policy, decide the outcome (ack, retry with delay,
//! dead letter) and settle it, with its span and metrics.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::bus::{Bus, BusInner};
use crate::codec::{Codec, DecodeLimits};
use crate::envelope::Envelope;
use crate::error::ErrorKind;
use crate::health::Monitor;
use crate::retry::RetryPolicy;
use crate::subscription::{Call, Failure, HandlerEntry, Upcaster};
use crate::telemetry::metrics::{Metrics, SubscriptionMetrics};
use crate::telemetry::{self, Processing, Settled};
use crate::topology::{DeadLetterInfo, SubscriptionSpec};
use crate::transport::{Acker, Delivery};

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
    /// Where claim-checked payloads are fetched from.
    pub(crate) claims: crate::claim_check::Claims,
    /// Whether the transport redelivers after a delay; otherwise the bus waits in place.
    pub(crate) delayed_redelivery: bool,
    pub(crate) service: Arc<str>,
    pub(crate) subscription: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) bus: OnceLock<Weak<BusInner>>,
    /// `messaging.system` of the transport, for spans and metrics.
    pub(crate) system: &'static str,
    pub(crate) metrics: SubscriptionMetrics,
    pub(crate) monitor: Arc<Monitor>,
}

/// How a delivery ends.
enum Outcome {
    Ack,
    Retry {
        next_attempt: u32,
        delay: Duration,
    },
    /// Put back until its scheduled time, as the same attempt; no handler ran.
    Defer {
        attempt: u32,
        delay: Duration,
    },
    DeadLetter(DeadLetterInfo),
}

impl Dispatcher {
    fn bus(&self) -> Option<Bus> {
        self.bus.get().and_then(Weak::upgrade).map(Bus::from_inner)
    }

    /// Count one handler run of `env` that ended in `outcome` after `took`.
    fn processed(&self, env: &Envelope, outcome: &'static str, took: Duration) {
        self.metrics.processed(&env.event_type, outcome, took);
    }

    /// The process span of one handler run of `env`.
    fn span(&self, env: &Envelope, attempt: u32, partition: Option<i32>) -> Span {
        telemetry::process_span(&Processing {
            system: self.system,
            service: &self.service,
            subscription: &self.subscription,
            topic: &self.topic,
            envelope: env,
            attempt,
            partition,
        })
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

    /// Run the handler for one delivery by the retry policy and say how to settle it, with
    /// the span of the last handler run (or of the delivery, when no handler ran).
    async fn handle(
        &self,
        env: &Arc<Envelope>,
        attempt: u32,
        redelivered: bool,
        partition: Option<i32>,
        shutdown: &CancellationToken,
    ) -> (Outcome, Span) {
        let mut span = None;
        let outcome = self
            .handle_runs(env, attempt, redelivered, partition, shutdown, &mut span)
            .await;
        let span = span.unwrap_or_else(|| self.span(env, attempt, partition));
        (outcome, span)
    }

    async fn handle_runs(
        &self,
        env: &Arc<Envelope>,
        attempt: u32,
        redelivered: bool,
        partition: Option<i32>,
        shutdown: &CancellationToken,
        last_span: &mut Option<Span>,
    ) -> Outcome {
        let Some(entry) = self.handlers.iter().find(|h| h.name == env.event_type) else {
            tracing::debug!(
                subscription = %self.subscription, event_type = %env.event_type, id = %env.id,
                "no handler for this event in the subscription; acknowledged and skipped"
            );
            return Outcome::Ack;
        };
        match crate::schedule::wait(env) {
            Err(reason) => return self.dead_letter(reason, 0),
            Ok(None) => {}
            Ok(Some(wait)) => {
                if let Some(outcome) = self.defer(env, attempt, wait, shutdown).await {
                    return outcome;
                }
            }
        }
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
        let mut fetched = None;
        loop {
            let mut last_error = None;
            let mut last_run = None;
            for run in 1..=immediate {
                let span = self.span(env, runs_before + run, partition);
                let started = Metrics::clock();
                // A claim-checked payload is fetched first; a store error is a failed run.
                let result =
                    match crate::claim_check::restore(&self.claims, env, &mut fetched).await {
                        Err(Failure::Poison(e)) => return self.dead_letter(e.to_string(), 0),
                        Err(failure) => Err(failure),
                        Ok(()) => {
                            let (envelope, limits) = match &fetched {
                                Some(whole) => (whole, self.limits.at_least(whole.payload.len())),
                                None => (env, self.limits),
                            };
                            let call = Call {
                                envelope,
                                codec,
                                limits,
                                upcaster,
                                attempt: runs_before + run,
                                redelivered: redelivered || redelivery > 1,
                                bus: bus.clone(),
                            };
                            if span.is_none() {
                                entry.handler.call(call).await
                            } else {
                                entry.handler.call(call).instrument(span.clone()).await
                            }
                        }
                    };
                let took = started.map(|s| s.elapsed()).unwrap_or_default();
                match &result {
                    Ok(()) => {}
                    Err(Failure::Handler(_)) => telemetry::record_failure(&span, "handler"),
                    Err(Failure::Poison(e)) => telemetry::record_failure(&span, e.kind().as_str()),
                }
                // The outcome of a failed run is known once it is clear whether another
                // run follows; a run retried at once is settled here, the last run of a
                // delivery by `process`.
                let retried_now = matches!(&result, Err(Failure::Handler(e)) if !e.is_permanent())
                    && run < immediate;
                if retried_now {
                    telemetry::record_settled(&span, Settled::Retry(Duration::ZERO));
                    self.processed(env, "retry", took);
                } else if let Some(outcome) = match &result {
                    Ok(()) => Some("ack"),
                    Err(Failure::Handler(e)) if !e.is_permanent() => None,
                    Err(_) => Some("dead_letter"),
                } {
                    self.processed(env, outcome, took);
                }
                last_run = Some(took);
                *last_span = Some(span);
                match result {
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
            let took = last_run.unwrap_or_default();
            match self.policy.redelivery_delay(redelivery) {
                None => {
                    self.processed(env, "dead_letter", took);
                    return self.dead_letter(
                        format!("handler failed after {runs_before} attempts: {error}"),
                        runs_before,
                    );
                }
                Some(delay) if self.delayed_redelivery && env.ordering_key.is_none() => {
                    self.processed(env, "retry", took);
                    return Outcome::Retry {
                        next_attempt: redelivery + 1,
                        delay,
                    };
                }
                Some(delay) => {
                    self.processed(env, "retry", took);
                    if let Some(span) = last_span.as_ref() {
                        telemetry::record_settled(span, Settled::Retry(delay));
                    }
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

    /// Hold back a delivery that arrived before its scheduled time: put it back until it is
    /// due through the transport's delayed redelivery, counted as the same attempt, keyed
    /// or not (a scheduled event leaves its key's order; waiting in place would hold up the
    /// subscription, on Kafka the partition, until it is due). Without delayed redelivery,
    /// wait for it in place and return `None` once it is due.
    async fn defer(
        &self,
        env: &Envelope,
        attempt: u32,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        tracing::debug!(
            subscription = %self.subscription, event_type = %env.event_type, id = %env.id,
            due_in = ?wait, "scheduled for later; held back until it is due"
        );
        let put_back = |delay| Outcome::Defer {
            attempt: attempt.max(1),
            delay,
        };
        if self.delayed_redelivery {
            return Some(put_back(wait));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = shutdown.cancelled() => Some(put_back(Duration::ZERO)),
        }
    }

    /// Handle and settle one delivery. A settle that fails is tried again with backoff
    /// while the bus runs; a dead letter the broker refuses as too large is parked without
    /// its payload. A delivery that still cannot be settled is dropped, which makes the
    /// transport deliver it again.
    pub(super) async fn process<A: Acker>(
        &self,
        delivery: Delivery<A>,
        shutdown: &CancellationToken,
    ) {
        let Delivery {
            envelope,
            attempt,
            redelivered,
            acker,
            undecodable,
            partition,
            ..
        } = delivery;
        self.monitor.started();
        let (outcome, span) = match undecodable {
            Some(reason) => (
                self.dead_letter(reason, 0),
                self.span(&envelope, attempt, partition),
            ),
            None => {
                self.handle(&envelope, attempt, redelivered, partition, shutdown)
                    .await
            }
        };
        let (settled, name) = match &outcome {
            Outcome::Ack => (Settled::Ack, "ack"),
            Outcome::Retry { delay, .. } => (Settled::Retry(*delay), "retry"),
            Outcome::Defer { delay, .. } => (Settled::Defer(*delay), "defer"),
            Outcome::DeadLetter(info) => (Settled::DeadLetter(&info.reason), "dead_letter"),
        };
        telemetry::record_settled(&span, settled);
        if let Outcome::DeadLetter(info) = &outcome {
            // One line with the reason, never the payload.
            span.in_scope(|| {
                tracing::warn!(
                    subscription = %self.subscription, event_type = %envelope.event_type,
                    id = %envelope.id, reason = %info.reason, "dead-lettering envelope"
                )
            });
        }
        let deferred = matches!(outcome, Outcome::Defer { .. });
        let handled = envelope.clone();
        // Made in each branch, not bound first: moving the settle future into the
        // wrapper (or the await) copies a few hundred bytes an event.
        if span.is_none() {
            self.settle(envelope, outcome, acker, shutdown).await
        } else {
            self.settle(envelope, outcome, acker, shutdown)
                .instrument(span)
                .await
        }
        let now = SystemTime::now();
        self.monitor.finished(now);
        if deferred {
            // Not handled: no lag to record.
            return;
        }
        // Lag counts from when the event could be handled: its time, or its scheduled
        // time when that is later.
        let lag = if Metrics::ENABLED {
            now.duration_since(crate::schedule::ready_at(&handled))
                .unwrap_or_default()
        } else {
            Duration::ZERO
        };
        self.metrics.settled(&handled.event_type, name, lag);
    }

    /// Settle a delivery by `outcome`, trying a failed settle again.
    async fn settle<A: Acker>(
        &self,
        envelope: Arc<Envelope>,
        outcome: Outcome,
        acker: A,
        shutdown: &CancellationToken,
    ) {
        let mut envelope = envelope;
        let mut acker = acker;
        // Built on the first failed settle only.
        let mut backoff = None;
        loop {
            let result = match &outcome {
                Outcome::Ack => acker.ack().await,
                Outcome::Retry {
                    next_attempt,
                    delay,
                }
                | Outcome::Defer {
                    attempt: next_attempt,
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
            let wait = backoff.get_or_insert_with(settle_backoff).next();
            let Some(wait) = wait.filter(|_| !shutdown.is_cancelled()) else {
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
