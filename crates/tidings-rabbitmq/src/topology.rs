//! The broker objects the transport declares, and their names (the mapping table in ARCHITECTURE.md).
//!
//! For a topic `lending` and the subscription of service `catalog`:
//!
//! | object | name | kind |
//! |---|---|---|
//! | topic | `lending` | durable topic exchange |
//! | work queue | `catalog.lending` | durable queue, bound with routing key = wire name for each handled event, dead-letter exchange `catalog.lending.dlx` |
//! | dead-letter exchange | `catalog.lending.dlx` | durable fanout exchange |
//! | dead-letter queue | `catalog.lending.dlq` | durable queue bound to the dead-letter exchange |
//! | wait queues | `catalog.lending.wait.<N>ms` | durable classic queues with a fixed TTL of `N` ms (`x-message-ttl`, `N` a power of two up to 2^31), declared on first use, dead-lettering expired messages back to `catalog.lending` |
//!
//! Delayed redelivery ([`Acker::retry`](tidings_core::transport::Acker::retry) with a
//! delay) puts a copy into the wait queue of the largest bucket not above the delay (or
//! the next one up, when that is at most 32 ms more: a little late saves the hops of the
//! smallest buckets), stamped with its due time (`tidings-deliver-at`). Every message of a
//! wait queue has the queue's TTL, so the queue expires in the order it was filled and
//! nothing waits behind a longer delay. The copy comes back before it is due by less than
//! its bucket, and the core puts it back again for the rest, into a smaller bucket, until
//! it is due: a delay of `d` takes at most `log2(d)` hops, each adding only the broker's
//! latency, and is never handled early.
//!
//! Earlier versions used `catalog.lending.delay.<N>ms` queues, each message carrying its
//! own TTL; RabbitMQ expires those only at the head of the queue, so a short delay could
//! wait behind a longer one. They are no longer declared, and teardown and
//! `remove_subscription` still delete them.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use tidings_core::{
    transport::{SubscriptionSpec, Topology},
    BrokerObject, ErrorKind, Result,
};

use crate::config::{check_name, QueueType, RabbitMqConfig};
use crate::error::from_lapin;
use crate::transport::Shared;

/// The names of the queues and exchanges of one subscription, all built by the core's
/// naming rule ([`SubscriptionSpec::queue_name`], [`SubscriptionSpec::object_name`]).
///
/// ```
/// use std::time::Duration;
/// use tidings_core::transport::SubscriptionSpec;
/// use tidings_rabbitmq::QueueNames;
/// let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec!["lending.book-borrowed".into()]);
/// let names = QueueNames::of(&spec);
/// assert_eq!(names.work, "catalog.lending");
/// assert_eq!(names.dead_letter, "catalog.lending.dlq");
/// assert_eq!(names.dead_letter_exchange, "catalog.lending.dlx");
/// assert_eq!(names.delay(Duration::from_millis(1500)), "catalog.lending.wait.1024ms");
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
    /// The subscription (without its events), for the names of its wait queues.
    spec: SubscriptionSpec,
}

impl QueueNames {
    /// The names for `spec`.
    pub fn of(spec: &SubscriptionSpec) -> Self {
        QueueNames {
            exchange: spec.topic.clone(),
            work: spec.queue_name(),
            dead_letter: spec.dead_letter_queue_name(),
            dead_letter_exchange: spec.object_name("dlx"),
            spec: SubscriptionSpec::new(&spec.service, &spec.name, &spec.topic, Vec::new()),
        }
    }

    /// The wait queue that holds envelopes redelivered after `delay` for their first
    /// hop: one queue per power-of-two bucket of milliseconds,
    /// `<subscription>.<topic>.wait.<bucket>ms`, where the bucket is the largest power of
    /// two not above `delay`, or the next one up when that is at most 32 ms more (1 ms for
    /// less than 1 ms, 2^31 ms at most).
    pub fn delay(&self, delay: Duration) -> String {
        self.wait_bucket(delay_bucket_ms(delay))
    }

    /// The wait queue of the bucket `ms`.
    pub(crate) fn wait_bucket(&self, ms: impl std::fmt::Display) -> String {
        self.spec.object_name(&format!("wait.{ms}ms"))
    }

    /// The delay queue of the bucket `ms` as earlier versions named it (per-message TTL).
    fn legacy_delay_bucket(&self, ms: impl std::fmt::Display) -> String {
        self.spec.object_name(&format!("delay.{ms}ms"))
    }

    /// Every wait queue name the subscription can use (1 ms to 2^31 ms), then every delay
    /// queue name earlier versions could have declared (1 ms to 2^63 ms), for deleting
    /// them; names longer than RabbitMQ allows cannot exist and are left out.
    fn every_delay(&self) -> impl Iterator<Item = String> + '_ {
        let waits = (0..=MAX_BUCKET_SHIFT).map(|k| self.wait_bucket(1u64 << k));
        let legacy = (0..64).map(|k| self.legacy_delay_bucket(1u64 << k));
        waits
            .chain(legacy)
            .filter(|name| check_name("queue", name).is_ok())
    }
}

/// What [`declare`] creates for `topology`, and the wait queues of each subscription as
/// the name pattern `<work>.wait.*ms` (kind `delay queues`): they are declared on first
/// use, one per delay bucket. The `<work>.delay.*ms` queues of earlier versions, which
/// teardown also deletes, are not listed: nothing declares them any more.
pub(crate) fn broker_objects(topology: &Topology) -> Vec<BrokerObject> {
    let mut out: Vec<BrokerObject> = Vec::new();
    let mut push = |object: BrokerObject| {
        if !out.contains(&object) {
            out.push(object);
        }
    };
    for topic in &topology.publishes {
        push(BrokerObject::new("exchange", &topic.name));
    }
    for spec in &topology.subscriptions {
        let names = QueueNames::of(spec);
        push(BrokerObject::new("exchange", &names.exchange));
        push(BrokerObject::new("queue", &names.work));
        push(BrokerObject::new("exchange", &names.dead_letter_exchange));
        push(BrokerObject::new("queue", &names.dead_letter));
        push(BrokerObject::new("delay queues", names.wait_bucket("*")));
    }
    out
}

/// Delete what [`declare`] and the wait queues created for `topology`, messages and dead
/// letters included, and the delay queues of earlier versions; what is already gone is
/// not an error.
pub(crate) async fn teardown(shared: &Shared, topology: &Topology) -> Result<()> {
    let deadline = shared.deadline();
    let (channel, _) = shared.channel(deadline).await?;
    let mut queues = Vec::new();
    let mut exchanges = Vec::new();
    for spec in &topology.subscriptions {
        let names = QueueNames::of(spec);
        queues.push(names.work.clone());
        queues.push(names.dead_letter.clone());
        queues.extend(names.every_delay());
        exchanges.push(names.dead_letter_exchange.clone());
        exchanges.push(names.exchange.clone());
    }
    exchanges.extend(topology.publishes.iter().map(|t| t.name.clone()));
    delete_all(shared, channel, &queues, exchanges).await
}

/// Delete the queues of `spec` (work, dead-letter, wait, and the delay queues of earlier
/// versions) and its dead-letter exchange, not the topic's exchange; what is already gone
/// is not an error.
pub(crate) async fn remove_subscription(shared: &Shared, spec: &SubscriptionSpec) -> Result<()> {
    let (channel, _) = shared.channel(shared.deadline()).await?;
    let names = QueueNames::of(spec);
    let mut queues = vec![names.work.clone(), names.dead_letter.clone()];
    queues.extend(names.every_delay());
    delete_all(
        shared,
        channel,
        &queues,
        vec![names.dead_letter_exchange.clone()],
    )
    .await
}

/// Delete `queues`, then `exchanges` (without repeats), and close the channel.
async fn delete_all(
    shared: &Shared,
    mut channel: Channel,
    queues: &[String],
    mut exchanges: Vec<String>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    exchanges.retain(|e| seen.insert(e.clone()));
    for queue in queues {
        let deleted = channel
            .queue_delete(short(queue)?, QueueDeleteOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| from_lapin(e, format_args!("deleting the queue `{queue}`")));
        channel = gone_is_fine(shared, channel, deleted).await?;
    }
    for exchange in &exchanges {
        let deleted = channel
            .exchange_delete(short(exchange)?, ExchangeDeleteOptions::default())
            .await
            .map_err(|e| from_lapin(e, format_args!("deleting the exchange `{exchange}`")));
        channel = gone_is_fine(shared, channel, deleted).await?;
    }
    let _ = channel.close(200, "torn down".into()).await;
    Ok(())
}

/// The channel to go on with after a delete: the same one, or a new one when the broker
/// closed it for a `NOT_FOUND` (an object already gone is what teardown wants).
async fn gone_is_fine(shared: &Shared, channel: Channel, deleted: Result<()>) -> Result<Channel> {
    match deleted {
        Ok(()) => Ok(channel),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(shared.channel(shared.deadline()).await?.0),
        Err(e) => Err(e),
    }
}

/// How many messages `queue` (the subscription's `role`, `work queue` or `dead-letter
/// queue`) holds ready now, not counting those delivered and unacknowledged: a passive
/// declare. A queue that does not exist is `NotFound` (the subscription was never
/// provisioned); the broker then closes `channel`, so use one of its own.
pub(crate) async fn ready_count(channel: &Channel, queue: &str, role: &str) -> Result<u64> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            from_lapin(
                e,
                format_args!("looking up the {role} `{queue}` (is the subscription provisioned?)"),
            )
        })?;
    Ok(u64::from(declared.message_count()))
}

/// The backlog of `spec`: the messages ready in its work queue, on a channel of its own.
/// Messages delivered and not yet acknowledged, waiting out a retry delay in a delay
/// queue, or dead-lettered are not counted.
pub(crate) async fn backlog(shared: &Shared, spec: &SubscriptionSpec) -> Result<Option<u64>> {
    let queue = QueueNames::of(spec).work;
    let (channel, _) = shared.channel(shared.deadline()).await?;
    let count = ready_count(&channel, &queue, "work queue").await;
    let _ = channel.close(200, "counted".into()).await;
    count.map(Some)
}

/// The largest bucket is 2^31 ms (about 24.9 days): RabbitMQ refuses a TTL above
/// 2^32 - 1 ms. A longer delay goes through it more than once.
const MAX_BUCKET_SHIFT: u32 = 31;

/// How much longer than asked a delay may wait to save the hops of its smallest
/// buckets: a delay at most this much under a power of two waits that power of two.
pub(crate) const DELAY_SLACK: Duration = Duration::from_millis(32);

/// The bucket of a delay: the largest power of two of milliseconds not above `delay`, or
/// the next one up when that is at most [`DELAY_SLACK`] more (1 for less than 1 ms, 2^31
/// at most).
///
/// The wait queue of a bucket has the bucket as its queue-level TTL, so a message waits
/// exactly the bucket (plus the broker's latency) whatever else the queue holds: at most
/// its delay, or a little more to save hops, and more than half of it when the delay is
/// under 2^32 ms. What is left is waited in smaller buckets (see the module docs).
pub(crate) fn delay_bucket_ms(delay: Duration) -> u64 {
    let top = 1u128 << MAX_BUCKET_SHIFT;
    let ms = delay.as_millis().clamp(1, top);
    let floor = 1u128 << (127 - ms.leading_zeros());
    let up = if floor == ms { floor } else { floor * 2 };
    let over = Duration::from_millis(up as u64).saturating_sub(delay);
    if up <= top && over <= DELAY_SLACK {
        up as u64
    } else {
        floor as u64
    }
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

/// Declare the wait queue `name` of the bucket `ttl_ms`: every message expires after
/// `ttl_ms` (the queue's `x-message-ttl`) and goes back to the work queue through the
/// default exchange. Classic whatever the configured queue type, since it only holds
/// messages in transit.
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    names: &QueueNames,
    name: &str,
    ttl_ms: u64,
) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(&names.work));
    let ttl = i64::try_from(ttl_ms.min(1 << MAX_BUCKET_SHIFT)).unwrap_or(i64::MAX);
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    channel
        .queue_declare(short(name)?, durable_queue(), args)
        .await
        .map_err(|e| from_lapin(e, format_args!("declaring the wait queue `{name}`")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_largest_powers_of_two_not_above_the_delay_or_just_above() {
        assert_eq!(delay_bucket_ms(Duration::ZERO), 1);
        assert_eq!(delay_bucket_ms(Duration::from_micros(300)), 1);
        assert_eq!(delay_bucket_ms(Duration::from_millis(1)), 1);
        assert_eq!(delay_bucket_ms(Duration::from_millis(3)), 4);
        assert_eq!(delay_bucket_ms(Duration::from_millis(90)), 64);
        assert_eq!(delay_bucket_ms(Duration::from_millis(100)), 128);
        assert_eq!(delay_bucket_ms(Duration::from_millis(128)), 128);
        assert_eq!(delay_bucket_ms(Duration::from_millis(255)), 256);
        assert_eq!(delay_bucket_ms(Duration::from_millis(300)), 256);
        assert_eq!(delay_bucket_ms(Duration::from_millis(1500)), 1024);
        assert_eq!(delay_bucket_ms(Duration::from_secs(1)), 1024);
        assert_eq!(delay_bucket_ms(Duration::from_secs(10)), 8192);
        for ms in 1..5000u64 {
            let b = delay_bucket_ms(Duration::from_millis(ms));
            let slack = DELAY_SLACK.as_millis() as u64;
            assert!(
                b.is_power_of_two() && (b <= ms && ms < 2 * b || b > ms && b - ms <= slack),
                "{ms} -> {b}"
            );
        }
    }

    #[test]
    fn buckets_stop_at_the_largest_ttl_rabbitmq_takes() {
        let top = 1u64 << 31;
        assert_eq!(
            delay_bucket_ms(Duration::from_millis(u64::from(u32::MAX))),
            top
        );
        assert_eq!(delay_bucket_ms(Duration::from_secs(365 * 24 * 3600)), top);
        assert_eq!(delay_bucket_ms(Duration::MAX), top);
        assert!(top <= u64::from(u32::MAX));
    }

    #[test]
    fn a_delay_waited_out_bucket_by_bucket_takes_a_hop_per_bit_at_most() {
        // What the core and the acker do together: wait the bucket, put back the rest.
        let slack = DELAY_SLACK.as_millis() as u64;
        for ms in [1u64, 2, 3, 100, 17_000, 32_767, 60_000, 4_294_967_295] {
            let (mut left, mut hops, mut waited) = (ms, 0, 0);
            while left > 0 {
                let b = delay_bucket_ms(Duration::from_millis(left));
                waited += b;
                left = left.saturating_sub(b);
                hops += 1;
            }
            assert!(
                waited >= ms && waited - ms <= slack,
                "{ms}: waited {waited}"
            );
            assert!(hops <= 64 - ms.leading_zeros(), "{ms}: {hops} hops");
        }
    }

    #[test]
    fn every_delay_queue_name_is_among_the_ones_teardown_deletes() {
        let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec!["e".into()]);
        let names = QueueNames::of(&spec);
        let all: Vec<String> = names.every_delay().collect();
        for delay in [
            Duration::ZERO,
            Duration::from_millis(3),
            Duration::from_secs(3600),
            Duration::from_secs(u64::MAX / 1000),
            Duration::MAX,
        ] {
            assert!(all.contains(&names.delay(delay)), "{delay:?}");
        }
        // The per-message-TTL queues of earlier versions too.
        for old in ["catalog.lending.delay.1ms", "catalog.lending.delay.2048ms"] {
            assert!(all.contains(&old.to_string()), "{old}");
        }
        assert!(all.contains(&format!("catalog.lending.delay.{}ms", 1u64 << 63)));
        assert_eq!(all.len(), 32 + 64);
    }

    #[test]
    fn broker_objects_name_every_declared_object_once() {
        let mut topology = Topology::new("catalog");
        topology
            .publishes
            .push(tidings_core::transport::TopicSpec::new("lending", vec![]));
        topology.subscriptions.push(SubscriptionSpec::new(
            "catalog",
            "catalog",
            "lending",
            vec!["lending.book-borrowed".into()],
        ));
        let shown: Vec<String> = broker_objects(&topology)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "exchange `lending`",
                "queue `catalog.lending`",
                "exchange `catalog.lending.dlx`",
                "queue `catalog.lending.dlq`",
                "delay queues `catalog.lending.wait.*ms`",
            ]
        );
    }
}
