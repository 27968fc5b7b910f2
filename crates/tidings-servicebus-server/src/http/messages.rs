//! Message send and receive: BrokerProperties and custom-property headers in, long-polling
//! receives, and received messages out as replies with their headers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::reply::reply;
use super::{Reply, Shared};
use crate::broker::{Fault, Message, Receive, ReceiveMode, SubQueue};
use crate::util::{ascii_json_string, parse_rfc1123, rfc1123};

/// Request headers that are part of HTTP or of the protocol, not custom message properties.
fn is_protocol_header(name: &str) -> bool {
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
    ) || name.starts_with("x-ms-")
        || name.starts_with("x-forwarded-")
}

fn opt_str(props: &Map<String, Value>, name: &str) -> Option<String> {
    match props.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Apply settable BrokerProperties to a message.
fn apply_broker_properties(m: &mut Message, props: &Map<String, Value>) -> Result<(), Fault> {
    m.message_id = opt_str(props, "MessageId");
    m.correlation_id = opt_str(props, "CorrelationId");
    m.label = opt_str(props, "Label");
    m.to = opt_str(props, "To");
    m.reply_to = opt_str(props, "ReplyTo");
    m.session_id = opt_str(props, "SessionId");
    m.reply_to_session_id = opt_str(props, "ReplyToSessionId");
    m.partition_key = opt_str(props, "PartitionKey");
    if let Some(ct) = opt_str(props, "ContentType") {
        m.content_type = Some(ct);
    }
    if let Some(ttl) = props.get("TimeToLive") {
        let secs = ttl
            .as_f64()
            .or_else(|| ttl.as_str().and_then(|s| s.parse().ok()))
            .filter(|s| *s > 0.0)
            .ok_or_else(|| {
                Fault::bad(format_args!(
                    "TimeToLive {ttl} is not a positive number of seconds"
                ))
            })?;
        m.time_to_live = Some(Duration::from_secs_f64(secs));
    }
    if let Some(ts) = props.get("TimeToLiveTimeSpan").and_then(Value::as_str) {
        m.time_to_live =
            Some(parse_timespan(ts).ok_or_else(|| {
                Fault::bad(format_args!("TimeToLiveTimeSpan {ts:?} is malformed"))
            })?);
    }
    if let Some(at) = opt_str(props, "ScheduledEnqueueTimeUtc") {
        m.scheduled_enqueue_time = Some(parse_rfc1123(&at).ok_or_else(|| {
            Fault::bad(format_args!(
                "ScheduledEnqueueTimeUtc {at:?} is not an RFC 1123 date"
            ))
        })?);
    }
    Ok(())
}

/// A .NET TimeSpan: `[d.]hh:mm:ss[.fff]`.
fn parse_timespan(s: &str) -> Option<Duration> {
    let (days, rest) = match s.split_once('.') {
        Some((d, r)) if !d.contains(':') => (d.parse::<u64>().ok()?, r),
        _ => (0, s),
    };
    let mut parts = rest.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60) + Duration::from_secs_f64(sec))
}

pub(super) fn send(
    shared: &Shared,
    topic: &str,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Result<Reply, Fault> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let messages = if content_type.starts_with("application/vnd.microsoft.servicebus.json") {
        let batch: Vec<Value> = serde_json::from_slice(&body)
            .map_err(|e| Fault::bad(format_args!("the batch is not a JSON array: {e}")))?;
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            let item = item
                .as_object()
                .ok_or_else(|| Fault::bad("each batch item must be a JSON object"))?;
            let mut m = Message {
                body: match item.get("Body") {
                    Some(Value::String(s)) => Bytes::from(s.clone()),
                    None | Some(Value::Null) => Bytes::new(),
                    Some(other) => Bytes::from(other.to_string()),
                },
                ..Default::default()
            };
            if let Some(bp) = item.get("BrokerProperties") {
                let bp = bp
                    .as_object()
                    .ok_or_else(|| Fault::bad("BrokerProperties must be a JSON object"))?;
                apply_broker_properties(&mut m, bp)?;
            }
            if let Some(up) = item.get("UserProperties") {
                let up = up
                    .as_object()
                    .ok_or_else(|| Fault::bad("UserProperties must be a JSON object"))?;
                for (k, v) in up {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    m.properties.push((k.clone(), v));
                }
            }
            out.push(m);
        }
        out
    } else {
        let mut m = Message {
            body,
            ..Default::default()
        };
        if !content_type.is_empty() {
            m.content_type = Some(content_type.to_string());
        }
        if let Some(bp) = headers.get("brokerproperties") {
            let bp = bp
                .to_str()
                .map_err(|_| Fault::bad("BrokerProperties is not ASCII"))?;
            let bp: Map<String, Value> = serde_json::from_str(bp).map_err(|e| {
                Fault::bad(format_args!("BrokerProperties is not a JSON object: {e}"))
            })?;
            apply_broker_properties(&mut m, &bp)?;
        }
        for (name, value) in headers {
            let name = name.as_str();
            if is_protocol_header(name) {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let value = match serde_json::from_str::<Value>(&value) {
                Ok(Value::String(s)) if value.starts_with('"') => s,
                _ => value,
            };
            m.properties.push((name.to_string(), value));
        }
        vec![m]
    };
    shared.broker.send(topic, messages)?;
    Ok(reply(201, ""))
}

pub(super) async fn receive(
    shared: &Shared,
    topic: &str,
    sub: &str,
    queue: SubQueue,
    mode: ReceiveMode,
    query: &[(String, String)],
) -> Result<Reply, Fault> {
    let timeout =
        match query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("timeout"))
        {
            Some((_, v)) => Duration::from_secs(v.parse().map_err(|_| {
                Fault::bad(format_args!("timeout {v:?} is not a number of seconds"))
            })?),
            None => Duration::from_secs(60),
        };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notify = shared.broker.notifier(topic, sub)?;
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match shared.broker.receive(topic, sub, queue, mode)? {
            Receive::Message(m) => return Ok(message_reply(shared, topic, sub, queue, mode, &m)),
            Receive::Empty(wake) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(reply(204, ""));
                }
                let mut until = deadline;
                if let Some(w) = wake {
                    let d = w.duration_since(SystemTime::now()).unwrap_or_default()
                        + Duration::from_millis(1);
                    until = until.min(now + d);
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }
}

fn message_reply(
    shared: &Shared,
    topic: &str,
    sub: &str,
    queue: SubQueue,
    mode: ReceiveMode,
    m: &Message,
) -> Reply {
    let mut props = Map::new();
    props.insert("DeliveryCount".into(), m.delivery_count.into());
    props.insert("EnqueuedSequenceNumber".into(), 0.into());
    if let Some(t) = m.enqueued_time {
        props.insert("EnqueuedTimeUtc".into(), rfc1123(t).into());
    }
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            props.insert(k.into(), v.clone().into());
        }
    };
    set("Label", &m.label);
    set("MessageId", &m.message_id);
    set("CorrelationId", &m.correlation_id);
    set("To", &m.to);
    set("ReplyTo", &m.reply_to);
    set("SessionId", &m.session_id);
    set("ReplyToSessionId", &m.reply_to_session_id);
    set("PartitionKey", &m.partition_key);
    props.insert("SequenceNumber".into(), m.sequence_number.into());
    props.insert("State".into(), "Active".into());
    if let Some(ttl) = m.time_to_live {
        props.insert("TimeToLive".into(), ttl.as_secs_f64().into());
    }
    if let Some(at) = m.scheduled_enqueue_time {
        props.insert("ScheduledEnqueueTimeUtc".into(), rfc1123(at).into());
    }
    let mut location = None;
    if let (ReceiveMode::PeekLock, Some(lock)) = (mode, m.lock) {
        props.insert("LockToken".into(), lock.token.to_string().into());
        props.insert("LockedUntilUtc".into(), rfc1123(lock.until).into());
        let q = if queue == SubQueue::DeadLetter {
            "/$DeadLetterQueue"
        } else {
            ""
        };
        location = Some(format!(
            "{}/{topic}/subscriptions/{sub}{q}/messages/{}/{}",
            shared.base(),
            m.sequence_number,
            lock.token
        ));
    }
    let status = if mode == ReceiveMode::PeekLock {
        201
    } else {
        200
    };
    let mut r = reply(status, m.body.clone());
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&Value::Object(props).to_string()) {
        h.insert("brokerproperties", v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert("location", loc);
    }
    let ct = m
        .content_type
        .as_deref()
        .unwrap_or("application/atom+xml;type=entry;charset=utf-8");
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert("content-type", v);
    }
    for (k, v) in &m.properties {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&ascii_json_string(v)),
        ) {
            (Ok(name), Ok(value)) if !is_protocol_header(name.as_str()) && name != "location" => {
                h.append(name, value);
            }
            _ => {
                tracing::debug!(property = %k, "custom property cannot be an HTTP header; left out")
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_parse() {
        assert_eq!(parse_timespan("0.00:00:40"), Some(Duration::from_secs(40)));
        assert_eq!(parse_timespan("01:02:03"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_timespan("x"), None);
    }
}
