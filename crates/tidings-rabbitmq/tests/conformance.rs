//! The transport conformance suite (DESIGN.md §6) on RabbitMQ: every case of
//! `tidings-testing` against the broker at `TIDINGS_RABBITMQ_URL`, a fresh connection per
//! bus. Without the variable every case prints a line and passes; with it set and the
//! broker unreachable, every case fails.

use std::sync::Arc;

use tidings_core::DynTransport;
use tidings_rabbitmq::RabbitMq;
use tidings_testing::conformance::Factory;

tidings_testing::conformance_suite!(match std::env::var("TIDINGS_RABBITMQ_URL") {
    Ok(url) if !url.is_empty() => Factory::new("rabbitmq", move || {
        let url = url.clone();
        async move {
            let transport = RabbitMq::connect(url).connected().await?;
            Ok(Arc::new(transport) as Arc<dyn DynTransport>)
        }
    }),
    _ => Factory::unavailable("rabbitmq", "TIDINGS_RABBITMQ_URL is not set"),
});
