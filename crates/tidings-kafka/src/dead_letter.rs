//! Listing and replaying dead letters.
//!
//! Dead letters are records of the subscription's dead-letter topic,
//! `<subscription>.<topic>.dlq`. Listing reads that topic from the beginning with a
//! throwaway consumer that is assigned the partitions directly (no consumer group, nothing
//! committed), up to the end of each partition.
//!
//! Replaying writes what `Replay::envelope_for` makes of each selected dead letter (the
//! parked envelope or the edited copy, with the dead-letter headers removed) to the
//! subscription's retry topic, due at once, so only this subscription sees them again
//! (publishing them to the topic would deliver them to every other subscription too). A
//! Kafka topic cannot delete one record, so each replayed dead letter gets a marker record
//! in `<subscription>.<topic>.dlq.replayed` (compacted, key `<partition>:<offset>` of the
//! dead letter) and listing leaves out the dead letters that have one. A dead letter that
//! fails again is a new record in the dead-letter topic and is listed again.
//!
//! Purging writes the same markers without replaying: a purged dead letter is never listed,
//! replayed or delivered again (its record stays in the topic until retention removes it).
//! A subscription whose dead-letter topic does not exist was never provisioned: listing,
//! replaying and purging it is `NotFound`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tidings_core::{
    transport::{attrs, Delivery, SubscriptionSpec},
    DeadLetter, DeadLetterInfo, Envelope, Error, ErrorKind, Replay, Result,
};

use crate::config::KafkaConfig;
use crate::error::from_kafka;
use crate::publisher::{send_all, Outgoing};
use crate::topology::{partitions, SubscriptionTopics};
use crate::transport::check_brokers;
use crate::wire::{self, headers_of, DUE_HEADER};

/// The envelope of a record read back: the core decodes it like any delivery; a record
/// that is not an envelope (written there by another producer) gets dead-letter details
/// made up from why it is not.
fn envelope_of(message: &BorrowedMessage<'_>, spec: &SubscriptionSpec) -> Envelope {
    let (wire, _) = wire::read(message, false);
    let read = Delivery::from_wire(wire, ());
    let mut envelope = Arc::unwrap_or_clone(read.envelope);
    if envelope.header(attrs::DLQ_REASON).is_none() || read.undecodable.is_some() {
        let reason = read
            .undecodable
            .unwrap_or_else(|| "written to the dead-letter topic without a reason".into());
        DeadLetterInfo::new(
            reason,
            0,
            Arc::from(spec.service.as_str()),
            Arc::from(spec.name.as_str()),
            Arc::from(spec.topic.as_str()),
        )
        .stamp(&mut envelope);
    }
    envelope
}

/// One record read back: where it was and the envelope in it.
struct Read {
    partition: i32,
    offset: i64,
    key: Option<String>,
    /// The envelope, when asked for.
    envelope: Option<Envelope>,
}

/// A partition being read: the offset it ends at (ListOffsets), and the last offset read.
struct Open {
    high: i64,
    last: Option<i64>,
}

/// Read every record `topic` has now (with its envelope when `spec` is given), with a
/// consumer that is assigned the partitions (no group join, nothing committed). Each
/// partition is read from its low to its high watermark and closed at whichever comes
/// first: the record just below the high watermark or the end of the partition (EOF). A
/// missing topic reads as empty.
///
/// Nothing waits for a timeout on the way: fetches come back at once (`fetch.wait.max.ms`
/// 10), and a partition is done as soon as its end was read, so a thousand dead letters
/// take well under a second on loopback.
fn read_all(
    config: &KafkaConfig,
    spec: Option<&SubscriptionSpec>,
    topic: &str,
) -> Result<Vec<Read>> {
    read_topic(config, spec, topic, false)
}

/// [`read_all`], where a missing topic is `NotFound` when `required`.
fn read_topic(
    config: &KafkaConfig,
    spec: Option<&SubscriptionSpec>,
    topic: &str,
    required: bool,
) -> Result<Vec<Read>> {
    let missing = || {
        if required {
            Err(Error::new(
                ErrorKind::NotFound,
                format!("the dead-letter topic `{topic}` does not exist: is the subscription name right, and was it provisioned (a bus with it built once)?"),
            ))
        } else {
            Ok(Vec::new())
        }
    };
    let mut c = config.client_config();
    // librdkafka needs a group id even for assigned partitions; nothing joins it.
    c.set(
        "group.id",
        format!("tidings-reader-{}", uuid::Uuid::new_v4()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("enable.partition.eof", "true")
    .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| from_kafka("creating a Kafka consumer to read dead letters", e))?;
    let timeout = config.request_timeout;
    let mut tpl = TopicPartitionList::new();
    let mut open: HashMap<i32, Open> = HashMap::new();
    let Some(partitions) = partitions(consumer.client(), topic, timeout)? else {
        return missing();
    };
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| from_kafka(format_args!("reading the offsets of {topic}"), e))?;
        if high <= low {
            continue; // empty
        }
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(|e| from_kafka("reading dead letters", e))?;
        open.insert(p, Open { high, last: None });
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| from_kafka(format_args!("reading {topic}"), e))?;
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(100);
    while !open.is_empty() {
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("reading {topic} did not reach its end within {timeout:?}"),
            ));
        }
        match consumer.poll(wait) {
            None => {
                // Nothing more fetched: a partition read up to its ListOffsets end is done.
                // (Some Kafka-API brokers, tansu with in-memory storage, answer ListOffsets
                // with the base offset of the last batch: the rest of that batch came with
                // it, and is read by now.)
                open.retain(|_, o| o.last.is_none_or(|l| l + 1 < o.high));
                wait = Duration::from_millis(100);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading dead letters failed; trying again")
            }
            Some(Ok(m)) => {
                if let Some(o) = open.get_mut(&m.partition()) {
                    o.last = Some(o.last.map_or(m.offset(), |l| l.max(m.offset())));
                    if m.offset() + 1 >= o.high {
                        // At the end: take what this fetch brought along, then stop.
                        wait = Duration::ZERO;
                    }
                }
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    envelope: spec.map(|spec| envelope_of(&m, spec)),
                });
            }
        }
    }
    Ok(out)
}

/// The unreplayed dead letters of a subscription, oldest first, with their places.
fn unreplayed(
    config: &KafkaConfig,
    spec: &SubscriptionSpec,
) -> Result<Vec<(i32, i64, DeadLetter)>> {
    let names = SubscriptionTopics::of(spec);
    let replayed: HashSet<String> = read_all(config, None, &names.replayed)?
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    let mut letters: Vec<(i32, i64, DeadLetter)> =
        read_topic(config, Some(spec), &names.dead_letter, true)?
            .into_iter()
            .filter(|r| !replayed.contains(&marker_key(r.partition, r.offset)))
            .filter_map(|r| {
                let envelope = r.envelope?;
                DeadLetter::from_envelope(envelope).map(|d| (r.partition, r.offset, d))
            })
            .collect();
    letters.sort_by_key(|(p, o, d)| (d.info.time, *p, *o));
    Ok(letters)
}

fn marker_key(partition: i32, offset: i64) -> String {
    format!("{partition}:{offset}")
}

/// The unreplayed dead letters of `spec`, once the brokers answered within the connect
/// timeout.
async fn letters_of(
    config: &KafkaConfig,
    spec: &SubscriptionSpec,
) -> Result<Vec<(i32, i64, DeadLetter)>> {
    check_brokers(config).await?;
    let (config, spec) = (config.clone(), spec.clone());
    tokio::task::spawn_blocking(move || unreplayed(&config, &spec))
        .await
        .map_err(|e| Error::backend("reading dead letters", e))?
}

/// List up to `limit` dead letters of `spec`, oldest first.
pub(crate) async fn list(
    config: &KafkaConfig,
    spec: &SubscriptionSpec,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let letters = letters_of(config, spec).await?;
    Ok(letters.into_iter().take(limit).map(|(_, _, d)| d).collect())
}

/// Replay the selected dead letters of `spec` through its retry topic; how many.
pub(crate) async fn replay(
    config: &KafkaConfig,
    producer: &FutureProducer,
    spec: &SubscriptionSpec,
    which: &Replay,
) -> Result<usize> {
    let names = SubscriptionTopics::of(spec);
    let letters = letters_of(config, spec).await?;
    let selected: Vec<(i32, i64, Envelope)> = letters
        .into_iter()
        .filter(|(_, _, d)| which.selects(&d.envelope.id))
        .map(|(p, o, d)| {
            let mut env = which.envelope_for(d.envelope);
            wire::remove_transport_headers(&mut env);
            (p, o, env)
        })
        .collect();
    if selected.is_empty() {
        return Ok(0);
    }
    let now = wire::unix_millis(SystemTime::now()).to_string();
    let records = selected
        .iter()
        .map(|(_, _, env)| Outgoing {
            key: env.ordering_key.as_deref(),
            headers: headers_of(env, &[(DUE_HEADER, now.clone())]),
            payload: &env.payload,
        })
        .collect();
    send_all(producer, &names.retry, records)
        .await
        .map_err(|e| e.context("replaying dead letters"))?;
    let keys: Vec<String> = selected
        .iter()
        .map(|(p, o, _)| marker_key(*p, *o))
        .collect();
    let markers = keys
        .iter()
        .map(|k| Outgoing {
            key: Some(k),
            headers: wire::marker_headers(&now),
            payload: now.as_bytes(),
        })
        .collect();
    send_all(producer, &names.replayed, markers)
        .await
        .map_err(|e| {
            e.context("marking replayed dead letters (they were replayed, and may be listed again)")
        })?;
    Ok(selected.len())
}

/// The dead letter of `spec` with envelope id `id`, unless replayed or purged.
pub(crate) async fn find(
    config: &KafkaConfig,
    spec: &SubscriptionSpec,
    id: uuid::Uuid,
) -> Result<Option<DeadLetter>> {
    let letters = letters_of(config, spec).await?;
    Ok(letters
        .into_iter()
        .map(|(_, _, d)| d)
        .find(|d| d.envelope.id == id))
}

/// Purge the selected dead letters of `spec`: a marker each in the replayed-markers topic,
/// so that they are never listed or replayed again; how many.
pub(crate) async fn purge(
    config: &KafkaConfig,
    producer: &FutureProducer,
    spec: &SubscriptionSpec,
    which: &Replay,
) -> Result<usize> {
    let names = SubscriptionTopics::of(spec);
    let letters = letters_of(config, spec).await?;
    let keys: Vec<String> = letters
        .iter()
        .filter(|(_, _, d)| which.selects(&d.envelope.id))
        .map(|(p, o, _)| marker_key(*p, *o))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let now = wire::unix_millis(SystemTime::now()).to_string();
    let markers = keys
        .iter()
        .map(|k| Outgoing {
            key: Some(k),
            headers: wire::marker_headers(&now),
            payload: now.as_bytes(),
        })
        .collect();
    send_all(producer, &names.replayed, markers)
        .await
        .map_err(|e| e.context("purging dead letters (none of those not confirmed is purged)"))?;
    Ok(keys.len())
}
