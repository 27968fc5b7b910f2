//! An outbox row: the envelope as it is written (typed columns for people reading the
//! table, the other attributes as one MessagePack column) and read back by the relay.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidings_core::{Envelope, Error, ErrorKind, Result};
use uuid::Uuid;

/// The envelope attributes an outbox row carries besides its payload.
#[derive(Debug, Serialize, Deserialize)]
struct Meta<'a> {
    id: Uuid,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    version: u32,
    time_us: i64,
    #[serde(borrow)]
    content_type: Cow<'a, str>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tracestate: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ordering_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// One event to write into the outbox.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) id: Uuid,
    pub(crate) service: String,
    pub(crate) topic: String,
    pub(crate) event_type: String,
    pub(crate) version: i64,
    pub(crate) meta: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

impl NewRow {
    pub(crate) fn new(topic: &str, envelope: &Envelope) -> Result<Self> {
        let time_us = envelope
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let meta = Meta {
            id: envelope.id,
            event_type: Cow::Borrowed(&envelope.event_type),
            version: envelope.version,
            time_us,
            content_type: Cow::Borrowed(&envelope.content_type),
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            traceparent: envelope.traceparent.as_deref().map(Cow::Borrowed),
            tracestate: envelope.tracestate.as_deref().map(Cow::Borrowed),
            ordering_key: envelope.ordering_key.as_deref().map(Cow::Borrowed),
            headers: envelope
                .headers
                .iter()
                .map(|(n, v)| (Cow::Borrowed(n.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
        };
        let meta = rmp_serde::to_vec(&meta).map_err(|e| {
            Error::new(
                ErrorKind::Encode,
                "encoding the envelope attributes for the outbox",
            )
            .with_source(e)
        })?;
        Ok(NewRow {
            id: envelope.id,
            service: envelope.source.to_string(),
            topic: topic.to_string(),
            event_type: envelope.event_type.to_string(),
            version: i64::from(envelope.version),
            meta,
            payload: envelope.payload.to_vec(),
        })
    }
}

/// A pending outbox row, as the relay reads it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: i64,
    pub(crate) topic: String,
    pub(crate) meta: Vec<u8>,
    pub(crate) payload: Bytes,
}

impl Pending {
    /// Rebuild the envelope exactly as it was enqueued (same id, time and headers), with
    /// `source`, the relay's service, which every row it claims was written with.
    pub(crate) fn envelope(&self, source: &Arc<str>) -> Result<Envelope> {
        let meta: Meta<'_> = rmp_serde::from_slice(&self.meta).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("outbox row {} has unreadable attributes", self.seq),
            )
            .with_source(e)
        })?;
        let content_type: Cow<'static, str> = match meta.content_type.as_ref() {
            tidings_core::MSGPACK => Cow::Borrowed(tidings_core::MSGPACK),
            tidings_core::JSON => Cow::Borrowed(tidings_core::JSON),
            other => Cow::Owned(other.to_string()),
        };
        let mut env = Envelope::new(
            meta.event_type.into_owned(),
            meta.version,
            source.clone(),
            content_type,
            self.payload.clone(),
        );
        env.id = meta.id;
        env.time = UNIX_EPOCH + Duration::from_micros(u64::try_from(meta.time_us).unwrap_or(0));
        env.correlation_id = meta.correlation_id;
        env.causation_id = meta.causation_id;
        env.traceparent = meta.traceparent.map(Cow::into_owned);
        env.tracestate = meta.tracestate.map(Cow::into_owned);
        env.ordering_key = meta.ordering_key.map(Cow::into_owned);
        env.headers = meta
            .headers
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_gives_back_the_envelope_it_was_written_from() {
        let mut env = Envelope::new(
            "lending.book-borrowed",
            3,
            "lending",
            tidings_core::JSON,
            &b"{\"a\":1}"[..],
        );
        env.correlation_id = Some(Uuid::new_v4());
        env.causation_id = Some(Uuid::new_v4());
        env.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        env.tracestate = Some("vendor=1".into());
        env.ordering_key = Some("book-1".into());
        env.set_header("tenant", "north");
        env.set_header("empty", "");
        let row = NewRow::new("ns.lending", &env).unwrap();
        assert_eq!(
            (row.id, row.event_type.as_str(), row.version),
            (env.id, "lending.book-borrowed", 3)
        );
        let pending = Pending {
            seq: 1,
            topic: row.topic,
            meta: row.meta,
            payload: row.payload.into(),
        };
        let back = pending.envelope(&Arc::from("lending")).unwrap();
        // Time is kept to the microsecond.
        let drift = env.time.duration_since(back.time).unwrap_or_default();
        assert!(drift < Duration::from_micros(1));
        let mut back = back;
        back.time = env.time;
        assert_eq!(back, env);
    }

    #[test]
    fn an_unreadable_row_is_a_decode_error_naming_it() {
        let pending = Pending {
            seq: 42,
            topic: "t".into(),
            meta: vec![0xc1],
            payload: Bytes::new(),
        };
        let err = pending.envelope(&Arc::from("s")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.message().contains("row 42"), "{err}");
    }
}
