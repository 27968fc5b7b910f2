//! The envelope: what a transport moves. Attributes follow CloudEvents 1.0 where a
//! CloudEvents attribute exists; [`attrs`] names them as they appear in broker headers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use uuid::{NoContext, Timestamp, Uuid};

use crate::error::{Error, ErrorKind, Result};

/// Header names used on the wire (CloudEvents binary mode, `ce_` prefix as in the
/// CloudEvents Kafka and AMQP bindings), plus the headers tidings adds to dead letters.
pub mod attrs {
    /// CloudEvents `id`: the envelope id (a UUID).
    pub const ID: &str = "ce_id";
    /// CloudEvents `type`: the event's wire name.
    pub const TYPE: &str = "ce_type";
    /// CloudEvents `source`: the publishing service.
    pub const SOURCE: &str = "ce_source";
    /// CloudEvents `time`: RFC 3339 timestamp of publication.
    pub const TIME: &str = "ce_time";
    /// CloudEvents `specversion`, always [`SPEC_VERSION`].
    pub const SPECVERSION: &str = "ce_specversion";
    /// The event contract version (a tidings extension attribute).
    pub const VERSION: &str = "ce_version";
    /// Correlation id extension: the id of the event that started the flow.
    pub const CORRELATION_ID: &str = "ce_correlationid";
    /// Causation id extension: the id of the event whose handler published this one.
    pub const CAUSATION_ID: &str = "ce_causationid";
    /// W3C trace context `traceparent` (CloudEvents distributed tracing extension).
    pub const TRACEPARENT: &str = "ce_traceparent";
    /// W3C trace context `tracestate`.
    pub const TRACESTATE: &str = "ce_tracestate";
    /// CloudEvents partitioning extension: the ordering key.
    pub const PARTITION_KEY: &str = "ce_partitionkey";
    /// The payload's media type.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The CloudEvents spec version tidings writes.
    pub const SPEC_VERSION: &str = "1.0";

    /// Dead letters: why the envelope could not be handled.
    pub const DLQ_REASON: &str = "tidings-dlq-reason";
    /// Dead letters: how many times the handler ran (0 for poison messages).
    pub const DLQ_ATTEMPTS: &str = "tidings-dlq-attempts";
    /// Dead letters: the subscribing service that gave up.
    pub const DLQ_SERVICE: &str = "tidings-dlq-service";
    /// Dead letters: the topic the envelope was published to.
    pub const DLQ_TOPIC: &str = "tidings-dlq-topic";
    /// Dead letters: the subscription that gave up.
    pub const DLQ_SUBSCRIPTION: &str = "tidings-dlq-subscription";
    /// Dead letters: when the envelope was dead-lettered (RFC 3339).
    pub const DLQ_TIME: &str = "tidings-dlq-time";
    /// Delivery attempt carried across delayed redeliveries by transports that re-send.
    pub const ATTEMPT: &str = "tidings-attempt";
}

/// Custom headers: ordered name/value pairs, usually empty.
pub type Headers = Vec<(String, String)>;

/// One event on the wire: CloudEvents-style attributes and the encoded payload.
///
/// Transports move envelopes and know nothing of the Rust event types; the bus builds
/// them on publish and decodes them for handlers.
///
/// ```
/// use tidings_core::Envelope;
/// let env = Envelope::new("lending.book-borrowed", 1, "lending", "application/json", &b"{}"[..]);
/// assert_eq!(env.event_type, "lending.book-borrowed");
/// assert_eq!(env.source.as_ref(), "lending");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id of this event (`ce_id`); redeliveries keep it, so it is the idempotency key.
    pub id: Uuid,
    /// The event's wire name (`ce_type`), e.g. `lending.book-borrowed`.
    pub event_type: Cow<'static, str>,
    /// The publishing service (`ce_source`).
    pub source: Arc<str>,
    /// When the event was published (`ce_time`).
    pub time: SystemTime,
    /// The event contract version.
    pub version: u32,
    /// The id of the event that started this flow, carried through handlers.
    pub correlation_id: Option<Uuid>,
    /// The id of the event whose handler published this one.
    pub causation_id: Option<Uuid>,
    /// W3C `traceparent`, carried from a handled event to the ones its handler publishes.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// Media type of the payload (`application/msgpack`, `application/json`).
    pub content_type: Cow<'static, str>,
    /// Events with the same key are handled in publish order where the transport can.
    pub ordering_key: Option<String>,
    /// Custom headers set by the publisher, and dead-letter details.
    pub headers: Headers,
    /// The encoded event.
    pub payload: Bytes,
}

impl Envelope {
    /// A new envelope with a fresh id and the current time.
    pub fn new(
        event_type: impl Into<Cow<'static, str>>,
        version: u32,
        source: impl Into<Arc<str>>,
        content_type: impl Into<Cow<'static, str>>,
        payload: impl Into<Bytes>,
    ) -> Self {
        // One clock read for both the time and the (time-ordered) id.
        let time = SystemTime::now();
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let id = Uuid::new_v7(Timestamp::from_unix(
            NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        ));
        Envelope {
            id,
            event_type: event_type.into(),
            source: source.into(),
            time,
            version,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            content_type: content_type.into(),
            ordering_key: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The value of a custom header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Set a custom header, replacing an earlier value of the same name.
    pub fn set_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name, value)),
        }
    }

    /// Remove a custom header, returning its value.
    pub fn remove_header(&mut self, name: &str) -> Option<String> {
        let at = self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(self.headers.remove(at).1)
    }

    /// The envelope's attributes as `(header name, value)` pairs, CloudEvents binary mode:
    /// every transport writes exactly these, then the payload as the body.
    pub fn attributes(&self) -> Vec<(Cow<'static, str>, String)> {
        let mut out: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(8 + self.headers.len());
        out.push((attrs::SPECVERSION.into(), attrs::SPEC_VERSION.to_string()));
        out.push((attrs::ID.into(), self.id.to_string()));
        out.push((attrs::TYPE.into(), self.event_type.to_string()));
        out.push((attrs::SOURCE.into(), self.source.to_string()));
        out.push((
            attrs::TIME.into(),
            humantime::format_rfc3339_micros(self.time).to_string(),
        ));
        out.push((attrs::VERSION.into(), self.version.to_string()));
        out.push((attrs::CONTENT_TYPE.into(), self.content_type.to_string()));
        if let Some(id) = self.correlation_id {
            out.push((attrs::CORRELATION_ID.into(), id.to_string()));
        }
        if let Some(id) = self.causation_id {
            out.push((attrs::CAUSATION_ID.into(), id.to_string()));
        }
        if let Some(tp) = &self.traceparent {
            out.push((attrs::TRACEPARENT.into(), tp.clone()));
        }
        if let Some(ts) = &self.tracestate {
            out.push((attrs::TRACESTATE.into(), ts.clone()));
        }
        if let Some(key) = &self.ordering_key {
            out.push((attrs::PARTITION_KEY.into(), key.clone()));
        }
        for (n, v) in &self.headers {
            out.push((Cow::Owned(n.clone()), v.clone()));
        }
        out
    }

    /// Rebuild an envelope from the header pairs written by [`Envelope::attributes`] and
    /// the body. Unknown headers become custom headers. Fails with
    /// [`ErrorKind::Decode`] when a required attribute (id, type) is missing or malformed,
    /// naming it.
    pub fn from_attributes<'a, I>(attributes: I, payload: impl Into<Bytes>) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut id = None;
        let mut event_type = None;
        let mut env = Envelope::new("", 1, "", "application/octet-stream", payload);
        let bad = |name: &str, value: &str| {
            Error::new(
                ErrorKind::Decode,
                format!("envelope attribute {name} has an invalid value {value:?}"),
            )
        };
        for (name, value) in attributes {
            match name {
                attrs::ID => id = Some(Uuid::parse_str(value).map_err(|_| bad(name, value))?),
                attrs::TYPE => event_type = Some(value.to_string()),
                attrs::SOURCE => env.source = Arc::from(value),
                attrs::TIME => {
                    env.time = humantime::parse_rfc3339_weak(value).map_err(|_| bad(name, value))?
                }
                attrs::VERSION => env.version = value.parse().map_err(|_| bad(name, value))?,
                attrs::CONTENT_TYPE => env.content_type = Cow::Owned(value.to_string()),
                attrs::CORRELATION_ID => {
                    env.correlation_id = Some(Uuid::parse_str(value).map_err(|_| bad(name, value))?)
                }
                attrs::CAUSATION_ID => {
                    env.causation_id = Some(Uuid::parse_str(value).map_err(|_| bad(name, value))?)
                }
                attrs::TRACEPARENT => env.traceparent = Some(value.to_string()),
                attrs::TRACESTATE => env.tracestate = Some(value.to_string()),
                attrs::PARTITION_KEY => env.ordering_key = Some(value.to_string()),
                attrs::SPECVERSION => {}
                _ => env.headers.push((name.to_string(), value.to_string())),
            }
        }
        env.id = id.ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                format!("envelope has no {} attribute", attrs::ID),
            )
        })?;
        env.event_type = Cow::Owned(event_type.ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                format!("envelope has no {} attribute", attrs::TYPE),
            )
        })?);
        Ok(env)
    }

    /// The payload decoded by its content type (JSON, or MessagePack with the `msgpack`
    /// feature) into a JSON value, for tools that show or edit payloads of any event.
    ///
    /// An unknown content type is [`ErrorKind::Unsupported`]; a payload that does not
    /// decode is the codec's error.
    pub fn payload_json(&self, limits: crate::DecodeLimits) -> Result<serde_json::Value> {
        let Some(codec) = crate::Codec::for_content_type(&self.content_type) else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "no codec for the content type {:?} of event `{}`",
                    self.content_type, self.event_type
                ),
            ));
        };
        codec.decode(&self.payload, limits)
    }

    /// The size the envelope takes on the wire, roughly: payload plus attribute text.
    pub fn wire_size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.payload.len() + self.event_type.len() + self.source.len() + headers + 160
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            3,
            "lending",
            "application/json",
            &b"{\"a\":1}"[..],
        );
        env.correlation_id = Some(Uuid::new_v4());
        env.causation_id = Some(Uuid::new_v4());
        env.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        env.ordering_key = Some("book-1".into());
        env.set_header("tenant", "north");
        let attrs = env.attributes();
        let back = Envelope::from_attributes(
            attrs.iter().map(|(n, v)| (n.as_ref(), v.as_str())),
            env.payload.clone(),
        )
        .unwrap();
        // Time goes through RFC 3339 with microseconds.
        let drift = env.time.duration_since(back.time).unwrap_or_default();
        assert!(drift.as_micros() < 1);
        let mut back = back;
        back.time = env.time;
        assert_eq!(back, env);
    }

    #[test]
    fn missing_id_is_a_decode_error_naming_it() {
        let err = Envelope::from_attributes([(attrs::TYPE, "x")], Bytes::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.message().contains("ce_id"), "{err}");
    }

    #[test]
    fn set_header_replaces() {
        let mut env = Envelope::new("t", 1, "s", "application/json", Bytes::new());
        env.set_header("a", "1");
        env.set_header("A", "2");
        assert_eq!(env.headers.len(), 1);
        assert_eq!(env.header("a"), Some("2"));
        assert_eq!(env.remove_header("a").as_deref(), Some("2"));
        assert!(env.headers.is_empty());
    }
}
