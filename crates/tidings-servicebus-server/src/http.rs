//! The HTTP side: routing of the runtime and management REST operations, SAS checks,
//! message headers in and out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::atom;
use crate::broker::{Broker, Fault, Message, Receive, ReceiveMode, SubQueue, SubscriptionSettings};
use crate::filter::Filter;
use crate::sas::{self, Claim, SasPolicy};
use crate::util::{ascii_json_string, parse_duration, parse_rfc1123, rfc1123};

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) namespace: String,
    pub(crate) policies: Vec<SasPolicy>,
    pub(crate) broker: Broker,
}

impl Shared {
    fn host(&self) -> String {
        format!(
            "{}.servicebus.windows.net",
            self.namespace.to_ascii_lowercase()
        )
    }
    fn base(&self) -> String {
        format!("https://{}", self.host())
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

fn fault(f: Fault) -> Reply {
    let body = format!(
        "<Error><Code>{}</Code><Detail>{}</Detail></Error>",
        f.0,
        crate::util::xml_escape(&f.1)
    );
    let mut r = reply(f.0, body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

fn xml(status: u16, body: String) -> Reply {
    let mut r = reply(status, atom::document(&body));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/atom+xml;type=entry;charset=utf-8"),
    );
    r
}

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

/// Route one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(fault(Fault::bad(format_args!(
                "could not read the request body: {e}"
            ))))
        }
    };
    let segments: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let route = Route::parse(&segments);
    let claim = route.claim(&parts.method);
    let resource = format!(
        "{}/{}{}",
        shared.host(),
        segments.join("/").to_ascii_lowercase(),
        parts
            .uri
            .query()
            .map(|q| format!("?{}", q.to_ascii_lowercase()))
            .unwrap_or_default()
    );
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = sas::authorize(auth, &resource, claim, &shared.policies) {
        tracing::debug!(%resource, reason = %refusal.0, "refused");
        return Ok(fault(Fault(401, refusal.0)));
    }
    let result = match route {
        Route::Send { topic } if parts.method == Method::POST => {
            send(&shared, &topic, &parts.headers, body)
        }
        Route::Head { topic, sub, queue } if parts.method == Method::POST => {
            receive(&shared, &topic, &sub, queue, ReceiveMode::PeekLock, &query).await
        }
        Route::Head { topic, sub, queue } if parts.method == Method::DELETE => {
            receive(
                &shared,
                &topic,
                &sub,
                queue,
                ReceiveMode::ReceiveAndDelete,
                &query,
            )
            .await
        }
        Route::Locked {
            topic,
            sub,
            queue,
            id,
            token,
        } => match parts.method {
            Method::DELETE => shared
                .broker
                .complete(&topic, &sub, queue, &id, &token)
                .map(|_| reply(200, "")),
            Method::PUT => shared
                .broker
                .unlock(&topic, &sub, queue, &id, &token)
                .map(|_| reply(200, "")),
            Method::POST => shared
                .broker
                .renew(&topic, &sub, queue, &id, &token)
                .map(|until| {
                    let mut r = reply(200, "");
                    let props = serde_json::json!({ "LockedUntilUtc": rfc1123(until) }).to_string();
                    if let Ok(v) = HeaderValue::from_str(&props) {
                        r.headers_mut().insert("brokerproperties", v);
                    }
                    r
                }),
            _ => Err(Fault(405, "method not allowed on a locked message".into())),
        },
        Route::Topic { topic } => {
            manage_topic(&shared, &parts.method, &parts.headers, &topic, &body)
        }
        Route::Subscriptions { topic } if parts.method == Method::GET => {
            list_subscriptions(&shared, &topic)
        }
        Route::Subscription { topic, sub } => {
            manage_subscription(&shared, &parts.method, &parts.headers, &topic, &sub, &body)
        }
        Route::Rules { topic, sub } if parts.method == Method::GET => {
            list_rules(&shared, &topic, &sub)
        }
        Route::Rule { topic, sub, rule } => manage_rule(
            &shared,
            &parts.method,
            &parts.headers,
            &topic,
            &sub,
            &rule,
            &body,
        ),
        _ => Err(Fault(
            404,
            format!(
                "no such operation: {} /{}",
                parts.method,
                segments.join("/")
            ),
        )),
    };
    Ok(result.unwrap_or_else(fault))
}

/// The operations, by path.
#[derive(Debug)]
enum Route {
    Send {
        topic: String,
    },
    Head {
        topic: String,
        sub: String,
        queue: SubQueue,
    },
    Locked {
        topic: String,
        sub: String,
        queue: SubQueue,
        id: String,
        token: String,
    },
    Topic {
        topic: String,
    },
    Subscriptions {
        topic: String,
    },
    Subscription {
        topic: String,
        sub: String,
    },
    Rules {
        topic: String,
        sub: String,
    },
    Rule {
        topic: String,
        sub: String,
        rule: String,
    },
    Unknown,
}

impl Route {
    fn parse(s: &[String]) -> Route {
        let s: Vec<&str> = s.iter().map(String::as_str).collect();
        let dlq = |q: &str| q.eq_ignore_ascii_case("$DeadLetterQueue");
        match s.as_slice() {
            [t, "messages"] => Route::Send {
                topic: t.to_string(),
            },
            [t, "subscriptions", sub, "messages", "head"] => Route::Head {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::Active,
            },
            [t, "subscriptions", sub, q, "messages", "head"] if dlq(q) => Route::Head {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::DeadLetter,
            },
            [t, "subscriptions", sub, "messages", id, token] => Route::Locked {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::Active,
                id: id.to_string(),
                token: token.to_string(),
            },
            [t, "subscriptions", sub, q, "messages", id, token] if dlq(q) => Route::Locked {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::DeadLetter,
                id: id.to_string(),
                token: token.to_string(),
            },
            [t] => Route::Topic {
                topic: t.to_string(),
            },
            [t, "subscriptions"] => Route::Subscriptions {
                topic: t.to_string(),
            },
            [t, "subscriptions", sub] => Route::Subscription {
                topic: t.to_string(),
                sub: sub.to_string(),
            },
            [t, "subscriptions", sub, "rules"] => Route::Rules {
                topic: t.to_string(),
                sub: sub.to_string(),
            },
            [t, "subscriptions", sub, "rules", rule] => Route::Rule {
                topic: t.to_string(),
                sub: sub.to_string(),
                rule: rule.to_string(),
            },
            _ => Route::Unknown,
        }
    }

    fn claim(&self, method: &Method) -> Claim {
        match self {
            Route::Send { .. } if method == Method::POST => Claim::Send,
            Route::Head { .. } | Route::Locked { .. } => Claim::Listen,
            _ => Claim::Manage,
        }
    }
}

// ---- runtime ----

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

fn send(
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

async fn receive(
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

// ---- management ----

fn updating(headers: &hyper::HeaderMap) -> bool {
    headers.get("if-match").is_some()
}

fn body_root(body: &Bytes) -> Result<Option<atom::Element>, Fault> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| Fault::bad("the entity description is not UTF-8"))?;
    atom::parse(text).map(Some).map_err(Fault::bad)
}

fn empty_feed(shared: &Shared, path: &str) -> Reply {
    xml(
        200,
        atom::feed(&shared.base(), path, "Publicly Listed Services", &[]),
    )
}

fn manage_topic(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            Ok(match topics.get(&topic.to_ascii_lowercase()) {
                Some(t) => xml(200, atom::topic_entry(&shared.base(), t)),
                // Service Bus answers a GET of a missing entity with an empty feed.
                None => empty_feed(shared, topic),
            })
        }
        Method::PUT => {
            let root = body_root(body)?;
            let desc = root.as_ref().and_then(|r| r.find("TopicDescription"));
            let ttl = desc
                .and_then(|d| d.text_of("DefaultMessageTimeToLive"))
                .map(|s| {
                    parse_duration(s).ok_or_else(|| {
                        Fault::bad(format_args!("DefaultMessageTimeToLive {s:?} is malformed"))
                    })
                })
                .transpose()?;
            let max = desc
                .and_then(|d| d.text_of("MaxSizeInMegabytes"))
                .map(|s| {
                    s.parse().map_err(|_| {
                        Fault::bad(format_args!("MaxSizeInMegabytes {s:?} is not a number"))
                    })
                })
                .transpose()?;
            let status = if updating(headers) {
                shared.broker.update_topic(topic, ttl, max)?;
                200
            } else {
                shared.broker.create_topic(topic, ttl, max)?;
                201
            };
            let topics = shared.broker.lock();
            let t = topics
                .get(&topic.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "topic vanished".into()))?;
            Ok(xml(status, atom::topic_entry(&shared.base(), t)))
        }
        Method::DELETE => shared.broker.delete_topic(topic).map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a topic".into())),
    }
}

fn list_subscriptions(shared: &Shared, topic: &str) -> Result<Reply, Fault> {
    let topics = shared.broker.lock();
    let t = topics.get(&topic.to_ascii_lowercase()).ok_or_else(|| {
        Fault(
            404,
            format!("MessagingEntityNotFound: topic {topic} does not exist"),
        )
    })?;
    let entries: Vec<String> = t
        .subscriptions
        .values()
        .map(|s| atom::subscription_entry(&shared.base(), &t.name, s))
        .collect();
    Ok(xml(
        200,
        atom::feed(
            &shared.base(),
            &format!("{topic}/subscriptions"),
            "Subscriptions",
            &entries,
        ),
    ))
}

fn subscription_settings(
    shared: &Shared,
    root: Option<&atom::Element>,
) -> Result<(SubscriptionSettings, Option<Filter>), Fault> {
    let mut s = shared.broker.default_settings();
    let Some(desc) = root.and_then(|r| r.find("SubscriptionDescription")) else {
        return Ok((s, None));
    };
    let dur = |name: &str| -> Result<Option<Duration>, Fault> {
        desc.text_of(name)
            .map(|v| {
                parse_duration(v).ok_or_else(|| {
                    Fault::bad(format_args!("{name} {v:?} is not an ISO 8601 duration"))
                })
            })
            .transpose()
    };
    let flag = |name: &str| desc.text_of(name).map(|v| v.eq_ignore_ascii_case("true"));
    if let Some(d) = dur("LockDuration")? {
        if d.is_zero() {
            return Err(Fault::bad("LockDuration must be positive"));
        }
        s.lock_duration = d;
    }
    if let Some(d) = dur("DefaultMessageTimeToLive")? {
        s.default_ttl = d;
    }
    if let Some(v) = desc.text_of("MaxDeliveryCount") {
        s.max_delivery_count = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Fault::bad(format_args!(
                "MaxDeliveryCount {v:?} must be a positive number"
            ))
        })?;
    }
    if let Some(v) = flag("DeadLetteringOnMessageExpiration") {
        s.dead_lettering_on_message_expiration = v;
    }
    if let Some(v) = flag("DeadLetteringOnFilterEvaluationExceptions") {
        s.dead_lettering_on_filter_evaluation_exceptions = v;
    }
    if flag("RequiresSession") == Some(true) {
        return Err(Fault::bad(
            "sessions are not supported by this development server",
        ));
    }
    let default_rule = match desc
        .child("DefaultRuleDescription")
        .and_then(|r| r.child("Filter"))
    {
        Some(f) => Some(atom::parse_filter(f).map_err(Fault::bad)?),
        None => None,
    };
    Ok((s, default_rule))
}

fn manage_subscription(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    sub: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            let t = topics.get(&topic.to_ascii_lowercase());
            Ok(
                match t.and_then(|t| {
                    t.subscriptions
                        .get(&sub.to_ascii_lowercase())
                        .map(|s| (t, s))
                }) {
                    Some((t, s)) => xml(200, atom::subscription_entry(&shared.base(), &t.name, s)),
                    None => empty_feed(shared, &format!("{topic}/subscriptions/{sub}")),
                },
            )
        }
        Method::PUT => {
            let root = body_root(body)?;
            let (settings, default_rule) = subscription_settings(shared, root.as_ref())?;
            let status = if updating(headers) {
                shared.broker.update_subscription(topic, sub, settings)?;
                200
            } else {
                shared
                    .broker
                    .create_subscription(topic, sub, settings, default_rule)?;
                201
            };
            let topics = shared.broker.lock();
            let t = topics
                .get(&topic.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "topic vanished".into()))?;
            let s = t
                .subscriptions
                .get(&sub.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "subscription vanished".into()))?;
            Ok(xml(
                status,
                atom::subscription_entry(&shared.base(), &t.name, s),
            ))
        }
        Method::DELETE => shared
            .broker
            .delete_subscription(topic, sub)
            .map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a subscription".into())),
    }
}

fn list_rules(shared: &Shared, topic: &str, sub: &str) -> Result<Reply, Fault> {
    let topics = shared.broker.lock();
    let s = topics
        .get(&topic.to_ascii_lowercase())
        .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
        .ok_or_else(|| {
            Fault(
                404,
                format!("MessagingEntityNotFound: subscription {topic}/{sub} does not exist"),
            )
        })?;
    let entries: Vec<String> = s
        .rules
        .values()
        .map(|r| atom::rule_entry(&shared.base(), topic, sub, r))
        .collect();
    Ok(xml(
        200,
        atom::feed(
            &shared.base(),
            &format!("{topic}/subscriptions/{sub}/rules"),
            "Rules",
            &entries,
        ),
    ))
}

#[allow(clippy::too_many_arguments)]
fn manage_rule(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    sub: &str,
    rule: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            let r = topics
                .get(&topic.to_ascii_lowercase())
                .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
                .and_then(|s| s.rules.get(&rule.to_ascii_lowercase()));
            Ok(match r {
                Some(r) => xml(200, atom::rule_entry(&shared.base(), topic, sub, r)),
                None => empty_feed(shared, &format!("{topic}/subscriptions/{sub}/rules/{rule}")),
            })
        }
        Method::PUT => {
            let root =
                body_root(body)?.ok_or_else(|| Fault::bad("a rule needs a RuleDescription"))?;
            let desc = root
                .find("RuleDescription")
                .ok_or_else(|| Fault::bad("a rule needs a RuleDescription"))?;
            if let Some(action) = desc.child("Action") {
                let kind = action.attr("type").unwrap_or("EmptyRuleAction");
                if !kind.ends_with("EmptyRuleAction") {
                    return Err(Fault::bad(format_args!(
                        "rule actions ({kind}) are not supported by this development server"
                    )));
                }
            }
            let filter = match desc.child("Filter") {
                Some(f) => atom::parse_filter(f).map_err(Fault::bad)?,
                None => Filter::True,
            };
            let created = shared
                .broker
                .put_rule(topic, sub, rule, filter, updating(headers))?;
            let topics = shared.broker.lock();
            let r = topics
                .get(&topic.to_ascii_lowercase())
                .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
                .and_then(|s| s.rules.get(&rule.to_ascii_lowercase()))
                .ok_or_else(|| Fault(500, "rule vanished".into()))?;
            Ok(xml(
                if created { 201 } else { 200 },
                atom::rule_entry(&shared.base(), topic, sub, r),
            ))
        }
        Method::DELETE => shared
            .broker
            .delete_rule(topic, sub, rule)
            .map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a rule".into())),
    }
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
