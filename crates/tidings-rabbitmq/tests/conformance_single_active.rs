//! The conformance suite again with `single_active_consumer(true)`: the configuration in
//! which the RabbitMQ transport declares the `ordering_key` capability, so the ordering
//! cases run too (and competing consumers, which it then does not offer, are skipped).

use std::sync::Arc;

use tidings_core::DynTransport;
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
use tidings_testing::conformance::Factory;

tidings_testing::conformance_suite!(match std::env::var("TIDINGS_RABBITMQ_URL") {
    Ok(url) if !url.is_empty() => Factory::new("rabbitmq (single active consumer)", move || {
        let config = RabbitMqConfig::new(url.clone()).single_active_consumer(true);
        async move {
            let transport = RabbitMq::with_config(config).connected().await?;
            Ok(Arc::new(transport) as Arc<dyn DynTransport>)
        }
    }),
    _ => Factory::unavailable("rabbitmq", "TIDINGS_RABBITMQ_URL is not set"),
});
