//! The backlog of a subscription: its consumer group's lag.
//!
//! The subscription's consumer group (`SubscriptionSpec::queue_name`, the group its
//! subscriber joins) reads the topic and the subscription's retry topic; the backlog is
//! the lag over the partitions of both: per partition the high watermark less the offset
//! the group committed. A partition the group never committed counts from where the
//! subscriber would start: from the low watermark (everything the topic still has) with
//! [`StartFrom::Earliest`], nothing with [`StartFrom::Latest`]. Records handed to the
//! subscriber and not yet committed (the commit follows every `commit_interval`) still
//! count; so do retries waiting for their due time in the retry topic. Dead letters (their
//! own topic) do not.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tidings_core::{transport::SubscriptionSpec, Error, ErrorKind, Result};

use crate::config::{KafkaConfig, StartFrom};
use crate::error::from_kafka;
use crate::topology::{partitions, SubscriptionTopics};
use crate::transport::check_brokers;

/// The lag of `spec`'s consumer group, once the brokers answered within the connect
/// timeout. A subscription whose retry topic does not exist was never provisioned:
/// `NotFound`.
pub(crate) async fn backlog(config: &KafkaConfig, spec: &SubscriptionSpec) -> Result<u64> {
    check_brokers(config).await?;
    let (config, spec) = (config.clone(), spec.clone());
    tokio::task::spawn_blocking(move || lag(&config, &spec))
        .await
        .map_err(|e| Error::backend("reading the backlog", e))?
}

/// [`backlog`], on a short-lived consumer with the subscription's group id (it reads the
/// group's committed offsets and never joins the group).
fn lag(config: &KafkaConfig, spec: &SubscriptionSpec) -> Result<u64> {
    let names = SubscriptionTopics::of(spec);
    let timeout = config.request_timeout;
    let mut c = config.client_config();
    c.set("group.id", &names.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = c.create().map_err(|e| {
        from_kafka(
            format_args!(
                "creating a Kafka consumer to read the lag of {}",
                names.group
            ),
            e,
        )
    })?;
    // (topic, partition, low watermark, high watermark)
    let mut marks: Vec<(&str, i32, i64, i64)> = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for topic in [names.retry.as_str(), names.topic.as_str()] {
        let Some(partitions) = partitions(consumer.client(), topic, timeout)? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the topic `{topic}` of subscription `{}` does not exist: is the subscription name right, and was it provisioned (a bus with it built once)?",
                    spec.name
                ),
            ));
        };
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|e| from_kafka(format_args!("reading the offsets of {topic}"), e))?;
            tpl.add_partition(topic, p);
            marks.push((topic, p, low, high));
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        from_kafka(
            format_args!("reading the offsets committed by {}", names.group),
            e,
        )
    })?;
    let mut total = 0u64;
    for (topic, p, low, high) in marks {
        let committed = committed
            .find_partition(topic, p)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
        let from = match (committed, config.start_from) {
            (Offset::Offset(o), _) => o.max(low),
            (_, StartFrom::Earliest) => low,
            (_, StartFrom::Latest) => high,
        };
        total += u64::try_from(high - from).unwrap_or(0);
    }
    Ok(total)
}
