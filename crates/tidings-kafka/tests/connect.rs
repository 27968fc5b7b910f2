//! An unreachable broker is `Unavailable` (retryable) within the connect timeout, naming
//! the brokers' address, for every operation that first connects: `build()`
//! (provisioning), `dead_letters()` and `teardown()`. No broker needed: nothing listens on
//! 127.0.0.1:1.

mod common;

use std::time::Duration;

use common::Lending;
use tidings_core::{
    transport::{SubscriptionSpec, Topology, Transport},
    Bus, ErrorKind,
};
use tidings_kafka::{Kafka, KafkaConfig};

fn unreachable() -> Kafka {
    Kafka::new(KafkaConfig::new("127.0.0.1:1").connect_timeout(Duration::from_millis(500))).unwrap()
}

fn assert_unavailable_naming_the_address(err: &tidings_core::Error) {
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert_eq!(
        shown.matches("127.0.0.1:1").count(),
        1,
        "the address is named once: {shown}"
    );
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
    assert_unavailable_naming_the_address(&err);
}

#[tokio::test]
async fn an_unreachable_broker_fails_dead_letters_and_teardown_as_unavailable() {
    common::logs();
    let kafka = unreachable();
    let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec![]);
    let err = kafka.dead_letters(&spec, 10).await.unwrap_err();
    assert_unavailable_naming_the_address(&err);
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec);
    let err = kafka.teardown(&topology).await.unwrap_err();
    assert_unavailable_naming_the_address(&err);
}

#[test]
fn the_connect_timeout_is_a_url_option() {
    let err = Kafka::from_url("kafka://127.0.0.1:1?connect_timeout=later").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    Kafka::from_url("kafka://127.0.0.1:1?connect_timeout=250ms").unwrap();
}
