//! Envelope <-> Kafka record.
//!
//! Writing: the envelope's attributes become record headers (the CloudEvents Kafka
//! binding: `ce_id`, `ce_type`, ..., `content-type`, from the core's header table) and its
//! payload the record's value; the key, set by the publisher, is the ordering key.
//!
//! Reading: a record's headers (as bytes; a value that is not UTF-8 makes the record
//! undecodable) and its value go to the core as a [`WireMessage`], and the core decides
//! whether they are an envelope. The record key is not read: the ordering key travels in
//! `ce_partitionkey`.
//!
//! The transport's own headers are written and read here too: on retry records the due
//! time and the record's first place in the topic, on dead letters that place.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use tidings_core::transport::{attrs, wire::WireMessage};
use tidings_core::Envelope;

/// Header of retry records: when the record is due, in Unix milliseconds.
pub const DUE_HEADER: &str = "tidings-due";
/// Header of retry records and dead letters: the partition the record was first read from.
pub const ORIGIN_PARTITION_HEADER: &str = "tidings-kafka-partition";
/// Header of retry records and dead letters: the offset the record was first read from.
pub const ORIGIN_OFFSET_HEADER: &str = "tidings-kafka-offset";
/// Header of replay markers: when the dead letter was replayed, in Unix milliseconds.
const REPLAYED_AT_HEADER: &str = "tidings-replayed-at";

/// Where a record was first read in the subscription's topic: partition and offset.
pub(crate) type Origin = (i32, i64);

/// The record headers of `envelope`: its CloudEvents attributes, then `extra`.
pub(crate) fn headers_of(envelope: &Envelope, extra: &[(&str, String)]) -> OwnedHeaders {
    let attributes = envelope.attributes();
    let mut headers = OwnedHeaders::new_with_capacity(attributes.len() + extra.len());
    for (name, value) in &attributes {
        headers = headers.insert(Header {
            key: name.as_ref(),
            value: Some(value.as_bytes()),
        });
    }
    for (name, value) in extra {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// The headers naming a record's first place in the topic.
pub(crate) fn origin_headers((partition, offset): Origin) -> [(&'static str, String); 2] {
    [
        (ORIGIN_PARTITION_HEADER, partition.to_string()),
        (ORIGIN_OFFSET_HEADER, offset.to_string()),
    ]
}

/// The headers of a retry record of `envelope`: its own, the attempt it is for, when it is
/// due and where it was first read.
pub(crate) fn retry_headers(
    envelope: &Envelope,
    next_attempt: u32,
    due: SystemTime,
    origin: Origin,
) -> OwnedHeaders {
    let [partition, offset] = origin_headers(origin);
    headers_of(
        envelope,
        &[
            (attrs::ATTEMPT, next_attempt.to_string()),
            (DUE_HEADER, unix_millis(due).to_string()),
            partition,
            offset,
        ],
    )
}

/// The headers of a replay marker written at `at` (Unix milliseconds).
pub(crate) fn marker_headers(at: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: REPLAYED_AT_HEADER,
        value: Some(at.as_bytes()),
    })
}

/// Remove the transport's own headers from an envelope read back from the dead-letter
/// topic, before it is replayed.
pub(crate) fn remove_transport_headers(envelope: &mut Envelope) {
    for name in [ORIGIN_PARTITION_HEADER, ORIGIN_OFFSET_HEADER, DUE_HEADER] {
        envelope.remove_header(name);
    }
}

/// What a retry record's own headers say: when it is due and where it was first read.
#[derive(Debug, Default)]
pub(crate) struct RetryStamp {
    pub(crate) due: Option<SystemTime>,
    pub(crate) origin: Option<Origin>,
}

/// `message` as the core reads it. A record of the retry topic (`retry`) is a redelivery,
/// and its retry headers are taken out into the [`RetryStamp`]; on any other record they
/// are headers like the rest.
pub(crate) fn read<'m>(
    message: &'m BorrowedMessage<'_>,
    retry: bool,
) -> (WireMessage<'m>, RetryStamp) {
    let mut wire = WireMessage::new(Bytes::copy_from_slice(
        message.payload().unwrap_or_default(),
    ))
    .redelivered(retry);
    let mut stamp = RetryStamp::default();
    let (mut partition, mut offset) = (None, None);
    for header in message.headers().into_iter().flat_map(|h| h.iter()) {
        let value = header.value.unwrap_or_default();
        if !retry {
            // Records of the topic itself (nearly all): no transport headers to look for.
            wire.push_bytes(header.key, value);
            continue;
        }
        let text = || std::str::from_utf8(value).ok();
        match header.key {
            DUE_HEADER => {
                stamp.due = text()
                    .and_then(|d| d.parse::<u64>().ok())
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            }
            ORIGIN_PARTITION_HEADER => partition = text().and_then(|p| p.parse().ok()),
            ORIGIN_OFFSET_HEADER => offset = text().and_then(|o| o.parse().ok()),
            key => wire.push_bytes(key, value),
        }
    }
    stamp.origin = partition.zip(offset);
    (wire, stamp)
}

/// `t` in Unix milliseconds.
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                let value = std::str::from_utf8(h.value.unwrap_or_default()).unwrap();
                (h.key.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn retry_records_carry_the_envelope_then_attempt_due_time_and_first_place() {
        let mut envelope = Envelope::new("kt.note", 1, "lending", "application/json", &b"{}"[..]);
        envelope.set_header("tenant", "north");
        let due = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let headers = texts(&retry_headers(&envelope, 3, due, (2, 41)));
        let attributes: Vec<(String, String)> = envelope
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v))
            .collect();
        assert_eq!(headers[..attributes.len()], attributes[..]);
        assert!(headers.contains(&("tenant".into(), "north".into())));
        let own: Vec<(&str, &str)> = headers[attributes.len()..]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            own,
            [
                (attrs::ATTEMPT, "3"),
                (DUE_HEADER, "1700000000123"),
                (ORIGIN_PARTITION_HEADER, "2"),
                (ORIGIN_OFFSET_HEADER, "41"),
            ]
        );
    }

    #[test]
    fn replayed_envelopes_lose_the_transport_headers_only() {
        let mut envelope = Envelope::new("kt.note", 1, "lending", "application/json", &b"{}"[..]);
        for (name, value) in origin_headers((1, 7)) {
            envelope.set_header(name, value);
        }
        envelope.set_header(DUE_HEADER, "1");
        envelope.set_header("tenant", "north");
        remove_transport_headers(&mut envelope);
        let names: Vec<String> = envelope
            .attributes()
            .into_iter()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with("tidings-")),
            "{names:?}"
        );
        assert_eq!(envelope.header("tenant"), Some("north"));
    }
}
