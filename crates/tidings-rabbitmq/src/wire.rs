//! Reading: an AMQP message as the broker handed it over becomes a core
//! [`WireMessage`]; the core decides whether it is an envelope (ARCHITECTURE.md, "One core, thin transports").
//!
//! - Every header whose name starts with `x-` is the broker's (`x-death`,
//!   `x-first-death-*`, `x-delivery-count`, shovel and federation headers) and is left out;
//!   `x-delivery-count` (quorum queues) becomes the count of earlier deliveries.
//! - Text, byte-array and number headers are handed over as text (bytes that are not UTF-8
//!   make the message undecodable, naming the header).
//! - Tables, arrays, decimals and void values cannot be carried by an envelope: the message
//!   is marked undecodable naming the header, so the core dead-letters it with that reason
//!   (the value is kept, as text, among the placeholder's original headers).
//! - The AMQP `content_type` property stands in for a missing `content-type` header.

use std::borrow::Cow;

use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tidings_core::transport::attrs;
use tidings_core::transport::wire::WireMessage;

/// The quorum queues' count of earlier deliveries.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// Whether `name` is a header the broker keeps for itself (`x-*`, any case).
pub(crate) fn is_broker_header(name: &str) -> bool {
    name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-"))
}

/// The message `body` with `properties`, as the core reads it.
pub(crate) fn wire_message(
    properties: &BasicProperties,
    body: Vec<u8>,
    redelivered: bool,
) -> WireMessage<'_> {
    let mut message = WireMessage::new(body).redelivered(redelivered);
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            let name = name.as_str();
            if is_broker_header(name) {
                if name.eq_ignore_ascii_case(DELIVERY_COUNT) {
                    if let Some(count) = number(value) {
                        message = message.earlier_deliveries(count);
                    }
                }
                continue;
            }
            push_value(&mut message, name, value);
        }
    }
    if message.get(attrs::CONTENT_TYPE).is_none() {
        if let Some(content_type) = properties.content_type() {
            message.push(attrs::CONTENT_TYPE, content_type.as_str());
        }
    }
    message
}

/// Hand one header over as text, or mark the message undecodable if its type has no text
/// form an envelope could carry.
fn push_value<'a>(message: &mut WireMessage<'a>, name: &'a str, value: &'a AMQPValue) {
    let text: Cow<'a, str> = match value {
        AMQPValue::LongString(s) => return message.push_bytes(name, s.as_bytes()),
        AMQPValue::ByteArray(b) => return message.push_bytes(name, b.as_slice()),
        AMQPValue::ShortString(s) => Cow::Borrowed(s.as_str()),
        AMQPValue::Boolean(b) => Cow::Owned(b.to_string()),
        AMQPValue::ShortShortInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortShortUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::ShortUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongUInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::LongLongInt(n) => Cow::Owned(n.to_string()),
        AMQPValue::Timestamp(n) => Cow::Owned(n.to_string()),
        AMQPValue::Float(n) => Cow::Owned(n.to_string()),
        AMQPValue::Double(n) => Cow::Owned(n.to_string()),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => {
            let kind = match value {
                AMQPValue::DecimalValue(_) => "a decimal",
                AMQPValue::FieldArray(_) => "an array",
                AMQPValue::FieldTable(_) => "a table",
                _ => "void",
            };
            message.mark_defect(format!(
                "header `{name}` is {kind}, an AMQP type a tidings envelope cannot carry (headers are text)"
            ));
            Cow::Owned(format!("{value:?}"))
        }
    };
    message.push(name, text);
}

/// A number header (any integer type, or text holding one).
fn number(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) if *n >= 0 => Some(u32::try_from(*n).unwrap_or(u32::MAX)),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

/// The text of a broker header (`x-first-death-reason`), if it is text.
pub(crate) fn broker_text<'a>(properties: &'a BasicProperties, name: &str) -> Option<Cow<'a, str>> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, FieldTable, LongString, ShortString};
    use tidings_core::{transport::Delivery, Envelope};

    fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (n, v) in headers {
            table.insert(ShortString::from(*n), v.clone());
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(table)
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    /// The headers tidings writes for `env`.
    fn headers_of(env: &Envelope) -> Vec<(String, AMQPValue)> {
        env.attributes()
            .into_iter()
            .map(|(n, v)| (n.into_owned(), text(&v)))
            .collect()
    }

    fn receive(properties: &BasicProperties, body: &[u8]) -> Delivery<()> {
        Delivery::from_wire(wire_message(properties, body.to_vec(), false), ())
    }

    #[test]
    fn envelope_round_trips_through_amqp_properties() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            2,
            "lending",
            "application/json",
            &b"{}"[..],
        );
        env.correlation_id = Some(uuid::Uuid::new_v4());
        env.set_header("tenant", "north");
        let properties = crate::publisher::properties(&env).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.message_id().as_ref().unwrap().as_str(),
            env.id.to_string()
        );
        let back = receive(&properties, &env.payload);
        assert!(back.undecodable.is_none(), "{:?}", back.undecodable);
        assert_eq!(back.attempt, 1);
        assert_eq!(back.envelope.id, env.id);
        assert_eq!(back.envelope.event_type, env.event_type);
        assert_eq!(back.envelope.correlation_id, env.correlation_id);
        assert_eq!(back.envelope.header("tenant"), Some("north"));
        assert_eq!(back.envelope.version, 2);
    }

    #[test]
    fn attempt_adds_the_quorum_delivery_count_and_broker_headers_stay_out() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let mut headers = headers_of(&env);
        headers.push((attrs::ATTEMPT.into(), text("3")));
        headers.push((DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2)));
        headers.push(("x-first-death-queue".into(), text("q.delay.8ms")));
        // x-death is an array of tables: the broker's, so never a defect.
        headers.push((
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(
                FieldTable::default(),
            )])),
        ));
        let pairs: Vec<(&str, AMQPValue)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let back = receive(&props(&pairs), b"{}");
        assert!(back.undecodable.is_none(), "{:?}", back.undecodable);
        assert_eq!(back.attempt, 5);
        assert!(back.envelope.header(attrs::ATTEMPT).is_none());
        assert!(
            back.envelope
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("x-")),
            "{:?}",
            back.envelope.headers
        );
    }

    #[test]
    fn the_content_type_property_stands_in_for_a_missing_header() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let headers: Vec<(String, AMQPValue)> = headers_of(&env)
            .into_iter()
            .filter(|(n, _)| n != attrs::CONTENT_TYPE)
            .collect();
        let pairs: Vec<(&str, AMQPValue)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let back = receive(&props(&pairs), b"{}");
        assert!(back.undecodable.is_none(), "{:?}", back.undecodable);
        assert_eq!(back.envelope.content_type.as_ref(), "application/json");
    }

    #[test]
    fn a_table_header_makes_the_message_undecodable_naming_it() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let mut headers = headers_of(&env);
        headers.push(("meta".into(), AMQPValue::FieldTable(FieldTable::default())));
        let pairs: Vec<(&str, AMQPValue)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let back = receive(&props(&pairs), b"{}");
        let reason = back.undecodable.expect("a table header is a defect");
        assert!(
            reason.contains("`meta`") && reason.contains("table"),
            "{reason}"
        );
        // The placeholder keeps the header, and its id where it parsed.
        assert_eq!(back.envelope.id, env.id);
        assert!(back.envelope.header("tidings-original-meta").is_some());
        // The placeholder can be sent to the dead-letter queue.
        crate::publisher::properties(&back.envelope).expect("the dead letter can be sent");
    }

    #[test]
    fn a_header_that_is_not_utf8_makes_the_message_undecodable_naming_it() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let mut headers = headers_of(&env);
        headers.push((
            "bin".into(),
            AMQPValue::LongString(LongString::from(vec![0xffu8, 0xfe])),
        ));
        let pairs: Vec<(&str, AMQPValue)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let reason = receive(&props(&pairs), b"{}").undecodable.unwrap();
        assert!(reason.contains("`bin`"), "{reason}");
    }

    #[test]
    fn numbers_and_booleans_arrive_as_text() {
        let env = Envelope::new("t", 1, "s", "application/json", &b"{}"[..]);
        let mut headers = headers_of(&env);
        headers.push(("count".into(), AMQPValue::LongInt(-7)));
        headers.push(("flag".into(), AMQPValue::Boolean(true)));
        let pairs: Vec<(&str, AMQPValue)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let back = receive(&props(&pairs), b"{}");
        assert!(back.undecodable.is_none(), "{:?}", back.undecodable);
        assert_eq!(back.envelope.header("count"), Some("-7"));
        assert_eq!(back.envelope.header("flag"), Some("true"));
    }

    #[test]
    fn a_placeholder_of_a_long_header_name_can_be_sent() {
        let long = "é".repeat(125); // 250 bytes
        let headers = [(long.as_str(), text("v"))];
        let back = receive(&props(&headers), b"");
        assert!(back.undecodable.is_some());
        let (name, value) = &back.envelope.headers[0];
        assert!(name.len() <= 255, "{name}");
        assert_eq!(value, "v");
        crate::publisher::properties(&back.envelope).expect("the dead letter can be sent");
    }

    #[test]
    fn the_delivery_count_reads_any_integer_type() {
        assert_eq!(number(&AMQPValue::LongLongInt(2)), Some(2));
        assert_eq!(number(&AMQPValue::LongLongInt(-1)), None);
        assert_eq!(number(&AMQPValue::LongLongInt(i64::MAX)), Some(u32::MAX));
        assert_eq!(number(&AMQPValue::ShortUInt(4)), Some(4));
        assert_eq!(number(&text("5")), Some(5));
        assert_eq!(number(&AMQPValue::Boolean(true)), None);
    }
}
