//! What the Kafka tests share: the broker address, contracts, a raw reader.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod proxy;

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tidings_macros::{Event, Topic};

/// Logs to the test output when `RUST_LOG` is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The brokers from `TIDINGS_KAFKA_BROKERS`; `None` (with a printed line) when unset.
/// Panics when it is set but nothing listens there.
pub fn brokers(test: &str) -> Option<String> {
    logs();
    let Ok(brokers) = std::env::var("TIDINGS_KAFKA_BROKERS") else {
        println!("skipped: {test} needs a Kafka broker; set TIDINGS_KAFKA_BROKERS (scripts/test starts tansu)");
        return None;
    };
    let first = brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok());
    assert!(
        reachable,
        "TIDINGS_KAFKA_BROKERS={brokers} is set but {first} does not accept connections"
    );
    Some(brokers)
}

/// The transport configuration the tests use on `brokers`.
///
/// tansu 0.6 with in-memory storage (`memory://`, the default of `scripts/test`) answers a
/// fetch from an offset inside a multi-record batch with the batches *after* it, so a
/// consumer resuming there (after a rebalance or restart) would skip the rest of that
/// batch. Kafka returns the batch containing the offset. On such a broker the tests make
/// every record its own batch (`batch.num.messages=1`).
pub fn config(brokers: &str) -> tidings_kafka::KafkaConfig {
    let config = tidings_kafka::KafkaConfig::new(brokers).partitions(3);
    let storage = std::env::var("TIDINGS_KAFKA_STORAGE").unwrap_or_else(|_| "memory://".into());
    if storage.starts_with("memory:") || storage.starts_with("s3:") {
        config.property("batch.num.messages", "1")
    } else {
        config
    }
}

/// The `lending` service's bus in namespace `ns`: it publishes [`Lending`], nothing else.
pub async fn publisher(brokers: &str, ns: &str) -> tidings_core::Bus {
    tidings_core::Bus::builder("lending")
        .transport(tidings_kafka::Kafka::new(config(brokers)).unwrap())
        .namespace(ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap()
}

/// A fresh namespace so runs never collide on a shared broker.
pub fn namespace(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "kt.book-borrowed", version = 1, key = book)]
pub struct BookBorrowed {
    pub book: String,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "kt.note", version = 1)]
pub struct Note {
    pub n: u64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "lending")]
pub enum Lending {
    BookBorrowed(BookBorrowed),
    Note(Note),
}

/// One record read back raw.
#[derive(Debug, Clone)]
pub struct Raw {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read at least `count` records of `topic` from the beginning (no group commits).
pub fn read_raw(brokers: &str, topic: &str, count: usize) -> Vec<Raw> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in meta.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(Raw {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert!(
        out.len() >= count,
        "read {} of {count} records of {topic}",
        out.len()
    );
    out
}

/// The offsets `group` committed on `topic` (partition -> next offset).
pub fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(i32, Option<i64>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
            )
        })
        .collect()
}

/// Wait until `check` is true, polling; panics with `what` after `patience`.
pub async fn eventually(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tansu broker of the test's own, on a free loopback port, with SQLite storage in a
/// temporary directory (so its data survives a restart). Stopped and removed on drop.
pub struct PrivateTansu {
    bin: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateTansu {
    /// A tansu binary with the SQLite (`libsql`) storage engine: `TANSU_BIN`, `tansu` on
    /// `PATH`, or `~/.cargo/bin/tansu`.
    pub fn find_binary() -> Option<std::path::PathBuf> {
        let mut candidates: Vec<std::path::PathBuf> = Vec::new();
        if let Some(b) = std::env::var_os("TANSU_BIN") {
            candidates.push(b.into());
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|p| p.join("tansu")));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(std::path::Path::new(&home).join(".cargo/bin/tansu"));
        }
        candidates.into_iter().find(|bin| {
            bin.is_file()
                && std::process::Command::new(bin)
                    .arg("--help")
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .any(|l| l.starts_with("Storage engines:") && l.contains("libsql"))
                    })
                    .unwrap_or(false)
        })
    }

    /// A stopped private broker, or `None` without a suitable binary.
    pub fn new() -> Option<Self> {
        let bin = Self::find_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "tidings-kafka-tansu-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Some(PrivateTansu {
            bin,
            dir,
            port,
            child: None,
        })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the broker with `extra` arguments and wait until it listens.
    pub fn start(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(&self.bin)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--cluster-id",
                "tidings-test",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu resolves the SQLite path against its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting a private tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the broker (SIGTERM, SIGKILL after 20 s) and wait until the port is free.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a `tansu` subcommand against this broker.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.bin)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
