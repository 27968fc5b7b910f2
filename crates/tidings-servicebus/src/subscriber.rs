//! Consuming: a receiver task peek-locks messages one at a time and hands them to the bus
//! through a channel of one, so `next()` is cancel-safe. Each delivery's acker renews the
//! lock while the handler runs and settles it by the lock URI of the peek-lock answer.
//!
//! The azure crate's receive calls are not used (see the crate docs): they take 204 (no
//! message) for success, read bodies as UTF-8 after the message was locked, throw away the
//! lock URI or do not check the status. The peek-lock here checks the status itself, reads
//! the body as bytes and always keeps the lock URI.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use tidings_core::{
    transport::{attrs, Acker, Delivery, Subscriber},
    DeadLetterInfo, Envelope, Error, ErrorKind, Result,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Rest;
use crate::publisher::send_one;
use crate::topology::{dead_letter_path, subscription_path};
use crate::transport::Shared;
use crate::wire::Received;
use crate::wire::{self, Resend};

/// Where a subscription's deliveries come from.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) spec: tidings_core::transport::SubscriptionSpec,
    pub(crate) topic: Arc<str>,
    pub(crate) subscription: Arc<str>,
}

/// Peek-lock the head of a subscription's queue (or dead-letter subqueue), waiting up to
/// `wait`: `None` on 204.
pub(crate) async fn peek_lock(
    rest: &Rest,
    queue: &str,
    wait: Duration,
) -> Result<Option<(Received, String)>> {
    let what = format!("receiving from `{queue}`");
    let a = rest
        .call(
            Method::POST,
            &format!("{queue}/messages/head?timeout={}", wait.as_secs()),
            &[],
            None,
            &what,
        )
        .await?;
    match a.status {
        201 => {
            let m = Received::from_answer(&a.headers, a.body);
            let lock_uri = match (&m.lock_uri, &m.lock_token) {
                (Some(uri), _) => uri.clone(),
                (None, Some(token)) => format!("{}{queue}/messages/{}/{token}", rest.base, m.sequence_number),
                (None, None) => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!("{what}: Service Bus answered 201 without a Location or LockToken; the message stays locked until its lock expires"),
                    ))
                }
            };
            Ok(Some((m, lock_uri)))
        }
        204 => Ok(None),
        status => Err(crate::error::status_error(
            status,
            &a.body,
            &what,
            &rest.key_name,
        )),
    }
}

/// The deliveries of one subscription.
///
/// Dropping it stops the receiver task after its receive in flight: a message that
/// receive locked is unlocked again, not left locked until its lock expires.
#[derive(Debug)]
pub struct ServiceBusSubscriber {
    rx: mpsc::Receiver<Result<Delivery<ServiceBusAcker>>>,
}

impl Subscriber for ServiceBusSubscriber {
    type Acker = ServiceBusAcker;

    async fn next(&mut self) -> Option<Result<Delivery<ServiceBusAcker>>> {
        self.rx.recv().await
    }
}

pub(crate) fn start(shared: Arc<Shared>, target: Target) -> ServiceBusSubscriber {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(receive_loop(shared, Arc::new(target), tx));
    ServiceBusSubscriber { rx }
}

async fn receive_loop(
    shared: Arc<Shared>,
    target: Arc<Target>,
    tx: mpsc::Sender<Result<Delivery<ServiceBusAcker>>>,
) {
    let queue = subscription_path(&target.topic, &target.subscription);
    let mut failures = 0u32;
    loop {
        if tx.is_closed() {
            return;
        }
        let received = peek_lock(&shared.rest, &queue, shared.config.receive_wait).await;
        let (m, lock_uri) = match received {
            Ok(None) => {
                failures = 0;
                continue;
            }
            Ok(Some(got)) => {
                failures = 0;
                got
            }
            Err(e) => {
                failures += 1;
                let gone = e.kind() == ErrorKind::NotFound;
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                if gone && shared.config.provision {
                    // The subscription vanished (deleted, or a development server
                    // restarted): declare it again.
                    let mut topology =
                        tidings_core::transport::Topology::new(target.spec.service.clone());
                    topology.subscriptions.push(target.spec.clone());
                    match crate::topology::provision(&shared.rest, &shared.config, &topology).await
                    {
                        Ok(()) => {
                            tracing::info!(subscription = %target.subscription, "declared the missing subscription again")
                        }
                        Err(e) => {
                            tracing::warn!(subscription = %target.subscription, error = %e, "declaring the missing subscription again failed")
                        }
                    }
                }
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(8)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = tx.closed() => return,
                }
                continue;
            }
        };
        if m.is_dead_letter_copy() {
            // On its way to the dead-letter subqueue: Service Bus moves it there once its
            // deliveries reach MaxDeliveryCount, and each unlock is one delivery.
            if let Err(e) = settle(
                &shared.rest,
                Method::PUT,
                &lock_uri,
                "unlocking a dead letter on its way",
            )
            .await
            {
                tracing::debug!(error = %e, "unlocking a dead-letter copy failed; its lock will expire");
            }
            continue;
        }
        let renewal = spawn_renewal(shared.clone(), lock_uri.clone(), renew_every(&shared, &m));
        let acker = ServiceBusAcker {
            shared: shared.clone(),
            target: target.clone(),
            lock_uri,
            renewal: Some(renewal),
            copy_sent: false,
            settled: false,
        };
        // The core decides whether it is an envelope; one that is not is dead-lettered
        // through the acker like any poison message.
        let delivery = Delivery::from_wire(m.wire_message(), acker);
        if tx.send(Ok(delivery)).await.is_err() {
            // The subscriber is gone; the undelivered acker unlocks on drop.
            return;
        }
    }
}

/// Half the time the lock has left, as the peek-lock answer says.
fn renew_every(shared: &Shared, m: &Received) -> Duration {
    let left = match (m.locked_until, m.server_now) {
        (Some(until), Some(now)) => until.duration_since(now).unwrap_or_default(),
        (Some(until), None) => until.duration_since(SystemTime::now()).unwrap_or_default(),
        _ => shared.config.lock_duration,
    };
    let left = if left.is_zero() {
        shared.config.lock_duration
    } else {
        left
    };
    (left / 2).max(Duration::from_millis(200))
}

fn spawn_renewal(shared: Arc<Shared>, lock_uri: String, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match shared
                .rest
                .call(
                    Method::POST,
                    &lock_uri,
                    &[],
                    None,
                    "renewing a message lock",
                )
                .await
            {
                Ok(a) if a.status == 200 => {}
                Ok(a) if a.status == 404 || a.status == 410 => {
                    tracing::warn!(
                        status = a.status,
                        "the message lock was lost; the message will be delivered again"
                    );
                    return;
                }
                Ok(a) => tracing::warn!(
                    status = a.status,
                    "renewing a message lock failed; trying again"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing a message lock failed; trying again")
                }
            }
        }
    })
}

async fn settle(rest: &Rest, method: Method, lock_uri: &str, what: &str) -> Result<()> {
    rest.expect(method, lock_uri, &[], None, &[200], what)
        .await
        .map(|_| ())
}

/// Settles one delivery by its lock URI: complete, unlock or re-send, dead-letter.
///
/// Dropped unsettled, it unlocks the message (in the background) so it is delivered again
/// at once rather than after the lock expires.
pub struct ServiceBusAcker {
    shared: Arc<Shared>,
    target: Arc<Target>,
    lock_uri: String,
    renewal: Option<JoinHandle<()>>,
    copy_sent: bool,
    settled: bool,
}

impl std::fmt::Debug for ServiceBusAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusAcker")
            .field("subscription", &self.target.subscription)
            .field("lock_uri", &self.lock_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceBusAcker {
    fn done(&mut self) {
        self.settled = true;
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
    }

    async fn complete(&self) -> Result<()> {
        settle(
            &self.shared.rest,
            Method::DELETE,
            &self.lock_uri,
            &format!(
                "completing a message of subscription `{}`",
                self.target.subscription
            ),
        )
        .await
    }

    /// Send a copy of `env` to this subscription only, once per acker.
    async fn resend(&mut self, env: &Envelope, resend: Resend<'_>) -> Result<()> {
        if self.copy_sent {
            return Ok(());
        }
        let out = wire::encode(env, resend)?;
        send_one(&self.shared.rest, &self.target.topic, out).await?;
        self.copy_sent = true;
        Ok(())
    }
}

impl Drop for ServiceBusAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let lock_uri = std::mem::take(&mut self.lock_uri);
            rt.spawn(async move {
                if let Err(e) = settle(&shared.rest, Method::PUT, &lock_uri, "unlocking an unsettled message").await {
                    tracing::debug!(error = %e, "unlocking an unsettled message failed; its lock will expire");
                }
            });
        }
    }
}

impl Acker for ServiceBusAcker {
    async fn ack(mut self) -> Result<(), (Error, Self)> {
        match self.complete().await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((e, self)),
        }
    }

    async fn retry(
        mut self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        if delay.is_zero() || !self.shared.config.scheduled_retries {
            // Abandon: Service Bus delivers it again at once, DeliveryCount + 1.
            let what = format!(
                "unlocking a message of subscription `{}`",
                self.target.subscription
            );
            return match settle(&self.shared.rest, Method::PUT, &self.lock_uri, &what).await {
                Ok(()) => {
                    self.done();
                    Ok(())
                }
                Err(e) => Err((e, self)),
            };
        }
        let subscription = self.target.subscription.clone();
        let resend = Resend {
            to: Some(&subscription),
            scheduled: Some(SystemTime::now() + delay),
            extra: vec![(attrs::ATTEMPT, next_attempt.to_string())],
        };
        if let Err(e) = self.resend(&envelope, resend).await {
            return Err((e.context("scheduling a retry"), self));
        }
        match self.complete().await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((e, self)),
        }
    }

    async fn dead_letter(
        mut self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        let env = info.stamped(&envelope);
        let subscription = self.target.subscription.clone();
        let resend = Resend {
            to: Some(&subscription),
            scheduled: None,
            extra: vec![(wire::DEAD_LETTER, "true".into())],
        };
        if let Err(e) = self.resend(&env, resend).await {
            return Err((e.context("dead-lettering"), self));
        }
        match self.complete().await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((e, self)),
        }
    }
}
