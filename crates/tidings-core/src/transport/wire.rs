//! The wire mapping every transport shares: which header names belong to the envelope
//! (and so are refused as custom headers), how a message as a broker handed it over
//! becomes an envelope, and the placeholder envelope that carries a message that is not
//! one into the dead letters.
//!
//! Transports write [`Envelope::attributes`] as headers (CloudEvents binary mode) and read
//! them back through [`WireMessage`] and [`Delivery::from_wire`](crate::transport::Delivery::from_wire);
//! none of them decides on its own what is poison.

use std::borrow::Cow;

use bytes::Bytes;
use uuid::Uuid;

use crate::envelope::{attrs, Envelope};
use crate::error::{Error, ErrorKind, Result};

/// The prefix under which a placeholder keeps the headers of a message that was not a
/// valid envelope (`tidings-original-ce_type`).
pub const ORIGINAL_HEADER_PREFIX: &str = "tidings-original-";

/// Dead letters whose payload the broker would not take whole: the payload's size in
/// bytes before it was cut away.
pub const DLQ_PAYLOAD_OMITTED: &str = "tidings-dlq-payload-omitted";

pub use crate::claim_check::{CLAIM_CHECK, CLAIM_CHECK_SHA256, CLAIM_CHECK_SIZE};

/// The longest header name any broker takes (AMQP's short strings); placeholders cut the
/// names they rename to it.
const MAX_HEADER_NAME: usize = 255;

/// Whether `name` is reserved by the envelope: the CloudEvents attributes (`ce_*`),
/// `content-type`, and tidings' own headers (`tidings-*`). Case-insensitive. A custom
/// header with such a name is refused on publish, since it would overwrite an attribute.
///
/// ```
/// use tidings_core::transport::wire::is_reserved;
/// assert!(is_reserved("ce_source"));
/// assert!(is_reserved("Content-Type"));
/// assert!(is_reserved("tidings-dlq-reason"));
/// assert!(is_reserved(tidings_core::transport::wire::CLAIM_CHECK));
/// assert!(!is_reserved("tenant"));
/// ```
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("ce_")
        || lower.starts_with("ce-")
        || lower == attrs::CONTENT_TYPE
        || lower.starts_with("tidings-")
}

/// Check the custom headers of an envelope about to be published: refuses a name
/// reserved by the envelope ([`is_reserved`]) or by the transport (`broker_reserved`,
/// lower-case prefixes from [`Capabilities::reserved_header_prefixes`](crate::transport::Capabilities)),
/// and an empty name, with an error naming the header.
pub fn check_custom_headers(headers: &[(String, String)], broker_reserved: &[&str]) -> Result<()> {
    for (name, _) in headers {
        let lower = name.to_ascii_lowercase();
        let refused = if name.is_empty() {
            Some("an empty header name")
        } else if is_reserved(name) {
            Some("reserved by the envelope (ce_*, content-type and tidings-* carry its attributes)")
        } else if broker_reserved.iter().any(|p| lower.starts_with(p)) {
            Some("reserved by the broker")
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "custom header `{name}` is {why}: pick another name (the envelope's own fields are set through PublishOptions)"
                ),
            ));
        }
    }
    Ok(())
}

/// A message as a broker handed it over, before the core turns it into an envelope: its
/// headers as text, its body, and what the transport noticed on the way.
///
/// ```
/// use tidings_core::transport::wire::WireMessage;
/// let msg = WireMessage::new(&b"garbage"[..])
///     .header("ce_type", "lending.book-borrowed")
///     .header_bytes("binary", &[0xff, 0xfe]);
/// assert!(msg.defect().unwrap().contains("binary"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct WireMessage<'a> {
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    payload: Bytes,
    defect: Option<String>,
    earlier_deliveries: u32,
    redelivered: bool,
}

impl<'a> WireMessage<'a> {
    /// A message with this body and no headers yet.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        WireMessage {
            payload: payload.into(),
            ..Default::default()
        }
    }

    /// Add a header as received.
    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        self.push(name, value);
        self
    }

    /// Add a header as received (by reference, for loops).
    pub fn push(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        self.headers.push((name.into(), value.into()));
    }

    /// Add a header whose value arrived as bytes: kept as text when it is UTF-8; otherwise
    /// kept lossily and the message is marked undecodable, naming the header.
    pub fn header_bytes(mut self, name: impl Into<Cow<'a, str>>, value: &'a [u8]) -> Self {
        self.push_bytes(name, value);
        self
    }

    /// [`header_bytes`](Self::header_bytes) by reference.
    pub fn push_bytes(&mut self, name: impl Into<Cow<'a, str>>, value: &'a [u8]) {
        let name = name.into();
        let value = match std::str::from_utf8(value) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                self.defect
                    .get_or_insert_with(|| format!("header `{name}` is not UTF-8 text"));
                String::from_utf8_lossy(value)
            }
        };
        self.headers.push((name, value));
    }

    /// Mark the message undecodable for a reason the transport found (a header of a type
    /// the envelope cannot carry); the first reason given is kept.
    pub fn mark_defect(&mut self, reason: impl Into<String>) {
        self.defect.get_or_insert_with(|| reason.into());
    }

    /// The broker's count of earlier deliveries of this message (0 the first time); added
    /// to the attempt the envelope carries.
    pub fn earlier_deliveries(mut self, count: u32) -> Self {
        self.earlier_deliveries = count;
        self
    }

    /// Whether the broker flagged the message as delivered before.
    pub fn redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// What the transport found wrong, if anything.
    pub fn defect(&self) -> Option<&str> {
        self.defect.as_deref()
    }

    /// The value of a header as received.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Turn the message into an envelope and its delivery attempt, or into a placeholder
    /// envelope carrying it, with the reason it is not an envelope.
    pub(crate) fn decode(self) -> Decoded {
        let WireMessage {
            headers,
            payload,
            defect,
            earlier_deliveries,
            redelivered,
        } = self;
        let mut attempt = 1u32;
        let reason = match defect {
            Some(reason) => reason,
            None => {
                let pairs = headers.iter().filter_map(|(n, v)| {
                    if n == attrs::ATTEMPT {
                        attempt = v.parse::<u32>().unwrap_or(1).max(1);
                        None
                    } else {
                        Some((n.as_ref(), v.as_ref()))
                    }
                });
                match Envelope::from_attributes(pairs, payload.clone()) {
                    Ok(envelope) => {
                        return Decoded {
                            envelope,
                            attempt: attempt.saturating_add(earlier_deliveries),
                            redelivered,
                            undecodable: None,
                        }
                    }
                    Err(e) => e.message().to_string(),
                }
            }
        };
        Decoded {
            envelope: placeholder(&headers, payload),
            attempt: 1 + earlier_deliveries,
            redelivered,
            undecodable: Some(format!(
                "undecodable: not a valid tidings envelope: {reason}"
            )),
        }
    }
}

pub(crate) struct Decoded {
    pub(crate) envelope: Envelope,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
    pub(crate) undecodable: Option<String>,
}

/// A well-formed envelope standing in for a message that is not one, so it can go to the
/// dead letters like any other: its body, its id and type where they parse, and every
/// header under [`ORIGINAL_HEADER_PREFIX`] (names cut to what every broker takes).
fn placeholder(headers: &[(Cow<'_, str>, Cow<'_, str>)], payload: Bytes) -> Envelope {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    };
    let event_type = get(attrs::TYPE)
        .filter(|t| !t.is_empty())
        .unwrap_or("unknown")
        .to_string();
    let content_type = get(attrs::CONTENT_TYPE)
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut envelope = Envelope::new(event_type, 1, "unknown", content_type, payload);
    if let Some(id) = get(attrs::ID).and_then(|id| Uuid::parse_str(id).ok()) {
        envelope.id = id;
    }
    for (name, value) in headers {
        let mut keep = name
            .len()
            .min(MAX_HEADER_NAME - ORIGINAL_HEADER_PREFIX.len());
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
        envelope.headers.push((
            format!("{ORIGINAL_HEADER_PREFIX}{}", &name[..keep]),
            value.to_string(),
        ));
    }
    envelope
}

/// A dead letter the broker would not take whole: the same envelope without its payload,
/// with [`DLQ_PAYLOAD_OMITTED`] saying how large it was. Its headers and reason are kept.
pub(crate) fn without_payload(envelope: &Envelope) -> Envelope {
    let mut stub = envelope.clone();
    stub.set_header(DLQ_PAYLOAD_OMITTED, envelope.payload.len().to_string());
    stub.payload = Bytes::new();
    stub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_message_decodes_with_its_attempt() {
        let env = Envelope::new("a.b", 2, "svc", "application/json", &b"{}"[..]);
        let mut msg = WireMessage::new(env.payload.clone()).earlier_deliveries(1);
        for (n, v) in env.attributes() {
            msg.push(n.into_owned(), v);
        }
        msg.push(attrs::ATTEMPT, "3");
        let d = msg.decode();
        assert!(d.undecodable.is_none());
        assert_eq!(d.envelope.id, env.id);
        assert_eq!(d.attempt, 4);
        assert!(d.envelope.headers.is_empty(), "{:?}", d.envelope.headers);
    }

    #[test]
    fn a_foreign_message_becomes_a_placeholder_keeping_everything() {
        let id = Uuid::new_v4().to_string();
        let d = WireMessage::new(&b"raw"[..])
            .header(attrs::TYPE, "lending.book-borrowed")
            .header(attrs::ID, id.clone())
            .header(attrs::TIME, "yesterday")
            .header("custom", "kept")
            .decode();
        let reason = d.undecodable.expect("undecodable");
        assert!(reason.contains("ce_time"), "{reason}");
        assert_eq!(d.envelope.payload.as_ref(), b"raw");
        assert_eq!(d.envelope.event_type, "lending.book-borrowed");
        assert_eq!(d.envelope.id.to_string(), id);
        assert_eq!(d.envelope.header("tidings-original-custom"), Some("kept"));
    }

    #[test]
    fn a_non_text_header_is_a_defect_naming_it() {
        let d = WireMessage::new(Bytes::new())
            .header_bytes("bin", &[0xff])
            .decode();
        assert!(d.undecodable.unwrap().contains("`bin`"));
    }

    #[test]
    fn placeholder_header_names_stay_within_255_bytes() {
        let long = "é".repeat(200);
        let d = WireMessage::new(Bytes::new()).header(long, "v").decode();
        assert!(d.envelope.headers[0].0.len() <= MAX_HEADER_NAME);
    }

    #[test]
    fn reserved_custom_headers_are_refused_by_name() {
        for name in ["ce_source", "CE_ID", "content-type", "tidings-attempt", ""] {
            let err = check_custom_headers(&[(name.into(), "x".into())], &[]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().contains(&format!("`{name}`")), "{err}");
        }
        let err = check_custom_headers(&[("x-death".into(), "1".into())], &["x-"]).unwrap_err();
        assert!(err.message().contains("broker"), "{err}");
        check_custom_headers(&[("tenant".into(), "north".into())], &["x-"]).unwrap();
    }
}
