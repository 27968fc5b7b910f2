//! What the broker commands (`tail`, `dead-letters`, `publish`) share: the transport from
//! its URL, the runtime, and envelopes as JSON with their payload decoded.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};
use tidings_core::transport::DynTransport;
use tidings_core::{DecodeLimits, Envelope};

use crate::Failure;

/// The transport option every broker command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BrokerArgs {
    /// The broker: `amqp://user:pass@host:5672/%2f`, `kafka://host:9092`,
    /// `servicebus://namespace?key_name=..&key=..` (or a Service Bus connection string).
    /// `memory://` is refused: the memory hub lives inside one process, so this command
    /// cannot see another process's hub.
    #[arg(long, env = "TIDINGS_TRANSPORT", value_name = "URL")]
    pub(crate) transport: String,
}

/// The transport `url` names, not connected yet (the first operation connects, within the
/// transport's connect timeout).
pub(crate) fn transport(url: &str) -> Result<Arc<dyn DynTransport>, Failure> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let redacted = tidings_core::transport::redact_url(url);
    let made: tidings_core::Result<Arc<dyn DynTransport>> = match scheme.as_str() {
        "memory" => {
            return Err(format!(
                "{redacted}: the memory transport lives inside one process, so the tidings command cannot reach a service's hub; use the broker's URL (amqp://, kafka://, servicebus://), or Bus::dead_letters and friends from the service's own code"
            )
            .into())
        }
        "amqp" | "amqps" => tidings_rabbitmq::RabbitMq::from_url(url).map(|t| Arc::new(t) as _),
        "kafka" | "kafkas" => tidings_kafka::Kafka::from_url(url).map(|t| Arc::new(t) as _),
        "servicebus" => tidings_servicebus::ServiceBus::from_url(url).map(|t| Arc::new(t) as _),
        _ if url.trim_start().to_ascii_lowercase().starts_with("endpoint=sb://") => {
            tidings_servicebus::ServiceBus::from_url(url).map(|t| Arc::new(t) as _)
        }
        _ => {
            return Err(format!(
                "no transport for {redacted:?}: use amqp://, amqps://, kafka://, kafkas:// or servicebus:// (memory:// is in-process only)"
            )
            .into())
        }
    };
    made.map_err(|e| Failure(format!("--transport {redacted}: {e}")))
}

/// The transport for watching: like [`transport`], but a Kafka consumer group starts at
/// the newest records (`start_from=latest`) unless the URL says otherwise, so `tail` shows
/// what arrives rather than the topic's history.
pub(crate) fn watching_transport(url: &str) -> Result<Arc<dyn DynTransport>, Failure> {
    let lower = url.to_ascii_lowercase();
    let is_kafka = lower.starts_with("kafka://") || lower.starts_with("kafkas://");
    if !is_kafka || lower.contains("start_from=") {
        return transport(url);
    }
    let redacted = tidings_core::transport::redact_url(url);
    tidings_kafka::KafkaConfig::from_url(url)
        .map(|c| c.start_from(tidings_kafka::StartFrom::Latest))
        .and_then(tidings_kafka::Kafka::new)
        .map(|t| Arc::new(t) as Arc<dyn DynTransport>)
        .map_err(|e| Failure(format!("--transport {redacted}: {e}")))
}

/// A runtime for one broker command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))
}

/// A tidings error as the one line the command prints.
pub(crate) fn failed(what: impl std::fmt::Display) -> impl FnOnce(tidings_core::Error) -> Failure {
    move |e| Failure(format!("{what}: {e}"))
}

/// RFC 3339 with milliseconds.
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The payload of `envelope` decoded by its content type (MessagePack or JSON), or, when
/// it cannot be, an object saying why with the payload's size.
pub(crate) fn payload(envelope: &Envelope) -> Value {
    envelope
        .payload_json(DecodeLimits::default())
        .unwrap_or_else(
            |e| json!({ "undecodable": e.to_string(), "bytes": envelope.payload.len() }),
        )
}

/// The envelope's attributes as the broker carries them (`ce_id`, `ce_type`, ...,
/// `content-type`, custom headers) as a JSON object.
pub(crate) fn attributes(envelope: &Envelope) -> Value {
    let mut map = Map::new();
    for (name, value) in envelope.attributes() {
        map.insert(name.into_owned(), Value::String(value));
    }
    Value::Object(map)
}
