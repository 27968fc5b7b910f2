//! Settling a delivery by the lock URI of its peek-lock answer: complete (`DELETE`),
//! unlock (`PUT`), and renew (`POST`) while the handler runs. [`ServiceBusAcker`] settles
//! one delivery; retries that wait are scheduled re-sends and dead letters are marked
//! copies (see the crate docs), both sent to the subscription only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use tidings_core::{
    transport::{attrs, Acker},
    DeadLetterInfo, Envelope, Error, Result,
};
use tokio::task::JoinHandle;

use crate::client::Rest;
use crate::publisher::send_one;
use crate::subscriber::Target;
use crate::transport::Shared;
use crate::wire::{self, Received, Resend};

/// Complete the message locked by `lock_uri`: it is gone from the subscription.
pub(crate) async fn complete(rest: &Rest, lock_uri: &str, what: &str) -> Result<()> {
    settle(rest, Method::DELETE, lock_uri, what).await
}

/// Unlock the message locked by `lock_uri`: delivered again at once, DeliveryCount + 1.
pub(crate) async fn unlock(rest: &Rest, lock_uri: &str, what: &str) -> Result<()> {
    settle(rest, Method::PUT, lock_uri, what).await
}

async fn settle(rest: &Rest, method: Method, lock_uri: &str, what: &str) -> Result<()> {
    rest.expect(method, lock_uri, &[], None, &[200], what)
        .await
        .map(|_| ())
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
    /// The acker of the message `m` of `target`, locked by `lock_uri`; renews the lock
    /// until the delivery is settled.
    pub(crate) fn new(
        shared: Arc<Shared>,
        target: Arc<Target>,
        lock_uri: String,
        m: &Received,
    ) -> Self {
        let renewal = spawn_renewal(shared.clone(), lock_uri.clone(), renew_every(&shared, m));
        ServiceBusAcker {
            shared,
            target,
            lock_uri,
            renewal: Some(renewal),
            copy_sent: false,
            settled: false,
        }
    }

    fn done(&mut self) {
        self.settled = true;
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
    }

    async fn complete(&self) -> Result<()> {
        complete(
            &self.shared.rest,
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
                if let Err(e) = unlock(&shared.rest, &lock_uri, "unlocking an unsettled message").await {
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
            return match unlock(&self.shared.rest, &self.lock_uri, &what).await {
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
