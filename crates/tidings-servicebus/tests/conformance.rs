//! The transport conformance suite (DESIGN.md §6) on Service Bus, against the local
//! development server started in-process (or `TIDINGS_SERVICEBUS_URL`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::DynTransport;
use tidings_servicebus::ServiceBus;
use tidings_testing::conformance::Factory;

tidings_testing::conformance_suite!(Factory::new("servicebus", || async {
    Ok(Arc::new(ServiceBus::new(support::config())?) as Arc<dyn DynTransport>)
})
.patience(Duration::from_secs(30))
.quiet(Duration::from_secs(2)));
