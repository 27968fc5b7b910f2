//! Envelopes as Service Bus messages, and messages as a peek-lock answer hands them over.
//!
//! Sending ([`encode`]):
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
//!
//! Receiving ([`Received`]), the message is mapped for the core ([`WireMessage`]): custom
//! properties become headers (`ce_datacontenttype` the `content-type`), the message's
//! ContentType the `content-type` when no property names one, `MessageId` and `Label`
//! stand in for a missing `ce_id` and `ce_type` (messages of other publishers), and
//! DeliveryCount − 1 are the earlier deliveries. Whether that is an envelope the core
//! decides ([`Delivery::from_wire`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};
use tidings_core::transport::wire::WireMessage;
use tidings_core::{
    transport::{attrs, Delivery},
    Envelope, Error, ErrorKind, Result,
};
use uuid::Uuid;

/// Marks a base64 body.
pub(crate) const BODY_ENCODING: &str = "tidings-body-encoding";
/// Names the properties whose values are percent-encoded.
pub(crate) const PCT: &str = "tidings-pct";
/// The content type, as a custom property (the batch API has no Content-Type per message).
pub(crate) const CONTENT_TYPE: &str = "ce_datacontenttype";
/// Marks the copy of an envelope on its way to the dead-letter subqueue.
pub(crate) const DEAD_LETTER: &str = "tidings-dead-letter";

/// The marks this transport sets on a message itself (plus the attempt of a re-send):
/// never carried over from the envelope being sent.
const OWN_MARKS: &[&str] = &[BODY_ENCODING, PCT, DEAD_LETTER, attrs::ATTEMPT];

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
        } else if OWN_MARKS.contains(&name.as_ref()) {
            // The transport's own marks are set below, never carried over; every other
            // header (the core's dead-letter, claim-check and schedule headers included) is.
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
    // A scheduled envelope is held by the broker until its time (the core puts back what
    // still arrives early); a re-send's own schedule wins.
    let scheduled = match resend.scheduled {
        Some(at) => Some(at),
        None => tidings_core::transport::deliver_at(env)
            .ok()
            .flatten()
            .filter(|at| *at > SystemTime::now()),
    };
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
        scheduled,
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
            // The HTTP date has whole seconds: round up, so the broker never enqueues early.
            let whole = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .unwrap_or_default();
            bp.insert(
                "ScheduledEnqueueTimeUtc".into(),
                httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole)).into(),
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

/// The content type Service Bus reports for a message sent without one.
const NO_CONTENT_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";

/// BrokerProperties of a received message, as far as the transport needs them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received {
    pub(crate) delivery_count: u32,
    pub(crate) sequence_number: i64,
    pub(crate) message_id: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) locked_until: Option<SystemTime>,
    pub(crate) server_now: Option<SystemTime>,
    pub(crate) lock_uri: Option<String>,
    pub(crate) lock_token: Option<String>,
    pub(crate) content_type: Option<String>,
    /// Custom properties, unquoted and decoded, lowercase names.
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Received {
    /// Read a peek-lock answer's headers and body. Never fails: what cannot be read is left
    /// out, and the core says what is missing.
    pub(crate) fn from_answer(headers: &HashMap<String, String>, body: Bytes) -> Self {
        let mut r = Received {
            body,
            ..Default::default()
        };
        if let Some(bp) = headers
            .get("brokerproperties")
            .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok())
        {
            let s = |k: &str| bp.get(k).and_then(Value::as_str).map(str::to_string);
            r.delivery_count = bp.get("DeliveryCount").and_then(Value::as_u64).unwrap_or(1) as u32;
            r.sequence_number = bp
                .get("SequenceNumber")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            r.message_id = s("MessageId");
            r.label = s("Label");
            r.locked_until = s("LockedUntilUtc").and_then(|t| parse_date(&t));
            r.lock_token = s("LockToken");
        }
        r.server_now = headers.get("date").and_then(|d| parse_date(d));
        r.lock_uri = headers.get("location").cloned();
        r.content_type = headers
            .get("content-type")
            .filter(|ct| !ct.eq_ignore_ascii_case(NO_CONTENT_TYPE))
            .cloned();
        let encoded: Vec<String> = headers
            .get(PCT)
            .map(|v| {
                unquote(v)
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in headers {
            if reserved(k) || k == PCT {
                continue;
            }
            let mut value = unquote(v);
            if encoded.iter().any(|e| e == k) {
                value = percent_decode_str(&value).decode_utf8_lossy().into_owned();
            }
            r.properties.push((k.clone(), value));
        }
        r.properties.sort();
        r
    }

    pub(crate) fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a dead-letter copy on its way to the subqueue.
    pub(crate) fn is_dead_letter_copy(&self) -> bool {
        self.property(DEAD_LETTER).is_some()
    }

    /// The message as the core reads it (see the module docs).
    pub(crate) fn wire_message(&self) -> WireMessage<'_> {
        let mut defect = None;
        let payload = match self.property(BODY_ENCODING) {
            None => self.body.clone(),
            Some("base64") => match base64::engine::general_purpose::STANDARD.decode(&self.body) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    defect = Some(format!("the body is marked base64 but is not: {e}"));
                    self.body.clone()
                }
            },
            Some(other) => {
                defect = Some(format!("unknown body encoding {other:?}"));
                self.body.clone()
            }
        };
        let earlier = self.delivery_count.max(1) - 1;
        let mut m = WireMessage::new(payload)
            .earlier_deliveries(earlier)
            .redelivered(earlier > 0);
        if let Some(reason) = defect {
            m.mark_defect(reason);
        }
        let mut content_type = false;
        for (k, v) in &self.properties {
            match k.as_str() {
                BODY_ENCODING | DEAD_LETTER => {}
                CONTENT_TYPE => {
                    content_type = true;
                    m.push(attrs::CONTENT_TYPE, v.as_str());
                }
                _ => m.push(k.as_str(), v.as_str()),
            }
        }
        if !content_type {
            if let Some(ct) = &self.content_type {
                m.push(attrs::CONTENT_TYPE, ct.as_str());
            }
        }
        // Messages of other publishers: the MessageId and Label stand in for ce_id and
        // ce_type.
        if self.property(attrs::ID).is_none() {
            if let Some(id) = self
                .message_id
                .as_deref()
                .filter(|id| Uuid::parse_str(id).is_ok())
            {
                m.push(attrs::ID, id);
            }
        }
        if self.property(attrs::TYPE).is_none() {
            if let Some(label) = self.label.as_deref() {
                m.push(attrs::TYPE, label);
            }
        }
        m
    }

    /// The envelope the core reads from this message, or the placeholder carrying it when
    /// it is not one (listing and replaying dead letters must show everything).
    pub(crate) fn envelope(&self) -> Envelope {
        let delivery = Delivery::from_wire(self.wire_message(), ());
        std::sync::Arc::unwrap_or_clone(delivery.envelope)
    }
}

/// A custom property value as the REST API returns it: strings JSON-quoted.
fn unquote(v: &str) -> String {
    if v.starts_with('"') {
        if let Ok(Value::String(s)) = serde_json::from_str::<Value>(v) {
            return s;
        }
    }
    v.to_string()
}

fn parse_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    httpdate::parse_http_date(s).ok().or_else(|| {
        s.strip_suffix("+0000")
            .and_then(|h| httpdate::parse_http_date(&format!("{}GMT", h)).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_scheduled_envelope_is_held_by_the_broker_until_the_next_whole_second() {
        let mut env = Envelope::new("a.b", 1, "s", "application/json", &b"{}"[..]);
        let at = SystemTime::now() + Duration::from_millis(1500);
        env.set_header(
            tidings_core::transport::DELIVER_AT,
            humantime::format_rfc3339_millis(at).to_string(),
        );
        let at = tidings_core::transport::deliver_at(&env).unwrap().unwrap();
        let out = encode(&env, Resend::default()).unwrap();
        let date = out.broker_properties()["ScheduledEnqueueTimeUtc"]
            .as_str()
            .unwrap()
            .to_string();
        let held = httpdate::parse_http_date(&date).unwrap();
        assert!(held >= at && held < at + Duration::from_secs(1), "{date}");
        // The header travels too, for the core's check on receipt.
        assert!(out
            .properties
            .iter()
            .any(|(n, _)| n == tidings_core::transport::DELIVER_AT));
        let past = Envelope::new("a.b", 1, "s", "application/json", &b"{}"[..]);
        assert!(encode(&past, Resend::default())
            .unwrap()
            .scheduled
            .is_none());
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
