//! Spans by the OpenTelemetry messaging semantic conventions, made through `tracing` in
//! one place for every transport: a PRODUCER span `send {topic}` around each publish and a
//! CONSUMER span `process {topic}` around each run of a handler.
//!
//! `tracing` spans cost a callsite check when nothing listens: their fields are computed
//! only for an enabled span. With the `opentelemetry` feature and a
//! `tracing_opentelemetry` layer installed, the spans become OpenTelemetry spans, the send
//! span's context travels in the envelope as W3C `traceparent`/`tracestate`, and the
//! process span continues the trace of the envelope it handles.

pub(crate) mod metrics;
mod propagation;

use std::time::Duration;

use tracing::field::Empty;
use tracing::Span;
use uuid::Uuid;

use crate::envelope::Envelope;

/// Whether a `tracing` subscriber was ever installed (globally or for a scope). Until
/// one is, the spans are not made at all: with `tracing`'s `log` feature on (sqlx turns
/// it on) a disabled span still has its fields built and offered to `log`, which cost a
/// few hundred instructions an event for span lines no one reads.
fn listening() -> bool {
    tracing::dispatcher::has_been_set()
}

/// The PRODUCER span of one publish of `envelopes` to `topic` (one span for a batch, with
/// `messaging.batch.message_count`).
pub(crate) fn send_span(system: &str, service: &str, topic: &str, envelopes: &[Envelope]) -> Span {
    if !listening() {
        return Span::none();
    }
    let first = envelopes.first();
    let span = tracing::info_span!(
        "send",
        otel.name = named("send ", topic).as_str(),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = Empty,
        messaging.message.id = Empty,
        messaging.message.conversation_id = Empty,
        messaging.message.body.size = Empty,
        error.type = Empty,
        tidings.service = service,
        tidings.wire_name = Empty,
        tidings.version = Empty,
    );
    if span.is_disabled() {
        // No callsite metadata: entering, recording and dropping it then cost nothing
        // (a disabled span still looks its fields up by name and offers them to `log`).
        return Span::none();
    }
    match (envelopes.len(), first) {
        (1, Some(env)) => {
            let mut buf = Uuid::encode_buffer();
            span.record("messaging.message.id", text(&env.id, &mut buf));
            if let Some(id) = env.correlation_id {
                span.record("messaging.message.conversation_id", text(&id, &mut buf));
            }
            span.record("messaging.message.body.size", int(env.payload.len()));
            span.record("tidings.wire_name", &*env.event_type);
            span.record("tidings.version", i64::from(env.version));
        }
        (n, _) => {
            span.record("messaging.batch.message_count", int(n));
        }
    }
    span
}

/// A span name, `{operation} {destination}`, without the formatting machinery (a
/// formatted field costs the bridge about 1,500 instructions).
fn named(operation: &str, destination: &str) -> String {
    let mut name = String::with_capacity(operation.len() + destination.len());
    name.push_str(operation);
    name.push_str(destination);
    name
}

/// A count as the `i64` a span records. `tracing_opentelemetry` exports only `i64`
/// fields as integer attributes: an unsigned one becomes text, formatted per span.
fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// `id` as text, without the formatting machinery of `Display` (a `str` field is handed
/// to the layers as it is).
fn text<'b>(id: &Uuid, buf: &'b mut [u8; 45]) -> &'b str {
    id.hyphenated().encode_lower(buf)
}

/// Stamp the trace context of `span` (the send span) into envelopes built for this
/// publish, so their consumers continue the trace; envelopes that carry a context already
/// (captured when the outbox stored them) keep theirs and are linked to the span. A
/// publish outside any span whose envelope was given a context
/// (`PublishOptions::traceparent`) makes the send span a child of it.
pub(crate) fn inject(span: &Span, envelopes: &mut [Envelope], fresh: bool) {
    propagation::inject(span, envelopes, fresh);
}

/// Capture the current span's trace context into `env` (what the outbox stores with a
/// row, so the relay's publish continues the trace of the request that enqueued it).
pub(crate) fn capture_current(env: &mut Envelope) {
    propagation::capture_current(env);
}

/// The facts of one delivery a process span carries.
pub(crate) struct Processing<'a> {
    pub(crate) system: &'a str,
    pub(crate) service: &'a str,
    pub(crate) subscription: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) envelope: &'a Envelope,
    pub(crate) attempt: u32,
    pub(crate) partition: Option<i32>,
}

/// The CONSUMER span of one handler run (or of a delivery dead-lettered without one),
/// whose parent is the producer's context carried by the envelope.
pub(crate) fn process_span(p: &Processing<'_>) -> Span {
    if !listening() {
        return Span::none();
    }
    let topic = p.topic;
    let env = p.envelope;
    let span = tracing::info_span!(
        "process",
        otel.name = named("process ", topic).as_str(),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = p.system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = p.subscription,
        messaging.destination.subscription.name = p.subscription,
        messaging.message.id = text(&env.id, &mut Uuid::encode_buffer()),
        messaging.message.conversation_id = Empty,
        messaging.message.body.size = int(env.payload.len()),
        messaging.destination.partition.id = Empty,
        error.type = Empty,
        tidings.service = p.service,
        tidings.wire_name = &*env.event_type,
        tidings.version = i64::from(env.version),
        tidings.attempt = i64::from(p.attempt),
        tidings.outcome = Empty,
        tidings.retry_delay_ms = Empty,
        tidings.dead_letter.reason = Empty,
    );
    if span.is_disabled() {
        // No callsite metadata: entering, recording and dropping it then cost nothing
        // (a disabled span still looks its fields up by name and offers them to `log`).
        return Span::none();
    }
    if let Some(id) = env.correlation_id {
        let mut buf = Uuid::encode_buffer();
        span.record("messaging.message.conversation_id", text(&id, &mut buf));
    }
    if let Some(partition) = p.partition {
        span.record("messaging.destination.partition.id", partition);
    }
    propagation::set_parent(&span, env);
    span
}

/// Record on a span that what it covers failed, with the low-cardinality `error.type`
/// (an [`ErrorKind`](crate::ErrorKind) name, or `handler` for a handler's own error).
pub(crate) fn record_failure(span: &Span, error_type: &'static str) {
    if span.is_none() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// How a delivery was settled, recorded on the span of its last handler run.
pub(crate) enum Settled<'a> {
    Ack,
    Retry(Duration),
    /// Put back until its scheduled time, this long from now; no handler ran.
    Defer(Duration),
    DeadLetter(&'a str),
}

/// Record the settlement on `span` and log it there as an event.
pub(crate) fn record_settled(span: &Span, settled: Settled<'_>) {
    if span.is_none() {
        return;
    }
    match settled {
        Settled::Ack => {
            span.record("tidings.outcome", "ack");
        }
        Settled::Retry(delay) => {
            span.record("tidings.outcome", "retry");
            span.record("tidings.retry_delay_ms", int(delay.as_millis()));
        }
        Settled::Defer(wait) => {
            span.record("tidings.outcome", "defer");
            // Rounded up: a delivery put back with less than a millisecond to wait does
            // not read as no wait at all.
            span.record(
                "tidings.retry_delay_ms",
                int(wait.as_nanos().div_ceil(1_000_000)),
            );
        }
        Settled::DeadLetter(reason) => {
            span.record("tidings.outcome", "dead_letter");
            span.record("tidings.dead_letter.reason", reason);
            span.record("otel.status_code", "ERROR");
        }
    }
}
