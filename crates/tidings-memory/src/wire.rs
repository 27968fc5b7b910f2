//! What the hub carries: an envelope tidings published, or a raw message as another client
//! of a broker would send it, handed to the core as received.

use std::sync::Arc;

use bytes::Bytes;
use tidings_core::transport::{attrs, wire::WireMessage};
use tidings_core::Envelope;

/// What a queue holds: an envelope tidings published, or a raw message injected with
/// [`Memory::inject_raw`](crate::Memory::inject_raw), which the core turns into an
/// envelope (or a placeholder to dead-letter) on delivery.
#[derive(Clone)]
pub(crate) enum Body {
    Envelope(Arc<Envelope>),
    Raw(Arc<RawMessage>),
}

impl Body {
    /// The wire name routing goes by: a raw message's `ce_type` header; `None` when it has
    /// none, and then every queue of the topic takes it, so the core can dead-letter it.
    #[inline]
    pub(crate) fn event_type(&self) -> Option<&str> {
        match self {
            Body::Envelope(env) => Some(&env.event_type),
            Body::Raw(raw) => raw
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(attrs::TYPE))
                .map(|(_, v)| v.as_str()),
        }
    }
}

/// A message as another client would put it on a broker: headers and bytes.
pub(crate) struct RawMessage {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
}

impl RawMessage {
    /// The message as a broker hands it over, for `Delivery::from_wire`: the core decides
    /// whether it is an envelope.
    pub(crate) fn to_wire(&self, attempt: u32, redelivered: bool) -> WireMessage<'_> {
        let mut message = WireMessage::new(self.payload.clone())
            .earlier_deliveries(attempt.saturating_sub(1))
            .redelivered(redelivered);
        for (name, value) in &self.headers {
            message.push(name.as_str(), value.as_str());
        }
        message
    }
}
