//! The conformance suite again with `single_active_consumer(true)`: the configuration in
//! which the RabbitMQ transport declares the `ordering_key` capability, so the ordering
//! cases run too (and competing consumers, which it then does not offer, are skipped).

mod common;

use std::sync::Arc;

use tidings_core::transport::DynTransport;
use tidings_rabbitmq::RabbitMq;
use tidings_testing::conformance::Factory;

use common::adversary::LapinAdversary;

tidings_testing::conformance_suite!(match std::env::var("TIDINGS_RABBITMQ_URL") {
    Ok(url) if !url.is_empty() => {
        let adversary = LapinAdversary::new(&url);
        let config = adversary.config().single_active_consumer(true);
        Factory::new("rabbitmq (single active consumer)", move || {
            let config = config.clone();
            async move { Ok(Arc::new(RabbitMq::connect(config).await?) as Arc<dyn DynTransport>) }
        })
        .adversary(Arc::new(adversary))
    }
    _ => Factory::unavailable("rabbitmq", "TIDINGS_RABBITMQ_URL is not set"),
});
