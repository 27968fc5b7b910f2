//! `transport_url`: pick a compiled-in transport from configuration.

use std::sync::Arc;

use tidings_core::{transport::DynTransport, BusBuilder, Error, ErrorKind, Result};

/// Connect the transport named by `url`'s scheme, among those compiled in:
/// `memory://[hub]` (feature `memory`), `amqp://` and `amqps://` (feature `rabbitmq`),
/// `kafka://` (feature `kafka`), `servicebus://` or a Service Bus connection string
/// `Endpoint=sb://...` (feature `servicebus`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings::Result<()> {
/// let transport = tidings::connect("memory://").await?;
/// assert!(tidings::connect("carrier-pigeon://coop").await.is_err());
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn DynTransport>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme.to_ascii_lowercase().as_str() {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(crate::Memory::from_url(url)?)),
        #[cfg(feature = "rabbitmq")]
        "amqp" | "amqps" => Ok(Arc::new(crate::RabbitMq::from_url(url)?)),
        #[cfg(feature = "kafka")]
        "kafka" | "kafkas" => Ok(Arc::new(crate::Kafka::from_url(url)?)),
        #[cfg(feature = "servicebus")]
        "servicebus" => Ok(Arc::new(crate::ServiceBus::from_url(url)?)),
        #[cfg(feature = "servicebus")]
        _ if is_servicebus_connection_string(url) => {
            Ok(Arc::new(crate::ServiceBus::from_url(url)?))
        }
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "no transport for {:?}: the schemes compiled in are {}; enable the cargo feature of the transport you want (memory, rabbitmq, kafka, servicebus)",
                tidings_core::transport::redact_url(url),
                compiled_schemes()
            ),
        )),
    }
}

#[cfg(feature = "servicebus")]
fn is_servicebus_connection_string(url: &str) -> bool {
    url.trim_start()
        .to_ascii_lowercase()
        .starts_with("endpoint=sb://")
}

fn compiled_schemes() -> String {
    let schemes: Vec<&str> = [
        (cfg!(feature = "memory"), "memory://"),
        (cfg!(feature = "rabbitmq"), "amqp://, amqps://"),
        (cfg!(feature = "kafka"), "kafka://, kafkas://"),
        (cfg!(feature = "servicebus"), "servicebus://"),
    ]
    .into_iter()
    .filter_map(|(on, s)| on.then_some(s))
    .collect();
    if schemes.is_empty() {
        "none".into()
    } else {
        schemes.join(", ")
    }
}

/// Adds `transport_url` to [`BusBuilder`]: the transport is chosen by the URL's scheme at
/// `build()`, so configuration rather than code picks the backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings::Result<()> {
/// use tidings::prelude::*;
/// let bus = Bus::builder("lending").transport_url("memory://").build().await?;
/// # Ok(()) }
/// ```
pub trait TransportUrl {
    /// Connect the transport named by `url` during `build()`.
    fn transport_url(self, url: impl Into<String>) -> Self;
}

impl TransportUrl for BusBuilder {
    fn transport_url(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.describe_transport(&url)
            .transport_from(async move { connect(&url).await })
    }
}
