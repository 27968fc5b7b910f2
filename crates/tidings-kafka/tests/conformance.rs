//! The transport conformance suite on Kafka. It runs when `TIDINGS_KAFKA_BROKERS` is set
//! (`scripts/test` starts tansu, a Kafka-API broker), and passes with a printed line per
//! case when it is not.
//!
//! The suite's adversary needs a network fault it can cause, and librdkafka has no
//! socket-level hook: so the cases run against a private tansu of this test binary (the
//! binary `scripts/test` installed, memory storage) that advertises the port of a
//! loopback TCP proxy. Every connection of every client (producers, consumers, admin
//! clients) then goes through the proxy, and `drop_connections` cuts them all at once, as
//! a network fault would; librdkafka reconnects through the proxy. `inject` sends records
//! with an rdkafka producer of its own (headers, value and key exactly as given), through
//! the same proxy. The private broker stops within a second after the binary ends.

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::PrivateTansu;
use futures::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tidings_core::{transport::DynTransport, Error, Result};
use tidings_kafka::{Kafka, KafkaConfig};
use tidings_testing::conformance::{Adversary, Factory, RawMessage};

/// The private broker the cases share, reached through `proxy`.
struct Broker {
    proxy: Proxy,
}

impl Broker {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }

    /// Start tansu listening on a free port and advertising the proxy's port; a watchdog
    /// shell stops it (and removes its directory) once this process is gone.
    fn start() -> std::result::Result<Broker, String> {
        let bin = PrivateTansu::find_binary().ok_or(
            "no tansu binary found (TANSU_BIN, tansu on PATH or ~/.cargo/bin/tansu); scripts/test installs it",
        )?;
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| e.to_string())
        };
        let upstream = free()?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let advertised = listener.local_addr().map_err(|e| e.to_string())?.port();
        let dir = std::env::temp_dir().join(format!(
            "tidings-kafka-conformance-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let script = format!(
            r#""$0" broker --cluster-id tidings-conformance --listener-url tcp://127.0.0.1:{upstream} --advertised-listener-url tcp://127.0.0.1:{advertised} --storage-engine memory://tansu/ >> "{log}" 2>&1 &
t=$!
while kill -0 {me} 2>/dev/null && kill -0 $t 2>/dev/null; do sleep 1; done
kill $t 2>/dev/null; wait $t; rm -rf "{dir}""#,
            log = dir.join("tansu.log").display(),
            dir = dir.display(),
            me = std::process::id(),
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&bin)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", upstream)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the private tansu did not listen on {upstream} within 60 s (log in {})",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Broker {
            proxy: Proxy::start(listener, upstream),
        })
    }
}

fn broker() -> &'static Broker {
    static BROKER: OnceLock<std::result::Result<Broker, String>> = OnceLock::new();
    match BROKER.get_or_init(Broker::start) {
        Ok(broker) => broker,
        Err(why) => {
            panic!("TIDINGS_KAFKA_BROKERS is set, but the conformance broker cannot run: {why}")
        }
    }
}

/// Raw records with rdkafka, and cut connections at the proxy.
struct KafkaAdversary {
    broker: &'static Broker,
    producer: FutureProducer,
}

impl Adversary for KafkaAdversary {
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>> {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (name, value) in &message.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::<str, [u8]>::to(&topic)
                .payload(&message.payload)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| Error::backend(format!("injecting a record into {topic}"), e))?;
            Ok(())
        })
    }

    fn drop_connections(&self) -> BoxFuture<'static, Result<()>> {
        let cut = self.broker.proxy.drop_connections();
        tracing::info!(connections = cut, "dropped every connection to the broker");
        Box::pin(async { Ok(()) })
    }

    fn unreachable(
        &self,
        address: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<dyn DynTransport>> {
        let config = KafkaConfig::new(address).connect_timeout(connect_timeout);
        Ok(Arc::new(Kafka::new(config)?))
    }
}

fn factory() -> Factory {
    if std::env::var("TIDINGS_KAFKA_BROKERS").is_err() {
        return Factory::unavailable("kafka", "TIDINGS_KAFKA_BROKERS is not set");
    }
    common::logs();
    let broker = broker();
    let address = broker.address();
    // Any rdkafka producer would do; this one takes records far over the transport's limit.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("message.max.bytes", (4 * 1024 * 1024).to_string())
        .create()
        .expect("creating the injecting producer");
    Factory::new("kafka", move || {
        // Memory storage: every record its own batch (see common::config).
        let config = KafkaConfig::new(&address)
            .partitions(3)
            .property("batch.num.messages", "1");
        async move { Ok(Arc::new(Kafka::new(config)?) as Arc<dyn DynTransport>) }
    })
    .adversary(Arc::new(KafkaAdversary { broker, producer }))
    .patience(Duration::from_secs(60))
    .quiet(Duration::from_secs(2))
}

tidings_testing::conformance_suite!(factory());
