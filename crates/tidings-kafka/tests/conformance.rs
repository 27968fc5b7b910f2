//! The transport conformance suite on Kafka, against the broker at
//! `TIDINGS_KAFKA_BROKERS` (the tests use tansu, a Kafka-API broker, started by
//! `scripts/test`). Every case passes with a printed line when the variable is unset.

extern crate tidings_core as tidings;

mod common;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::DynTransport;
use tidings_kafka::Kafka;
use tidings_testing::conformance::Factory;

fn factory() -> Factory {
    match std::env::var("TIDINGS_KAFKA_BROKERS") {
        Ok(brokers) => {
            Factory::new("kafka", move || {
                let brokers = brokers.clone();
                async move {
                    Ok(Arc::new(Kafka::new(common::config(&brokers))?) as Arc<dyn DynTransport>)
                }
            })
            .patience(Duration::from_secs(60))
            .quiet(Duration::from_secs(2))
        }
        Err(_) => Factory::unavailable("kafka", "TIDINGS_KAFKA_BROKERS is not set"),
    }
}

tidings_testing::conformance_suite!(factory());
