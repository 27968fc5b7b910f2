//! Broker names derived from the tidings topology, and creating and deleting the topics.
//!
//! A subscription's own topics and its consumer group are named by the rule every
//! transport follows (`SubscriptionSpec::object_name`): the subscription, the topic, and
//! what the object is for.
//!
//! | tidings | Kafka |
//! |---|---|
//! | topic `lending` | topic `lending` |
//! | subscription `catalog` to `lending` | consumer group `catalog.lending` on `lending` and on `catalog.lending.retry` |
//! | delayed retries of `catalog` | topic `catalog.lending.retry` |
//! | dead letters of `catalog` | topic `catalog.lending.dlq` |
//! | replayed dead letters of `catalog` | topic `catalog.lending.dlq.replayed` (markers) |

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tidings_core::{
    transport::{SubscriptionSpec, Topology},
    BrokerObject, Error, ErrorKind, Result,
};

use crate::config::KafkaConfig;
use crate::error::{from_kafka, kind_of_code};
use crate::transport::check_brokers;

/// The broker names of one subscription.
///
/// ```
/// use tidings_core::transport::SubscriptionSpec;
/// use tidings_kafka::SubscriptionTopics;
/// let names = SubscriptionTopics::of(&SubscriptionSpec::new("catalog", "catalog", "lending", vec![]));
/// assert_eq!(names.group, "catalog.lending");
/// assert_eq!(names.retry, "catalog.lending.retry");
/// assert_eq!(names.dead_letter, "catalog.lending.dlq");
/// assert_eq!(names.replayed, "catalog.lending.dlq.replayed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionTopics {
    /// The topic the events are published to (`lending`).
    pub topic: String,
    /// The consumer group (`catalog.lending`): the subscription and the topic.
    pub group: String,
    /// Delayed retries (`catalog.lending.retry`).
    pub retry: String,
    /// Dead letters (`catalog.lending.dlq`).
    pub dead_letter: String,
    /// Markers of replayed dead letters (`catalog.lending.dlq.replayed`).
    pub replayed: String,
}

impl SubscriptionTopics {
    /// The names for `spec`.
    pub fn of(spec: &SubscriptionSpec) -> Self {
        SubscriptionTopics {
            topic: spec.topic.clone(),
            group: spec.queue_name(),
            retry: spec.object_name("retry"),
            dead_letter: spec.dead_letter_queue_name(),
            replayed: spec.object_name("dlq.replayed"),
        }
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn check_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{name:?} is not a valid Kafka topic name: use 1 to 249 ASCII letters, digits, '.', '_' or '-' (shorten the topic, subscription or namespace name)"
        )))
    }
}

/// How long the retry topics this transport creates keep a record (`retention.ms`): 7
/// days, Kafka's default, set explicitly so that it does not depend on the broker's
/// default. A retry or a scheduled event waits in its retry topic until due, so this is
/// the furthest ahead one can be due ([`Scheduling::max_delay`](tidings_core::transport::Scheduling)
/// in the transport's capabilities). A retry topic that already existed keeps its own
/// retention.
pub(crate) const RETRY_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The retention-style settings of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The broker's defaults.
    Default,
    /// A retry topic: [`RETRY_RETENTION`].
    Retry,
    /// Compacted (replay markers).
    Compact,
}

/// Every topic `topology` needs, with the retention-style settings of each.
pub(crate) fn topics_of(topology: &Topology) -> Result<Vec<(String, Keep)>> {
    let mut out: Vec<(String, Keep)> = Vec::new();
    let mut add = |name: String, keep: Keep| -> Result<()> {
        check_topic_name(&name)?;
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, keep));
        }
        Ok(())
    };
    for t in &topology.publishes {
        add(t.name.clone(), Keep::Default)?;
    }
    for s in &topology.subscriptions {
        let names = SubscriptionTopics::of(s);
        add(names.topic, Keep::Default)?;
        add(names.retry, Keep::Retry)?;
        add(names.dead_letter, Keep::Default)?;
        add(names.replayed, Keep::Compact)?;
    }
    Ok(out)
}

/// The topics [`provision`] creates for `topology`, by name. Topic names that Kafka
/// would refuse are left out (provisioning fails on them).
pub(crate) fn broker_objects(topology: &Topology) -> Vec<BrokerObject> {
    let mut out: Vec<BrokerObject> = Vec::new();
    let mut add = |name: &str| {
        if check_topic_name(name).is_ok() && !out.iter().any(|o| o.name == name) {
            out.push(BrokerObject::new("topic", name));
        }
    };
    for t in &topology.publishes {
        add(&t.name);
    }
    for s in &topology.subscriptions {
        let names = SubscriptionTopics::of(s);
        for name in [names.topic, names.retry, names.dead_letter, names.replayed] {
            add(&name);
        }
    }
    out
}

/// The partitions of `topic`, from a metadata request on `client`; `None` when the topic
/// does not exist.
pub(crate) fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| from_kafka(format_args!("reading the metadata of {topic}"), e))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = meta.error() {
        let code = RDKafkaErrorCode::from(err);
        if matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
        ) {
            return Ok(None);
        }
        return Err(from_kafka(
            format_args!("reading the metadata of {topic}"),
            KafkaError::MetadataFetch(code),
        ));
    }
    Ok(Some(meta.partitions().iter().map(|p| p.id()).collect()))
}

fn admin(config: &KafkaConfig) -> Result<(AdminClient<DefaultClientContext>, AdminOptions)> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| from_kafka("creating the Kafka admin client", e))?;
    let options = AdminOptions::new()
        .request_timeout(Some(config.request_timeout))
        .operation_timeout(Some(config.request_timeout));
    Ok((admin, options))
}

/// Delete every topic of `topology` (retry, dead-letter and replay-marker topics
/// included); topics already gone are fine.
pub(crate) async fn teardown(config: &KafkaConfig, topology: &Topology) -> Result<()> {
    let topics: Vec<String> = broker_objects(topology)
        .into_iter()
        .map(|o| o.name)
        .collect();
    delete_topics(config, topics).await
}

/// Delete the retry, dead-letter and replay-marker topics of `spec` and its consumer group
/// (a broker that cannot delete groups keeps the empty group), not the topic; what is
/// already gone is not an error.
pub(crate) async fn remove_subscription(
    config: &KafkaConfig,
    spec: &SubscriptionSpec,
) -> Result<()> {
    let names = SubscriptionTopics::of(spec);
    delete_topics(config, vec![names.retry, names.dead_letter, names.replayed]).await?;
    let (admin, options) = admin(config)?;
    let group = spec.queue_name();
    match admin.delete_groups(&[group.as_str()], &options).await {
        Ok(results) => {
            for r in results {
                if let Err((group, code)) = r {
                    tracing::debug!(%group, %code, "the consumer group was not deleted");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, %group, "the consumer group was not deleted"),
    }
    Ok(())
}

/// Delete `topics`; topics already gone are fine.
async fn delete_topics(config: &KafkaConfig, topics: Vec<String>) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    check_brokers(config).await?;
    let (admin, options) = admin(config)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&names, &options)
        .await
        .map_err(|e| from_kafka("deleting the Kafka topics", e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((
                _,
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) => {}
            Err((topic, code)) => {
                return Err(Error::new(
                    kind_of_code(code),
                    format!("deleting the Kafka topic {topic} failed: {code}"),
                ))
            }
        }
    }
    Ok(())
}

/// The waits between tries to create topics, for a broker that may still be starting: four
/// more tries, 0.4 s after the first and doubling (0.4, 0.8, 1.6, 3.2 s).
fn provision_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(400))
        .with_max_times(4)
        .build()
}

/// Create the missing topics (existing ones are left as they are).
pub(crate) async fn provision(config: &KafkaConfig, topology: &Topology) -> Result<()> {
    let topics = topics_of(topology)?;
    if topics.is_empty() {
        return Ok(());
    }
    check_brokers(config).await?;
    let (admin, options) = admin(config)?;
    let retention = RETRY_RETENTION.as_millis().to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, keep)| {
            let t = NewTopic::new(
                name,
                config.partitions,
                TopicReplication::Fixed(config.replication),
            );
            match keep {
                Keep::Default => t,
                Keep::Retry => t.set("retention.ms", &retention),
                Keep::Compact => t.set("cleanup.policy", "compact"),
            }
        })
        .collect();
    let mut delays = provision_backoff();
    loop {
        let failure = match admin.create_topics(new_topics.iter(), &options).await {
            Ok(results) => match results
                .into_iter()
                .filter_map(|r| r.err())
                .find(|(_, code)| *code != RDKafkaErrorCode::TopicAlreadyExists)
            {
                None => return Ok(()),
                Some((topic, code)) => Error::new(
                    kind_of_code(code),
                    format!("creating the Kafka topic {topic} failed: {code}"),
                ),
            },
            Err(e) => from_kafka("creating the Kafka topics", e),
        };
        let transient = matches!(
            failure.kind(),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Backend
        );
        match delays.next().filter(|_| transient) {
            Some(delay) => {
                tracing::warn!(error = %failure, ?delay, "creating Kafka topics failed; trying again");
                tokio::time::sleep(delay).await;
            }
            None => return Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_naming_rule() {
        let spec = SubscriptionSpec::new("catalog", "ns.catalog", "ns.lending", vec![]);
        let n = SubscriptionTopics::of(&spec);
        assert_eq!(n.topic, "ns.lending");
        assert_eq!(n.group, spec.queue_name());
        assert_eq!(n.group, "ns.catalog.ns.lending");
        assert_eq!(n.retry, "ns.catalog.ns.lending.retry");
        assert_eq!(n.dead_letter, spec.dead_letter_queue_name());
        assert_eq!(n.dead_letter, "ns.catalog.ns.lending.dlq");
        assert_eq!(n.replayed, "ns.catalog.ns.lending.dlq.replayed");
    }

    #[test]
    fn broker_objects_name_every_topic_once() {
        let mut topology = Topology::new("catalog");
        topology
            .publishes
            .push(tidings_core::transport::TopicSpec::new("lending", vec![]));
        topology.subscriptions.push(SubscriptionSpec::new(
            "catalog",
            "catalog",
            "lending",
            vec![],
        ));
        let shown: Vec<String> = broker_objects(&topology)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "topic `lending`",
                "topic `catalog.lending.retry`",
                "topic `catalog.lending.dlq`",
                "topic `catalog.lending.dlq.replayed`",
            ]
        );
    }

    #[test]
    fn provisioning_tries_four_more_times_doubling_the_wait() {
        let waits: Vec<u64> = provision_backoff().map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [400, 800, 1600, 3200]);
    }

    #[test]
    fn bad_topic_names_are_config_errors() {
        assert!(check_topic_name("lending").is_ok());
        assert_eq!(
            check_topic_name("a b").unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(
            check_topic_name(&"x".repeat(250)).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(
            check_topic_name("..").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
