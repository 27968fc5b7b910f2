//! Consuming: a receiver task peek-locks messages one at a time
//! ([`Rest::peek_lock`](crate::client::Rest::peek_lock)) and hands them to the bus through a
//! channel of one, so `next()` is cancel-safe. Each delivery's [`ServiceBusAcker`] renews
//! the lock while the handler runs and settles it by the lock URI of the peek-lock answer.
//! Failed receives are reported to the bus and retried with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    transport::{Delivery, Subscriber, SubscriptionSpec, Topology},
    ErrorKind, Result,
};
use tokio::sync::mpsc;

use crate::acker::{self, ServiceBusAcker};
use crate::topology::subscription_path;
use crate::transport::Shared;

/// Where a subscription's deliveries come from.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) spec: SubscriptionSpec,
    pub(crate) topic: Arc<str>,
    pub(crate) subscription: Arc<str>,
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

/// Start the receiver task of the subscription `spec`.
pub(crate) fn start(shared: Arc<Shared>, spec: &SubscriptionSpec) -> ServiceBusSubscriber {
    let target = Target {
        spec: spec.clone(),
        topic: Arc::from(spec.topic.as_str()),
        subscription: Arc::from(spec.name.as_str()),
    };
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(receive_loop(shared, Arc::new(target), tx));
    ServiceBusSubscriber { rx }
}

async fn receive_loop(
    shared: Arc<Shared>,
    target: Arc<Target>,
    tx: mpsc::Sender<Result<Delivery<ServiceBusAcker>>>,
) {
    let entity = subscription_path(&target.topic, &target.subscription);
    let mut backoff = receive_backoff();
    loop {
        if tx.is_closed() {
            return;
        }
        let received = shared
            .rest
            .peek_lock(&entity, shared.config.receive_wait)
            .await;
        let (m, lock_uri) = match received {
            Ok(None) => {
                backoff = receive_backoff();
                continue;
            }
            Ok(Some(got)) => {
                backoff = receive_backoff();
                got
            }
            Err(e) => {
                let gone = e.kind() == ErrorKind::NotFound;
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                if gone && shared.config.provision {
                    // The subscription vanished (deleted, or a development server
                    // restarted): declare it again.
                    let mut topology = Topology::new(target.spec.service.clone());
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
                let pause = backoff.next().unwrap_or(MAX_RECEIVE_PAUSE);
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
            if let Err(e) = acker::unlock(
                &shared.rest,
                &lock_uri,
                "unlocking a dead letter on its way",
            )
            .await
            {
                tracing::debug!(error = %e, "unlocking a dead-letter copy failed; its lock will expire");
            }
            continue;
        }
        let acker = ServiceBusAcker::new(shared.clone(), target.clone(), lock_uri, &m);
        // The core decides whether it is an envelope; one that is not is dead-lettered
        // through the acker like any poison message.
        let delivery = Delivery::from_wire(m.wire_message(), acker);
        if tx.send(Ok(delivery)).await.is_err() {
            // The subscriber is gone; the undelivered acker unlocks on drop.
            return;
        }
    }
}

/// The longest pause between failed receives.
const MAX_RECEIVE_PAUSE: Duration = Duration::from_millis(25_600);

/// The pauses after failed receives in a row: 200 ms, doubling up to
/// [`MAX_RECEIVE_PAUSE`]; a receive that succeeds starts the sequence again.
fn receive_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_RECEIVE_PAUSE)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_pauses_double_from_200ms_to_25_6s() {
        let pauses: Vec<u64> = receive_backoff()
            .take(10)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 25_600, 25_600]
        );
    }
}
