//! Consuming: one channel and consumer per subscription with `basic.qos` prefetch and
//! manual acknowledgements ([`crate::acker`]). Every message received is handed to the
//! core as it came ([`crate::wire`]); the core decides whether it is an envelope and
//! dead-letters it through the acker when it is not.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Consumer;
use tidings_core::{
    transport::{Delivery, Subscriber, SubscriptionSpec},
    DeadLetterInfo, Error, ErrorKind, Result,
};
use tokio::time::Instant;

use crate::acker::{AckBatcher, RabbitMqAcker};
use crate::error::from_lapin;
use crate::topology::QueueNames;
use crate::transport::Shared;
use crate::wire::wire_message;

/// One subscription and the names that go with it.
pub(crate) struct SubInfo {
    pub(crate) names: QueueNames,
    service: Arc<str>,
    subscription: Arc<str>,
    topic: Arc<str>,
}

impl SubInfo {
    pub(crate) fn new(spec: &SubscriptionSpec) -> Self {
        SubInfo {
            names: QueueNames::of(spec),
            service: Arc::from(spec.service.as_str()),
            subscription: Arc::from(spec.name.as_str()),
            topic: Arc::from(spec.topic.as_str()),
        }
    }

    pub(crate) fn info(&self, reason: impl Into<String>, attempts: u32) -> DeadLetterInfo {
        DeadLetterInfo::new(
            reason,
            attempts,
            self.service.clone(),
            self.subscription.clone(),
            self.topic.clone(),
        )
    }
}

/// The deliveries of one subscription on RabbitMQ (see [`Subscriber`]).
pub struct RabbitMqSubscriber {
    shared: Arc<Shared>,
    sub: Arc<SubInfo>,
    prefetch: u16,
    active: Option<Active>,
}

struct Active {
    consumer: Consumer,
    acks: Arc<AckBatcher>,
}

impl fmt::Debug for RabbitMqSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSubscriber")
            .field("queue", &self.sub.names.work)
            .field("prefetch", &self.prefetch)
            .field("consuming", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl RabbitMqSubscriber {
    pub(crate) async fn start(shared: Arc<Shared>, spec: &SubscriptionSpec) -> Result<Self> {
        // `Subscription::prefetch` is the one prefetch setting: it becomes `basic.qos`.
        let prefetch = spec.prefetch.max(1);
        let mut subscriber = RabbitMqSubscriber {
            shared,
            sub: Arc::new(SubInfo::new(spec)),
            prefetch,
            active: None,
        };
        // Consume now, so that a missing queue is reported by `build()`.
        subscriber.active = Some(subscriber.open().await?);
        Ok(subscriber)
    }

    /// Open a channel with the prefetch and start consuming the work queue.
    async fn open(&self) -> Result<Active> {
        match self.consume().await {
            // The queue is gone (deleted by hand): declare the topology again, once.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(
                    queue = %self.sub.names.work,
                    "the queue does not exist; declaring the topology again"
                );
                self.shared.redeclare(self.shared.deadline()).await?;
                self.consume().await
            }
            other => other,
        }
    }

    async fn consume(&self) -> Result<Active> {
        let deadline = Instant::now()
            + self
                .shared
                .config
                .publish_timeout
                .min(Duration::from_secs(5));
        let (channel, _) = self.shared.channel(deadline).await?;
        let queue = &self.sub.names.work;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| from_lapin(e, format_args!("setting the prefetch of `{queue}`")))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| from_lapin(e, format_args!("consuming the queue `{queue}`")))?;
        let acks = AckBatcher::start(channel, self.prefetch);
        Ok(Active { consumer, acks })
    }

    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            active.acks.retire(active.consumer);
        }
    }

    fn acker(&self, tag: u64, acks: &Arc<AckBatcher>) -> RabbitMqAcker {
        RabbitMqAcker::new(tag, acks, self.shared.clone(), self.sub.clone())
    }
}

impl Drop for RabbitMqSubscriber {
    fn drop(&mut self) {
        self.retire();
    }
}

impl Subscriber for RabbitMqSubscriber {
    type Acker = RabbitMqAcker;

    async fn next(&mut self) -> Option<Result<Delivery<RabbitMqAcker>>> {
        loop {
            if self.active.is_none() {
                match self.open().await {
                    Ok(active) => self.active = Some(active),
                    Err(e) => return Some(Err(e)),
                }
            }
            let active = self.active.as_mut().expect("active");
            let received = active.consumer.next().await;
            match received {
                Some(Ok(delivery)) => {
                    let acks = active.acks.clone();
                    if acks.has_failed() {
                        // The channel is gone: the broker delivers this again.
                        continue;
                    }
                    let AmqpDelivery {
                        delivery_tag,
                        redelivered,
                        properties,
                        data,
                        ..
                    } = delivery;
                    let acker = self.acker(delivery_tag, &acks);
                    let message = wire_message(&properties, data, redelivered);
                    return Some(Ok(Delivery::from_wire(message, acker)));
                }
                Some(Err(e)) => {
                    self.retire();
                    return Some(Err(from_lapin(
                        e,
                        format_args!(
                            "receiving from `{}` (the consumer reconnects)",
                            self.sub.names.work
                        ),
                    )));
                }
                None => {
                    self.retire();
                    return Some(Err(Error::unavailable(format!(
                        "the broker cancelled the consumer of `{}` (queue deleted or node restarting); consuming again",
                        self.sub.names.work
                    ))));
                }
            }
        }
    }
}
