//! Trace cases (feature `opentelemetry`): the spans and metrics of the core, recorded by
//! the [`Telemetry`] kit, checked on every transport. Each case runs on a runtime whose
//! threads record into the kit ([`run_traced`](super::run_traced)), finds its spans by the
//! trace id of a root span of its own (or by envelope id) and its measurements by its
//! namespace's topic, so cases running beside it do not disturb it.

use std::collections::HashSet;

use tidings_core::{
    transport::attrs, Codec, Context, Envelope, Event, HandlerError, PublishOptions, ResultExt,
    Subscription,
};
use tracing::Instrument;
use uuid::Uuid;

use super::events::{ConfEvents, Ping, Pong};
use super::failure::{dead_letters_until, quick};
use super::support::{describe, Must, Probe, Scene, Seen, Tap};
use super::{RawMessage, TransportFactory};
use crate::telemetry::{
    describe_spans, span_id, SpanData, SpanDataExt, SpanId, SpanKind, Status, Telemetry, TraceId,
};

/// The `messaging.system` values the suite knows.
const SYSTEMS: &[&str] = &["memory", "rabbitmq", "kafka", "servicebus"];

/// The kit, failing the case if its subscriber does not record on this thread.
fn kit(case: &str) -> &'static Telemetry {
    let kit = Telemetry::get();
    let (probe, trace) = kit.root("kit check");
    drop(probe);
    assert_ne!(
        trace,
        TraceId::INVALID,
        "{case}: spans are not recorded here; run trace cases with conformance::run_traced"
    );
    kit
}

/// The spans of `trace` with `kind`.
fn of_kind(spans: &[SpanData], trace: TraceId, kind: SpanKind) -> Vec<SpanData> {
    spans
        .iter()
        .filter(|s| s.trace_id() == trace && s.span_kind == kind)
        .cloned()
        .collect()
}

/// The process spans of the envelope `id` (any trace), in the order they ended.
fn processing(spans: &[SpanData], id: Uuid) -> Vec<SpanData> {
    let id = id.to_string();
    spans
        .iter()
        .filter(|s| {
            s.span_kind == SpanKind::Consumer
                && s.string("messaging.message.id").as_deref() == Some(id.as_str())
        })
        .cloned()
        .collect()
}

/// Fail if `span` has attribute `key` other than `value`, or lacks it.
#[track_caller]
fn has(span: &SpanData, key: &str, value: impl ToString, what: &str) {
    let value = value.to_string();
    assert_eq!(
        span.string(key).as_deref(),
        Some(value.as_str()),
        "{what}: attribute `{key}`; {}",
        describe_spans(std::slice::from_ref(span))
    );
}

/// Fail unless `span` has attribute `key` as the integer `value` (an exporter sends it as
/// a number, not as text).
#[track_caller]
fn has_int(span: &SpanData, key: &str, value: i64, what: &str) {
    assert_eq!(
        span.attribute(key),
        Some(&opentelemetry::Value::I64(value)),
        "{what}: attribute `{key}` as an integer; {}",
        describe_spans(std::slice::from_ref(span))
    );
}

/// Fail if `span` has attribute `key`.
#[track_caller]
fn lacks(span: &SpanData, key: &str, what: &str) {
    assert_eq!(
        span.string(key),
        None,
        "{what}: attribute `{key}` should not be set; {}",
        describe_spans(std::slice::from_ref(span))
    );
}

/// Fail if any attribute of `span` was recorded twice (an exporter would send both).
#[track_caller]
fn once_each(span: &SpanData, what: &str) {
    let repeated = span.repeated_attributes();
    assert!(
        repeated.is_empty(),
        "{what}: attributes recorded more than once: {repeated:?}; {}",
        describe_spans(std::slice::from_ref(span))
    );
}

/// What every send span of the case carries.
#[track_caller]
fn check_send(span: &SpanData, system: &str, topic: &str, service: &str, what: &str) {
    assert_eq!(span.span_kind, SpanKind::Producer, "{what}: span kind");
    assert_eq!(span.name, format!("send {topic}"), "{what}: span name");
    has(span, "messaging.system", system, what);
    has(span, "messaging.destination.name", topic, what);
    has(span, "messaging.operation.type", "send", what);
    has(span, "messaging.operation.name", "send", what);
    has(span, "tidings.service", service, what);
    lacks(span, "error.type", what);
    once_each(span, what);
}

/// What every process span of the case carries.
#[track_caller]
fn check_process(span: &SpanData, scene: &Scene<'_>, system: &str, service: &str, what: &str) {
    let topic = scene.topic();
    let subscription = scene.subscription(service);
    assert_eq!(span.span_kind, SpanKind::Consumer, "{what}: span kind");
    assert_eq!(span.name, format!("process {topic}"), "{what}: span name");
    has(span, "messaging.system", system, what);
    has(span, "messaging.destination.name", &topic, what);
    has(span, "messaging.operation.type", "process", what);
    has(span, "messaging.operation.name", "process", what);
    has(span, "messaging.consumer.group.name", &subscription, what);
    has(
        span,
        "messaging.destination.subscription.name",
        &subscription,
        what,
    );
    has(span, "tidings.service", service, what);
    if system == "kafka" {
        let partition = span.int("messaging.destination.partition.id");
        assert!(
            partition.is_some_and(|p| p >= 0),
            "{what}: a Kafka delivery's span names its partition, not {partition:?}"
        );
    } else {
        lacks(span, "messaging.destination.partition.id", what);
    }
    once_each(span, what);
}

/// The transport's `messaging.system`, checked to be one the suite knows.
async fn system(scene: &Scene<'_>) -> &'static str {
    let system = scene.capabilities().await.system;
    assert!(
        SYSTEMS.contains(&system),
        "{}: Capabilities::system of {} is {system:?}, not one of {SYSTEMS:?}",
        scene.case,
        scene.factory.name()
    );
    system
}

/// The W3C `traceparent` of a sampled span.
fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{trace}-{span}-01")
}

mod failures;
mod flow;
mod metrics;
mod scheduled;

pub use failures::{trace_malformed_context, trace_retries_and_dead_letters};
pub use flow::{trace_continues_through_handler, trace_publish_to_process};
pub use metrics::{trace_in_flight, trace_metrics, trace_metrics_competing};
pub use scheduled::trace_scheduled_deferral;
