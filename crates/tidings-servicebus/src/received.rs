//! Messages as a peek-lock answer hands them over, and their wire mapping for the core
//! ([`WireMessage`]): custom properties become headers (`ce_datacontenttype` the
//! `content-type`), the message's ContentType the `content-type` when no property names
//! one, `MessageId` and `Label` stand in for a missing `ce_id` and `ce_type` (messages of
//! other publishers), and DeliveryCount − 1 are the earlier deliveries. Whether that is an
//! envelope the core decides ([`Delivery::from_wire`]).

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use tidings_core::transport::wire::WireMessage;
use tidings_core::{
    transport::{attrs, Delivery},
    Envelope,
};
use uuid::Uuid;

use crate::wire::{reserved, BODY_ENCODING, CONTENT_TYPE, DEAD_LETTER, PCT};

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
