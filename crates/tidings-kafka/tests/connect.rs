//! `Kafka::connect` connects: it returns once the brokers answered a metadata request, and
//! fails with `Unavailable` (retryable), naming the brokers' address once, when they do not
//! answer within the connect timeout. The same holds for every operation that first
//! connects: `build()` (provisioning), `dead_letters()` and `teardown()`. Only the first
//! case needs a broker (`TIDINGS_KAFKA_BROKERS`); nothing listens on 127.0.0.1:1, and a
//! broker that never answers is a listener of the test that accepts connections and stays
//! silent.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::Lending;
use tidings_core::{
    transport::{SubscriptionSpec, Topology, Transport},
    Bus, ErrorKind,
};
use tidings_kafka::{Kafka, KafkaConfig};

fn unreachable() -> Kafka {
    Kafka::new(KafkaConfig::new("127.0.0.1:1").connect_timeout(Duration::from_millis(500))).unwrap()
}

fn assert_unavailable_naming_the_address(err: &tidings_core::Error, address: &str) {
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert_eq!(
        shown.matches(address).count(),
        1,
        "the address is named once: {shown}"
    );
}

#[tokio::test]
async fn connect_returns_once_the_brokers_answered() {
    let Some(brokers) = common::brokers("connect_returns_once_the_brokers_answered") else {
        return;
    };
    let kafka = Kafka::connect(common::config(&brokers).connect_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(kafka.config().brokers(), brokers);
}

/// `Kafka::connect(config)` fails as `Unavailable`, naming the address once, no later than
/// a second after the connect timeout.
async fn assert_connect_is_unavailable_within_the_timeout(address: &str) {
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = Kafka::connect(KafkaConfig::new(address).connect_timeout(timeout))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_unavailable_naming_the_address(&err, address);
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable_within_the_timeout() {
    common::logs();
    assert_connect_is_unavailable_within_the_timeout("127.0.0.1:1").await;
}

#[tokio::test]
async fn connect_to_a_broker_that_never_answers_is_unavailable_within_the_timeout() {
    common::logs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // Accept every connection and keep it open without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    assert_connect_is_unavailable_within_the_timeout(&address).await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_build_as_unavailable_naming_the_address() {
    common::logs();
    let err = Bus::builder("lending")
        .transport(unreachable())
        .publishes::<Lending>()
        .build()
        .await
        .unwrap_err();
    assert_unavailable_naming_the_address(&err, "127.0.0.1:1");
}

#[tokio::test]
async fn an_unreachable_broker_fails_dead_letters_and_teardown_as_unavailable() {
    common::logs();
    let kafka = unreachable();
    let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec![]);
    let err = kafka.dead_letters(&spec, 10).await.unwrap_err();
    assert_unavailable_naming_the_address(&err, "127.0.0.1:1");
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec);
    let err = kafka.teardown(&topology).await.unwrap_err();
    assert_unavailable_naming_the_address(&err, "127.0.0.1:1");
}

#[test]
fn the_connect_timeout_is_a_url_option() {
    let err = Kafka::from_url("kafka://127.0.0.1:1?connect_timeout=later").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    Kafka::from_url("kafka://127.0.0.1:1?connect_timeout=250ms").unwrap();
}
