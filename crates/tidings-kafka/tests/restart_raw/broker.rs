//! What the broker holds, asked with plain rdkafka clients outside any group member:
//! watermarks, every record in the log, committed offsets; and signals to the broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::member::consumer_config;
use crate::PARTITIONS;

/// Send `signal` to the broker listening on `port`: KILL for a crash instead of a clean
/// stop, STOP/CONT to leave every request unanswered with the connections kept open.
pub(crate) fn signal(port: u16, signal: &str) {
    let url = format!("tcp://127.0.0.1:{port} ");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("broker") && cmdline.contains(&url) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status();
        }
    }
}

/// The record number a payload carries.
pub(crate) fn number(m: &impl Message) -> Option<u64> {
    std::str::from_utf8(m.payload().unwrap_or_default())
        .ok()?
        .parse()
        .ok()
}

/// The broker's high watermark of each partition.
pub(crate) fn watermarks(address: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = consumer_config(address, "watermarks", &[])
        .create()
        .unwrap();
    let mark = |p| {
        c.fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_or(-1, |w| w.1)
    };
    (0..PARTITIONS).map(|p| (p, mark(p))).collect()
}

/// Every record in the broker's log: (partition, offset) -> number, read from the start of
/// each partition up to `high` without a group.
pub(crate) fn scan(
    address: &str,
    topic: &str,
    high: &BTreeMap<i32, i64>,
) -> BTreeMap<(i32, i64), u64> {
    let c: BaseConsumer = consumer_config(address, &format!("scan-{}", uuid::Uuid::new_v4()), &[])
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let mut done: BTreeSet<i32> = high
        .iter()
        .filter(|(_, h)| **h <= 0)
        .map(|(p, _)| *p)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < PARTITIONS as usize && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.insert((m.partition(), m.offset()), number(&m).unwrap_or(u64::MAX));
            if m.offset() + 1 >= high[&m.partition()] {
                done.insert(m.partition());
            }
        }
    }
    out
}

/// The offsets `group` committed on `topic` (partition -> next offset), as the broker says.
pub(crate) fn committed_map(address: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    crate::common::committed(address, group, topic, PARTITIONS)
        .into_iter()
        .filter_map(|(p, o)| o.map(|o| (p, o)))
        .collect()
}

pub(crate) fn create_topic(address: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for r in r {
        r.unwrap();
    }
}
