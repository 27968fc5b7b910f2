//! The transport conformance suite (the guarantees in ARCHITECTURE.md) on RabbitMQ: every case of
//! `tidings-testing` against the broker at `TIDINGS_RABBITMQ_URL`, a fresh connection per
//! bus, with the lapin/rabbitmqctl [`LapinAdversary`] for the adversarial cases. Without
//! the variable every case prints a line and passes; with it set and the broker
//! unreachable, every case fails.

mod common;

use std::sync::Arc;

use tidings_core::transport::DynTransport;
use tidings_rabbitmq::RabbitMq;
use tidings_testing::conformance::Factory;

use common::adversary::LapinAdversary;

tidings_testing::conformance_suite!(match std::env::var("TIDINGS_RABBITMQ_URL") {
    Ok(url) if !url.is_empty() => {
        // One adversary, and one connection name, per case.
        let adversary = LapinAdversary::new(&url);
        let config = adversary.config();
        Factory::new("rabbitmq", move || {
            let config = config.clone();
            async move { Ok(Arc::new(RabbitMq::connect(config).await?) as Arc<dyn DynTransport>) }
        })
        .adversary(Arc::new(adversary))
    }
    _ => Factory::unavailable("rabbitmq", "TIDINGS_RABBITMQ_URL is not set"),
});
