//! The broker objects the transport declares, and their names (DESIGN.md §5).
//!
//! For a topic `lending` and the subscription of service `catalog`:
//!
//! | object | name | kind |
//! |---|---|---|
//! | topic | `lending` | durable topic exchange |
//! | work queue | `catalog.lending` | durable queue, bound with routing key = wire name for each handled event, dead-letter exchange `catalog.lending.dlx` |
//! | dead-letter exchange | `catalog.lending.dlx` | durable fanout exchange |
//! | dead-letter queue | `catalog.lending.dlq` | durable queue bound to the dead-letter exchange |
//! | delay queues | `catalog.lending.delay.<N>ms` | durable classic queues, declared on first use, dead-lettering expired messages back to `catalog.lending` |

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use tidings_core::{Result, SubscriptionSpec, Topology};

use crate::config::{check_name, QueueType, RabbitMqConfig};
use crate::error::from_lapin;

/// The names of the queues and exchanges of one subscription.
///
/// ```
/// use std::time::Duration;
/// use tidings_core::SubscriptionSpec;
/// use tidings_rabbitmq::QueueNames;
/// let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec!["lending.book-borrowed".into()]);
/// let names = QueueNames::of(&spec);
/// assert_eq!(names.work, "catalog.lending");
/// assert_eq!(names.dead_letter, "catalog.lending.dlq");
/// assert_eq!(names.dead_letter_exchange, "catalog.lending.dlx");
/// assert_eq!(names.delay(Duration::from_millis(1500)), "catalog.lending.delay.2048ms");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    /// The topic exchange the subscription is bound to.
    pub exchange: String,
    /// The work queue (`<subscription>.<topic>`).
    pub work: String,
    /// The dead-letter queue (`<subscription>.<topic>.dlq`).
    pub dead_letter: String,
    /// The dead-letter exchange of the work queue (`<subscription>.<topic>.dlx`).
    pub dead_letter_exchange: String,
}

impl QueueNames {
    /// The names for `spec`.
    pub fn of(spec: &SubscriptionSpec) -> Self {
        let work = spec.queue_name();
        QueueNames {
            exchange: spec.topic.clone(),
            dead_letter: spec.dead_letter_queue_name(),
            dead_letter_exchange: format!("{work}.dlx"),
            work,
        }
    }

    /// The delay queue that holds envelopes redelivered after `delay`: one queue per
    /// power-of-two bucket of milliseconds, `<work>.delay.<bucket>ms`, where the bucket is
    /// the smallest power of two at least `delay`.
    pub fn delay(&self, delay: Duration) -> String {
        format!("{}.delay.{}ms", self.work, delay_bucket_ms(delay))
    }
}

/// The bucket of a delay: the smallest power of two of milliseconds that is at least
/// `delay` (at least 1).
///
/// Every message of a bucket's queue carries its exact delay as the per-message TTL
/// (`expiration`). RabbitMQ expires messages only from the head of a queue, so a message
/// can wait behind an earlier one with a longer TTL; within one bucket every TTL lies in
/// `(bucket/2, bucket]`, so a message waits at least its delay and less than twice it.
pub(crate) fn delay_bucket_ms(delay: Duration) -> u64 {
    let ms = delay.as_millis().clamp(1, u64::MAX as u128 / 2) as u64;
    ms.next_power_of_two()
}

fn queue_args(config: &RabbitMqConfig) -> FieldTable {
    let mut args = FieldTable::default();
    if config.queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long(config.queue_type.as_str()));
    }
    args
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn short(s: &str) -> Result<ShortString> {
    check_name("name", s)?;
    Ok(ShortString::from(s))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declare the topic exchange `name`.
pub(crate) async fn declare_exchange(channel: &Channel, name: &str) -> Result<()> {
    channel
        .exchange_declare(
            short(name)?,
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| from_lapin(e, format_args!("declaring the topic exchange `{name}`")))
}

/// Declare everything `topology` needs. Idempotent.
pub(crate) async fn declare(
    channel: &Channel,
    topology: &Topology,
    config: &RabbitMqConfig,
) -> Result<()> {
    for topic in &topology.publishes {
        declare_exchange(channel, &topic.name).await?;
    }
    for spec in &topology.subscriptions {
        declare_subscription(channel, spec, config).await?;
    }
    Ok(())
}

async fn declare_subscription(
    channel: &Channel,
    spec: &SubscriptionSpec,
    config: &RabbitMqConfig,
) -> Result<()> {
    let names = QueueNames::of(spec);
    declare_exchange(channel, &names.exchange).await?;

    // Dead letters: a fanout exchange and its queue.
    channel
        .exchange_declare(
            short(&names.dead_letter_exchange)?,
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            from_lapin(
                e,
                format_args!(
                    "declaring the dead-letter exchange `{}`",
                    names.dead_letter_exchange
                ),
            )
        })?;
    channel
        .queue_declare(
            short(&names.dead_letter)?,
            durable_queue(),
            queue_args(config),
        )
        .await
        .map_err(|e| {
            from_lapin(
                e,
                format_args!("declaring the dead-letter queue `{}`", names.dead_letter),
            )
        })?;
    channel
        .queue_bind(
            short(&names.dead_letter)?,
            short(&names.dead_letter_exchange)?,
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            from_lapin(
                e,
                format_args!("binding the dead-letter queue `{}`", names.dead_letter),
            )
        })?;

    // The work queue, bound per handled event.
    let mut args = queue_args(config);
    args.insert(
        "x-dead-letter-exchange".into(),
        long(&names.dead_letter_exchange),
    );
    if config.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    channel
        .queue_declare(short(&names.work)?, durable_queue(), args)
        .await
        .map_err(|e| from_lapin(e, format_args!("declaring the queue `{}`", names.work)))?;
    for event in &spec.events {
        check_name("event wire name (routing key)", event)?;
        channel
            .queue_bind(
                short(&names.work)?,
                short(&names.exchange)?,
                ShortString::from(event.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                from_lapin(
                    e,
                    format_args!(
                        "binding queue `{}` to `{}` for `{event}`",
                        names.work, names.exchange
                    ),
                )
            })?;
    }
    Ok(())
}

/// Declare the delay queue `name`: expired messages go back to the work queue through
/// the default exchange. Classic whatever the configured queue type, since it only holds
/// messages in transit.
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    names: &QueueNames,
    name: &str,
) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(&names.work));
    channel
        .queue_declare(short(name)?, durable_queue(), args)
        .await
        .map_err(|e| from_lapin(e, format_args!("declaring the delay queue `{name}`")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_at_least_the_delay() {
        assert_eq!(delay_bucket_ms(Duration::ZERO), 1);
        assert_eq!(delay_bucket_ms(Duration::from_millis(1)), 1);
        assert_eq!(delay_bucket_ms(Duration::from_millis(100)), 128);
        assert_eq!(delay_bucket_ms(Duration::from_millis(128)), 128);
        assert_eq!(delay_bucket_ms(Duration::from_millis(129)), 256);
        assert_eq!(delay_bucket_ms(Duration::from_secs(1)), 1024);
        for ms in 1..5000u64 {
            let b = delay_bucket_ms(Duration::from_millis(ms));
            assert!(b >= ms && b < 2 * ms.max(1) || ms == 1, "{ms} -> {b}");
        }
    }
}
