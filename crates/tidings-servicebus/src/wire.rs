//! Envelopes as Service Bus messages (the way back is in `received`).
//!
//! - BrokerProperties: `MessageId` = envelope id, `CorrelationId` = correlation id,
//!   `Label` = wire name; `To` = a subscription name on re-sends meant for one
//!   subscription (retries, dead letters, replays).
//! - Custom properties (HTTP headers on the REST API): every CloudEvents attribute of
//!   [`Envelope::attributes`] under its `ce_` name, the content type as
//!   `ce_datacontenttype`, the custom headers, and the transport's own `tidings-*` marks.
//!   Values that are not plain printable ASCII are percent-encoded and named in
//!   `tidings-pct`.
//! - Body: the payload when it is UTF-8; otherwise its base64, marked with
//!   `tidings-body-encoding: base64` (the azure crate and the batch API carry bodies as
//!   strings).

use std::time::SystemTime;

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};
use tidings_core::{transport::attrs, Envelope, Error, ErrorKind, Result};
use uuid::Uuid;

/// Marks a base64 body.
pub(crate) const BODY_ENCODING: &str = "tidings-body-encoding";
/// Names the properties whose values are percent-encoded.
pub(crate) const PCT: &str = "tidings-pct";
/// The content type, as a custom property (the batch API has no Content-Type per message).
pub(crate) const CONTENT_TYPE: &str = "ce_datacontenttype";
/// Marks the copy of an envelope on its way to the dead-letter subqueue.
pub(crate) const DEAD_LETTER: &str = "tidings-dead-letter";

/// Header name prefixes Service Bus keeps for itself: custom properties travel as HTTP
/// headers, and the REST protocol's own optional headers are `x-ms-*` (`x-ms-retrypolicy`);
/// a property named so would be taken as one.
pub(crate) const RESERVED_PREFIXES: &[&str] = &["x-ms-"];

/// HTTP headers that cannot carry custom properties (protocol and hop-by-hop headers).
pub(crate) fn reserved(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "content-type"
            | "authorization"
            | "brokerproperties"
            | "user-agent"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "connection"
            | "expect"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "upgrade"
            | "date"
            | "cache-control"
            | "pragma"
            | "if-match"
            | "if-none-match"
            | "origin"
            | "referer"
            | "cookie"
            | "set-cookie"
            | "location"
            | "server"
            | "strict-transport-security"
            | "vary"
            | "etag"
            | "expires"
            | "last-modified"
            | "content-encoding"
            | "content-location"
            | "www-authenticate"
            | "x-content-type-options"
    ) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        || name.starts_with("x-forwarded-")
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn plain(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', '"'])
        && !value.ends_with(' ')
}

const PCT_SET: &AsciiSet = &CONTROLS.add(b'%').add(b'"').add(b' ').add(b'\x7f');

/// One message to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) content_type: String,
    pub(crate) message_id: String,
    pub(crate) correlation_id: Option<String>,
    pub(crate) label: String,
    pub(crate) to: Option<String>,
    pub(crate) scheduled: Option<SystemTime>,
    pub(crate) properties: Vec<(String, String)>,
}

/// Options of a re-send: for one subscription only, maybe later, with extra marks.
#[derive(Debug, Default)]
pub(crate) struct Resend<'a> {
    pub(crate) to: Option<&'a str>,
    pub(crate) scheduled: Option<SystemTime>,
    pub(crate) extra: Vec<(&'static str, String)>,
}

/// The message for `env`. Fails with [`ErrorKind::Encode`] for a custom header whose name
/// cannot be an HTTP header.
pub(crate) fn encode(env: &Envelope, resend: Resend<'_>) -> Result<Outgoing> {
    let mut properties = Vec::new();
    let mut encoded = Vec::new();
    let mut push = |name: &str, value: &str| -> Result<()> {
        let name = name.to_ascii_lowercase();
        if !is_token(&name) || reserved(&name) {
            return Err(Error::new(
                ErrorKind::Encode,
                format!(
                    "header {name:?} of `{}` cannot be a Service Bus custom property (custom properties travel as HTTP headers): use letters, digits and '-', '_', '.', and not a standard HTTP header name",
                    env.event_type
                ),
            ));
        }
        if plain(value) {
            properties.push((name, value.to_string()));
        } else {
            properties.push((
                name.clone(),
                utf8_percent_encode(value, PCT_SET).to_string(),
            ));
            encoded.push(name);
        }
        Ok(())
    };
    for (name, value) in env.attributes() {
        if name == attrs::CONTENT_TYPE {
            push(CONTENT_TYPE, &value)?;
        } else if name.starts_with("tidings-") && !name.starts_with("tidings-dlq-") {
            // The transport's own marks are set below, never carried over.
            continue;
        } else {
            push(&name, &value)?;
        }
    }
    for (name, value) in &resend.extra {
        push(name, value)?;
    }
    let body = match std::str::from_utf8(&env.payload) {
        Ok(text) => text.to_string(),
        Err(_) => {
            push(BODY_ENCODING, "base64")?;
            base64::engine::general_purpose::STANDARD.encode(&env.payload)
        }
    };
    if !encoded.is_empty() {
        properties.push((PCT.to_string(), encoded.join(",")));
    }
    let original = resend.to.is_none() && resend.scheduled.is_none() && resend.extra.is_empty();
    Ok(Outgoing {
        body,
        content_type: env.content_type.to_string(),
        // Re-sends get a fresh MessageId so duplicate detection cannot swallow them.
        message_id: if original {
            env.id.to_string()
        } else {
            Uuid::new_v4().to_string()
        },
        correlation_id: env.correlation_id.map(|c| c.to_string()),
        label: env.event_type.to_string(),
        to: resend.to.map(str::to_string),
        scheduled: resend.scheduled,
        properties,
    })
}

impl Outgoing {
    /// The BrokerProperties JSON object.
    pub(crate) fn broker_properties(&self) -> Map<String, Value> {
        let mut bp = Map::new();
        bp.insert("MessageId".into(), self.message_id.clone().into());
        bp.insert("Label".into(), self.label.clone().into());
        if let Some(c) = &self.correlation_id {
            bp.insert("CorrelationId".into(), c.clone().into());
        }
        if let Some(to) = &self.to {
            bp.insert("To".into(), to.clone().into());
        }
        if let Some(at) = self.scheduled {
            bp.insert(
                "ScheduledEnqueueTimeUtc".into(),
                httpdate::fmt_http_date(at).into(),
            );
        }
        bp
    }

    /// This message as an item of a batch send.
    pub(crate) fn batch_item(&self) -> Value {
        let mut item = Map::new();
        item.insert("Body".into(), self.body.clone().into());
        item.insert(
            "BrokerProperties".into(),
            Value::Object(self.broker_properties()),
        );
        let user: Map<String, Value> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        item.insert("UserProperties".into(), Value::Object(user));
        Value::Object(item)
    }

    /// The size of the request this message makes, roughly.
    pub(crate) fn size(&self) -> usize {
        self.body.len()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + 256
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use tidings_core::transport::Delivery;

    use super::*;
    use crate::received::Received;

    fn received(out: &Outgoing) -> Received {
        let mut headers: HashMap<String, String> = out
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_string(v).unwrap()))
            .collect();
        let mut bp = out.broker_properties();
        bp.insert("DeliveryCount".into(), 2.into());
        headers.insert("brokerproperties".into(), Value::Object(bp).to_string());
        headers.insert("content-type".into(), out.content_type.clone());
        Received::from_answer(&headers, Bytes::from(out.body.clone()))
    }

    /// The attempt and the reason it is not an envelope, as the core reads `r`.
    fn decoded(r: &Received) -> (u32, Option<String>) {
        let d = Delivery::from_wire(r.wire_message(), ());
        (d.attempt, d.undecodable)
    }

    #[test]
    fn binary_payloads_and_odd_header_values_survive() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            2,
            "lending",
            "application/msgpack",
            vec![0x92, 0xff, 0x00, 0xc1],
        );
        env.correlation_id = Some(Uuid::new_v4());
        env.set_header("tenant", "nörth \"quoted\" ");
        env.set_header("plain", "a,b");
        let out = encode(&env, Resend::default()).unwrap();
        assert_eq!(out.message_id, env.id.to_string());
        assert_eq!(out.label, "lending.book-borrowed");
        assert!(out
            .properties
            .iter()
            .any(|(k, v)| k == BODY_ENCODING && v == "base64"));
        assert!(
            out.properties.iter().all(|(_, v)| plain(v)),
            "{:?}",
            out.properties
        );
        let mut back = received(&out).envelope();
        let mut expect = env.clone();
        expect.time = back.time;
        // HTTP headers have no order: custom headers come back sorted by name.
        expect.headers.sort();
        back.headers.sort();
        assert_eq!(back, expect);
        assert_eq!(decoded(&received(&out)), (2, None));
    }

    #[test]
    fn text_payloads_go_as_they_are_and_bad_header_names_are_refused() {
        let mut env = Envelope::new("a.b", 1, "s", "application/json", &b"{\"x\":1}"[..]);
        let out = encode(&env, Resend::default()).unwrap();
        assert_eq!(out.body, "{\"x\":1}");
        assert!(!out.properties.iter().any(|(k, _)| k == BODY_ENCODING));
        env.set_header("bad name", "x");
        assert_eq!(
            encode(&env, Resend::default()).unwrap_err().kind(),
            ErrorKind::Encode
        );
        env.remove_header("bad name");
        env.set_header("Authorization", "x");
        assert_eq!(
            encode(&env, Resend::default()).unwrap_err().kind(),
            ErrorKind::Encode
        );
    }

    #[test]
    fn resends_carry_the_attempt_and_a_fresh_message_id() {
        let env = Envelope::new("a.b", 1, "s", "application/json", &b"{}"[..]);
        let out = encode(
            &env,
            Resend {
                to: Some("catalog"),
                scheduled: None,
                extra: vec![(attrs::ATTEMPT, "3".into())],
            },
        )
        .unwrap();
        assert_ne!(out.message_id, env.id.to_string());
        assert_eq!(out.broker_properties()["To"], "catalog");
        let r = received(&out);
        // Base attempt 3, delivered twice: attempt 4.
        assert_eq!(decoded(&r), (4, None));
        assert_eq!(r.envelope().id, env.id);
        assert!(r.envelope().header(attrs::ATTEMPT).is_none());
    }

    #[test]
    fn foreign_messages_use_message_id_label_and_content_type_and_bad_ones_say_why() {
        let id = Uuid::new_v4();
        let mut headers = HashMap::new();
        headers.insert(
            "brokerproperties".to_string(),
            format!(r#"{{"MessageId":"{id}","Label":"x.y","DeliveryCount":1}}"#),
        );
        headers.insert("content-type".to_string(), "application/json".to_string());
        headers.insert("tenant".to_string(), "\"north\"".to_string());
        let r = Received::from_answer(&headers, Bytes::from_static(&[0xff, 0xfe]));
        assert_eq!(decoded(&r), (1, None));
        let env = r.envelope();
        assert_eq!((env.id, env.event_type.as_ref()), (id, "x.y"));
        assert_eq!(env.content_type, "application/json");
        assert_eq!(env.header("tenant"), Some("north"));
        assert_eq!(env.payload.as_ref(), &[0xff, 0xfe]);
        headers.insert(
            "brokerproperties".to_string(),
            r#"{"MessageId":"not-a-uuid","DeliveryCount":3}"#.to_string(),
        );
        headers.insert("content-type".to_string(), NO_CT.to_string());
        let r = Received::from_answer(&headers, Bytes::from_static(b"x"));
        let (attempt, reason) = decoded(&r);
        assert_eq!(attempt, 3);
        assert!(reason.unwrap().contains("ce_id"));
        let placeholder = r.envelope();
        assert_eq!(placeholder.payload.as_ref(), b"x");
        assert_eq!(placeholder.content_type, "application/octet-stream");
        assert_eq!(placeholder.header("tidings-original-tenant"), Some("north"));
    }

    const NO_CT: &str = "application/atom+xml;type=entry;charset=utf-8";

    #[test]
    fn a_body_marked_base64_that_is_not_is_undecodable() {
        let mut headers = HashMap::new();
        headers.insert(BODY_ENCODING.to_string(), "\"base64\"".to_string());
        let r = Received::from_answer(&headers, Bytes::from_static(b"%%%"));
        assert!(decoded(&r).1.unwrap().contains("base64"));
    }
}
