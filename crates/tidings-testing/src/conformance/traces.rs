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

/// A publish in service `alpha` inside a request's root span and its handling in service
/// `beta` form one trace: one PRODUCER span `send {topic}` per publish (a child of the
/// request; a batch of two is one span with `messaging.batch.message_count` 2), and per
/// event one CONSUMER span `process {topic}` whose parent is the send span that published
/// it. The spans carry `messaging.system` (the transport's `Capabilities::system`), the
/// destination, operation, consumer group / subscription, partition (Kafka only), message
/// id (the envelope id), conversation id (the correlation id, when one is set), body size,
/// and tidings' service, wire name, version, attempt 1 and outcome `ack`; no attribute
/// twice, no error. The envelope the handler gets carries the send span's `traceparent`.
/// A publish outside any span given a `traceparent` (`PublishOptions::traceparent`)
/// continues that trace: its send span is a child of the context handed over.
pub async fn trace_publish_to_process(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_publish_to_process");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let topic = scene.topic();

    let (request, trace) = kit.root("request");
    let request_id = span_id(&request);
    let correlation = Uuid::new_v4();
    let (single, batch) = async {
        let single = alpha
            .publish_with(
                Ping::keyed(1, "trace"),
                PublishOptions::new().correlation_id(correlation),
            )
            .await
            .must("publishing ping 1");
        let batch = alpha
            .publish_batch([Ping::unkeyed(2), Ping::unkeyed(3)])
            .await
            .must("publishing pings 2 and 3 as a batch");
        (single, batch)
    }
    .instrument(request)
    .await;
    let seen = probe.wait_for_ns("beta", 1..=3, scene.patience()).await;
    kit.wait_for_trace(
        trace,
        scene.patience(),
        "2 send and 3 process spans in the request's trace",
        |spans| {
            (of_kind(spans, trace, SpanKind::Producer).len() >= 2
                && of_kind(spans, trace, SpanKind::Consumer).len() >= 3)
                .then_some(())
        },
    )
    .await;
    scene.quiet().await;
    let spans = kit.trace(trace);
    let sends = of_kind(&spans, trace, SpanKind::Producer);
    let processes = of_kind(&spans, trace, SpanKind::Consumer);
    assert_eq!(
        (sends.len(), processes.len()),
        (2, 3),
        "one send span per publish and one process span per event expected in the trace; {}",
        describe_spans(
            &spans
                .iter()
                .filter(|s| s.trace_id() == trace)
                .cloned()
                .collect::<Vec<_>>()
        )
    );

    let single_send = sends
        .iter()
        .find(|s| s.string("messaging.batch.message_count").is_none())
        .unwrap_or_else(|| {
            panic!(
                "no send span of the single publish; {}",
                describe_spans(&sends)
            )
        });
    let batch_send = sends
        .iter()
        .find(|s| s.string("messaging.batch.message_count").is_some())
        .unwrap_or_else(|| panic!("no send span of the batch; {}", describe_spans(&sends)));
    for (send, what) in [
        (single_send, "the send span of ping 1"),
        (batch_send, "the send span of the batch"),
    ] {
        check_send(send, system, &topic, "alpha", what);
        assert_eq!(
            send.parent_span_id, request_id,
            "{what} should be a child of the request span"
        );
    }
    let envelope_of = |n: u64| {
        &seen
            .iter()
            .find(|s| s.n == n)
            .expect("waited for it")
            .envelope
    };
    let ping1 = envelope_of(1);
    has(
        single_send,
        "messaging.message.id",
        single,
        "the send span of ping 1",
    );
    has(
        single_send,
        "messaging.message.conversation_id",
        correlation,
        "the send span of ping 1",
    );
    has(
        single_send,
        "messaging.message.body.size",
        ping1.payload.len(),
        "the send span of ping 1",
    );
    has(
        single_send,
        "tidings.wire_name",
        Ping::NAME,
        "the send span of ping 1",
    );
    has(
        single_send,
        "tidings.version",
        Ping::VERSION,
        "the send span of ping 1",
    );
    has(
        batch_send,
        "messaging.batch.message_count",
        2,
        "the send span of the batch",
    );
    lacks(
        batch_send,
        "messaging.message.id",
        "the send span of the batch",
    );

    for (n, id, send) in [
        (1, single, single_send),
        (2, batch[0], batch_send),
        (3, batch[1], batch_send),
    ] {
        let what = format!("the process span of ping {n}");
        let env = envelope_of(n);
        let matching = processing(&processes, id);
        assert_eq!(
            matching.len(),
            1,
            "{what}: one process span expected; {}",
            describe_spans(&processes)
        );
        let process = &matching[0];
        check_process(process, &scene, system, "beta", &what);
        assert_eq!(
            process.parent_span_id,
            send.span_id(),
            "{what} should be a child of the send span that published it"
        );
        assert!(
            process.parent_span_is_remote,
            "{what}: the parent is remote"
        );
        has(process, "messaging.message.id", id, &what);
        has(
            process,
            "messaging.message.body.size",
            env.payload.len(),
            &what,
        );
        has(process, "tidings.wire_name", Ping::NAME, &what);
        has(process, "tidings.version", Ping::VERSION, &what);
        has(process, "tidings.attempt", 1, &what);
        has(process, "tidings.outcome", "ack", &what);
        lacks(process, "error.type", &what);
        assert!(
            !matches!(process.status, Status::Error { .. }),
            "{what}: a handled event is no error: {:?}",
            process.status
        );
        if n == 1 {
            has(
                process,
                "messaging.message.conversation_id",
                correlation,
                &what,
            );
        } else {
            lacks(process, "messaging.message.conversation_id", &what);
        }
        assert_eq!(
            env.traceparent.as_deref(),
            Some(traceparent(trace, send.span_id()).as_str()),
            "ping {n}: the envelope should carry the send span's context"
        );
    }

    // Outside any span, with a context handed over: the publish continues that trace.
    let (given_trace, given_span) = random_context();
    let handed = alpha
        .publish_with(
            Ping::unkeyed(4),
            PublishOptions::new().traceparent(traceparent(given_trace, given_span)),
        )
        .await
        .must("publishing ping 4 with a traceparent");
    let spans = kit
        .wait_for_trace(
            given_trace,
            scene.patience(),
            "ping 4's send and process spans in the trace it was handed",
            |spans| {
                (of_kind(spans, given_trace, SpanKind::Producer).len() == 1
                    && of_kind(spans, given_trace, SpanKind::Consumer).len() == 1)
                    .then(|| spans.to_vec())
            },
        )
        .await;
    let send = &of_kind(&spans, given_trace, SpanKind::Producer)[0];
    let process = &of_kind(&spans, given_trace, SpanKind::Consumer)[0];
    assert_eq!(
        send.parent_span_id, given_span,
        "ping 4: the send span continues the context handed to publish_with"
    );
    has(
        process,
        "messaging.message.id",
        handed,
        "the process span of ping 4",
    );
    assert_eq!(
        process.parent_span_id,
        send.span_id(),
        "ping 4: the process span is a child of its send span"
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// A fresh trace id and span id, as another system would hand over.
fn random_context() -> (TraceId, SpanId) {
    let trace = TraceId::from(u128::from_be_bytes(*Uuid::new_v4().as_bytes()));
    let span = SpanId::from(u64::from_be_bytes(
        Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"),
    ));
    (trace, span)
}

/// A handler that publishes continues the trace: ping → `beta` answers with a pong from
/// its handler (`cx.publish`) → `gamma` handles the pong, all in the request's trace, each
/// span the child of the one before (alpha's send → beta's process → beta's send → gamma's
/// process). Two requests handled by the same consumers stay two traces. (Where the broker
/// also delivers the events a service has no handler for, their skips are `ack` spans in
/// the trace too.)
pub async fn trace_continues_through_handler(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_continues_through_handler");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let topic = scene.topic();
    let probe = Probe::new();
    let beta = scene
        .build(
            scene.builder("beta").publishes::<ConfEvents>().subscribe(
                Subscription::to::<ConfEvents>().on(|e: Ping, cx: Context| async move {
                    cx.publish(Pong { n: e.n }).await?;
                    Ok::<(), HandlerError>(())
                }),
            ),
            "`beta`, answering pings with pongs",
        )
        .await;
    let gamma = scene
        .build(
            scene.builder("gamma").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_state(Tap::new(&probe, "gamma"))
                    .on(super::support::tap_pong),
            ),
            "`gamma`, recording pongs",
        )
        .await;
    let alpha = scene.publisher().await;

    let mut requests = Vec::new();
    for n in [1u64, 2] {
        let (request, trace) = kit.root("request");
        let request_id = span_id(&request);
        let id = alpha
            .publish(Ping::unkeyed(n))
            .instrument(request)
            .await
            .must("publishing a ping");
        requests.push((n, id, trace, request_id));
    }
    let seen = probe.wait_for_ns("gamma", [1, 2], scene.patience()).await;
    for (n, _, trace, _) in &requests {
        kit.wait_for_trace(
            *trace,
            scene.patience(),
            &format!("request {n}: 2 send and 2 process spans in its trace"),
            |spans| {
                (of_kind(spans, *trace, SpanKind::Producer).len() >= 2
                    && of_kind(spans, *trace, SpanKind::Consumer).len() >= 2)
                    .then_some(())
            },
        )
        .await;
    }
    scene.quiet().await;
    let spans = kit.spans();
    for (n, ping_id, trace, request_id) in requests {
        let what = format!("request {n}");
        let in_trace: Vec<SpanData> = spans
            .iter()
            .filter(|s| s.trace_id() == trace)
            .cloned()
            .collect();
        let sends = of_kind(&spans, trace, SpanKind::Producer);
        // Brokers that do not route by wire name (Kafka) also deliver the ping to gamma
        // and the pong to beta, which skip them: those spans say `ack` and nothing more.
        let (processes, skipped): (Vec<SpanData>, Vec<SpanData>) =
            of_kind(&spans, trace, SpanKind::Consumer)
                .into_iter()
                .partition(|s| {
                    matches!(
                        (
                            s.string("tidings.service").as_deref(),
                            s.string("tidings.wire_name").as_deref()
                        ),
                        (Some("beta"), Some(Ping::NAME)) | (Some("gamma"), Some(Pong::NAME))
                    )
                });
        assert_eq!(
            (sends.len(), processes.len()),
            (2, 2),
            "{what}: alpha's and beta's send spans and beta's and gamma's process spans, nothing else; {}",
            describe_spans(&in_trace)
        );
        for span in &skipped {
            let skipped_event = matches!(
                (
                    span.string("tidings.service").as_deref(),
                    span.string("tidings.wire_name").as_deref()
                ),
                (Some("beta"), Some(Pong::NAME)) | (Some("gamma"), Some(Ping::NAME))
            );
            assert!(
                skipped_event && span.string("tidings.outcome").as_deref() == Some("ack"),
                "{what}: a process span of neither beta's ping nor gamma's pong, nor a skip; {}",
                describe_spans(&in_trace)
            );
        }
        let by_service = |list: &[SpanData], service: &str| {
            list.iter()
                .find(|s| s.string("tidings.service").as_deref() == Some(service))
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: no span of `{service}`; {}",
                        describe_spans(&in_trace)
                    )
                })
        };
        let alpha_send = by_service(&sends, "alpha");
        let beta_process = by_service(&processes, "beta");
        let beta_send = by_service(&sends, "beta");
        let gamma_process = by_service(&processes, "gamma");
        check_send(
            &alpha_send,
            system,
            &topic,
            "alpha",
            &format!("{what}: alpha's send"),
        );
        check_process(
            &beta_process,
            &scene,
            system,
            "beta",
            &format!("{what}: beta's process"),
        );
        check_send(
            &beta_send,
            system,
            &topic,
            "beta",
            &format!("{what}: beta's send"),
        );
        check_process(
            &gamma_process,
            &scene,
            system,
            "gamma",
            &format!("{what}: gamma's process"),
        );
        has(&beta_process, "messaging.message.id", ping_id, &what);
        has(&beta_send, "tidings.wire_name", Pong::NAME, &what);
        has(&gamma_process, "tidings.wire_name", Pong::NAME, &what);
        let chain = [
            ("alpha's send", &alpha_send, request_id),
            ("beta's process", &beta_process, alpha_send.span_id()),
            ("beta's send", &beta_send, beta_process.span_id()),
            ("gamma's process", &gamma_process, beta_send.span_id()),
        ];
        for (name, span, parent) in chain {
            assert_eq!(
                span.parent_span_id,
                parent,
                "{what}: {name} has the wrong parent; {}",
                describe_spans(&in_trace)
            );
        }
        let pong = &seen
            .iter()
            .find(|s| s.n == n)
            .expect("waited for it")
            .envelope;
        has(&gamma_process, "messaging.message.id", pong.id, &what);
        assert_eq!(
            pong.traceparent.as_deref(),
            Some(traceparent(trace, beta_send.span_id()).as_str()),
            "{what}: the pong should carry beta's send span's context"
        );
    }
    alpha.shutdown().await;
    beta.shutdown().await;
    gamma.shutdown().await;
}

/// One process span per handler run, each a child of the send span (a redelivered
/// envelope keeps its trace context on the broker), with attempt and outcome: a handler
/// failing on its first two runs (policy: 2 immediate runs, 1 redelivery) shows attempts
/// 1, 2, 3 with outcomes `retry`, `retry`, `ack` and `error.type` `handler` on the
/// failures, for an event the transport redelivers (no key) and one retried in place
/// (keyed); a permanent failure shows one span with outcome `dead_letter` and the reason;
/// a handler that always fails shows attempts 1 to 4, `retry` three times, then
/// `dead_letter` with the reason.
pub async fn trace_retries_and_dead_letters(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_retries_and_dead_letters");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let probe = Probe::new();
    let policy = quick(2, 1);
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(probe.clone())
                    .retry(policy)
                    .on(|e: Ping, cx: Context<Probe>| async move {
                        cx.state()
                            .record(Seen::of("run", Ping::NAME, e.n, &e.key, &cx));
                        match e.n {
                            1 | 2 if cx.attempt() <= 2 => Err(HandlerError::msg(format!(
                                "trace case fails attempt {}",
                                cx.attempt()
                            ))),
                            3 => {
                                "not a number".parse::<u64>().permanent()?;
                                Ok(())
                            }
                            4 => Err(HandlerError::msg("trace case always fails")),
                            _ => Ok(()),
                        }
                    }),
            ),
            "`beta` with failing handlers",
        )
        .await;
    let alpha = scene.publisher().await;
    let (request, trace) = kit.root("request");
    let ids = async {
        let mut ids = Vec::new();
        for ping in [
            Ping::unkeyed(1),
            Ping::keyed(2, "flaky"),
            Ping::unkeyed(3),
            Ping::unkeyed(4),
        ] {
            ids.push(alpha.publish(ping).await.must("publishing a ping"));
        }
        ids
    }
    .instrument(request)
    .await;
    dead_letters_until(&scene, &beta, "pings 3 and 4 in the dead letters", |d| {
        d.len() >= 2
    })
    .await;
    let runs = policy.max_handler_runs() as usize;
    let expected_spans = 3 + 3 + 1 + runs;
    let spans = kit
        .wait_for_trace(
            trace,
            scene.patience(),
            &format!("{expected_spans} process spans in the trace"),
            |all| {
                let processes = of_kind(all, trace, SpanKind::Consumer);
                (processes.len() >= expected_spans).then_some(processes)
            },
        )
        .await;
    scene.quiet().await;
    let all = kit.trace(trace);
    let processes = of_kind(&all, trace, SpanKind::Consumer);
    assert_eq!(
        processes.len(),
        spans.len(),
        "process spans after the expected ones: {}",
        describe_spans(&processes)
    );
    let sends = of_kind(&all, trace, SpanKind::Producer);
    let send_of = |id: Uuid| {
        sends
            .iter()
            .find(|s| s.string("messaging.message.id") == Some(id.to_string()))
            .unwrap_or_else(|| panic!("no send span of {id}; {}", describe_spans(&sends)))
    };
    let expect = |n: u64, outcomes: &[&str], reason: Option<&str>| {
        let id = ids[n as usize - 1];
        let what = format!("ping {n}");
        let mut mine = processing(&processes, id);
        mine.sort_by_key(|s| s.int("tidings.attempt"));
        let attempts: Vec<Option<i64>> = mine.iter().map(|s| s.int("tidings.attempt")).collect();
        let want: Vec<Option<i64>> = (1..=outcomes.len() as i64).map(Some).collect();
        assert_eq!(
            attempts,
            want,
            "{what}: one process span per handler run with attempts counting up; runs: {}; {}",
            describe(
                &probe
                    .snapshot()
                    .into_iter()
                    .filter(|s| s.n == n)
                    .collect::<Vec<_>>()
            ),
            describe_spans(&mine)
        );
        let send = send_of(id);
        for (span, outcome) in mine.iter().zip(outcomes) {
            let what = format!(
                "{what}, attempt {}",
                span.int("tidings.attempt").unwrap_or(0)
            );
            check_process(span, &scene, system, "beta", &what);
            assert_eq!(
                span.parent_span_id,
                send.span_id(),
                "{what}: every run's span is a child of the send span"
            );
            has(span, "tidings.outcome", outcome, &what);
            if *outcome == "ack" {
                lacks(span, "error.type", &what);
            } else {
                has(span, "error.type", "handler", &what);
            }
            if *outcome == "dead_letter" {
                let recorded = span
                    .string("tidings.dead_letter.reason")
                    .unwrap_or_default();
                let reason = reason.expect("a dead letter's reason");
                assert!(
                    recorded.contains(reason),
                    "{what}: the dead-letter reason {recorded:?} should contain {reason:?}"
                );
            } else {
                lacks(span, "tidings.dead_letter.reason", &what);
            }
        }
    };
    expect(1, &["retry", "retry", "ack"], None);
    expect(2, &["retry", "retry", "ack"], None);
    expect(3, &["dead_letter"], Some("invalid digit"));
    let mut exhausted = vec!["retry"; runs - 1];
    exhausted.push("dead_letter");
    expect(4, &exhausted, Some("trace case always fails"));
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// Raw messages sent with the broker's own client whose `ce_traceparent` is malformed
/// (not a traceparent, an all-zero trace or parent id, version `ff`, ids too short,
/// upper-case hex, a kilobyte of junk) are handled as before, and a garbage payload with
/// one is dead-lettered as before; each one's process span starts a new trace of its own
/// (no parent). A raw message with a valid foreign `traceparent` (and a malformed
/// `tracestate`) continues the foreign trace.
pub async fn trace_malformed_context(f: &dyn TransportFactory) {
    const KEY: &str = "trace-raw";
    let scene = Scene::new(f, "trace_malformed_context");
    let kit = kit(scene.case);
    let adversary = super::adversarial::adversary(f, scene.case);
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let topic = scene.topic();
    let codec = Codec::default();
    let ping = |n: u64| {
        let mut env = Envelope::new(
            Ping::NAME,
            Ping::VERSION,
            "alpha",
            codec.content_type(),
            codec.encode(&Ping::keyed(n, KEY)).must("encoding a ping"),
        );
        env.ordering_key = Some(KEY.to_string());
        env
    };
    let (foreign_trace, foreign_span) = random_context();
    let malformed: Vec<String> = vec![
        "not-a-traceparent".into(),
        "00-00000000000000000000000000000000-b7ad6b7169203331-01".into(),
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01".into(),
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        "00-0af7651916cd43dd-b7ad6b71-01".into(),
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01".into(),
        format!("00-{}", "7".repeat(1024)),
    ];
    let mut raw = Vec::new();
    let mut send = |env: &Envelope, traceparent: &str, tracestate: Option<&str>| {
        let mut headers: Vec<(String, String)> = env
            .attributes()
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v))
            .filter(|(n, _)| n != attrs::TRACEPARENT && n != attrs::TRACESTATE)
            .collect();
        headers.push((attrs::TRACEPARENT.into(), traceparent.into()));
        if let Some(state) = tracestate {
            headers.push((attrs::TRACESTATE.into(), state.into()));
        }
        raw.push(RawMessage {
            headers,
            payload: env.payload.to_vec(),
            key: Some(KEY.to_string()),
        });
    };
    let mut handled = Vec::new();
    for (i, traceparent) in malformed.iter().enumerate() {
        let env = ping(i as u64 + 1);
        send(&env, traceparent, Some("vendor=1"));
        handled.push((env.id, traceparent.clone()));
    }
    let mut garbage = ping(100);
    garbage.payload = vec![0xc1u8, 0xc1, 0xc1, 0xc1].into();
    send(&garbage, &malformed[0], None);
    let foreign = ping(200);
    send(
        &foreign,
        &traceparent(foreign_trace, foreign_span),
        Some("this is, not a = tracestate,,,"),
    );
    for message in raw {
        adversary
            .inject(&topic, message)
            .await
            .must("injecting a raw message with the broker's own client");
    }

    let numbers = (1..=malformed.len() as u64).chain([200]);
    let seen = probe.wait_for_ns("beta", numbers, scene.patience()).await;
    let dead = dead_letters_until(
        &scene,
        &beta,
        "the garbage payload in the dead letters",
        |d| d.iter().any(|d| d.envelope.id == garbage.id),
    )
    .await;
    let letter = dead
        .iter()
        .find(|d| d.envelope.id == garbage.id)
        .expect("waited for it");
    assert!(
        letter.info.reason.contains("undecodable"),
        "the garbage payload's dead-letter reason: {:?}",
        letter.info.reason
    );
    for s in &seen {
        assert_eq!(s.attempt, 1, "{s} should be handled on its first run");
    }
    let mut ids: Vec<Uuid> = handled.iter().map(|(id, _)| *id).collect();
    ids.extend([garbage.id, foreign.id]);
    let spans = kit
        .wait_for_spans(
            scene.patience(),
            "a process span of every raw message",
            |all| {
                ids.iter()
                    .all(|id| !processing(all, *id).is_empty())
                    .then(|| all.to_vec())
            },
        )
        .await;
    let mut traces = HashSet::new();
    for (id, traceparent) in handled.iter().chain([&(garbage.id, malformed[0].clone())]) {
        let what = format!("the raw message with traceparent {:.80?}", traceparent);
        let mine = processing(&spans, *id);
        assert_eq!(
            mine.len(),
            1,
            "{what}: one process span; {}",
            describe_spans(&mine)
        );
        let span = &mine[0];
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "{what} must start a new trace, not continue one; {}",
            describe_spans(&mine)
        );
        assert_ne!(span.trace_id(), TraceId::INVALID, "{what}: trace id");
        assert!(
            !traceparent.contains(&span.trace_id().to_string()),
            "{what}: its span took the malformed trace id"
        );
        assert!(
            traces.insert(span.trace_id()),
            "{what}: its span shares a trace with another raw message"
        );
        let outcome = if *id == garbage.id {
            "dead_letter"
        } else {
            "ack"
        };
        has(span, "tidings.outcome", outcome, &what);
    }
    let mine = processing(&spans, foreign.id);
    assert_eq!(mine.len(), 1, "the foreign message: one process span");
    assert_eq!(
        (mine[0].trace_id(), mine[0].parent_span_id),
        (foreign_trace, foreign_span),
        "a valid foreign traceparent (with a malformed tracestate) is continued"
    );
    beta.shutdown().await;
}

/// The metrics count what the case did, for its own topic: `alpha` publishes 7 pings in 6
/// publishes (one a batch of 2, one a garbage payload), `beta` (policy: 1 run per
/// delivery, 2 redeliveries) handles 3 at once, one after two failures, fails one for
/// good, fails one every time and dead-letters the garbage. Sent 7 with 6 send operations;
/// consumed 11 deliveries; 11 handler runs (4 `ack`, 4 `retry`, 3 `dead_letter`);
/// retries 4; dead letters 3; lag measured for each of the 11 deliveries; nothing left in
/// flight. Every measurement carries system, destination and service; the consuming ones
/// the subscription.
pub async fn trace_metrics(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_metrics");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let probe = Probe::new();
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(probe.clone())
                    .retry(quick(1, 2))
                    .on(|e: Ping, cx: Context<Probe>| async move {
                        cx.state()
                            .record(Seen::of("run", Ping::NAME, e.n, &e.key, &cx));
                        match e.n {
                            4 if cx.attempt() <= 2 => Err(HandlerError::msg("flaky")),
                            5 => {
                                "not a number".parse::<u64>().permanent()?;
                                Ok(())
                            }
                            6 => Err(HandlerError::msg("always fails")),
                            _ => Ok(()),
                        }
                    }),
            ),
            "`beta` with failing handlers",
        )
        .await;
    let alpha = scene.publisher().await;
    let topic = scene.topic();
    alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    alpha
        .publish_batch([Ping::unkeyed(2), Ping::unkeyed(3)])
        .await
        .must("publishing pings 2 and 3");
    for n in 4..=6 {
        alpha
            .publish(Ping::unkeyed(n))
            .await
            .must("publishing a ping");
    }
    let codec = Codec::default();
    let garbage = Envelope::new(
        Ping::NAME,
        Ping::VERSION,
        "alpha",
        codec.content_type(),
        vec![0xc1u8, 0xc1, 0xc1],
    );
    alpha
        .publish_envelopes_to(&topic, vec![garbage])
        .await
        .must("publishing a garbage payload");

    let producing = [
        ("tidings.service", "alpha"),
        ("messaging.destination.name", topic.as_str()),
    ];
    let consuming = [
        ("tidings.service", "beta"),
        ("messaging.destination.name", topic.as_str()),
    ];
    kit.wait_for_metrics(
        scene.patience(),
        "11 deliveries settled, 3 dead letters",
        |m| {
            (m.count("tidings.lag", &consuming) >= 11
                && m.sum("tidings.dead_letters", &consuming) >= 3)
                .then_some(())
        },
    )
    .await;
    scene.quiet().await;
    let m = kit.metrics();
    let runs = probe.snapshot();
    let context = || {
        format!(
            "handler runs: {}; measured:{}",
            describe(&runs),
            m.describe(&[consuming[1]])
        )
    };
    let checks: [(&str, i64, i64); 12] = [
        (
            "messaging.client.sent.messages",
            m.sum("messaging.client.sent.messages", &producing),
            7,
        ),
        (
            "messaging.client.operation.duration (count)",
            m.count("messaging.client.operation.duration", &producing) as i64,
            6,
        ),
        (
            "messaging.client.consumed.messages",
            m.sum("messaging.client.consumed.messages", &consuming),
            11,
        ),
        (
            "messaging.process.duration (count)",
            m.count("messaging.process.duration", &consuming) as i64,
            11,
        ),
        (
            "messaging.process.duration, outcome ack",
            m.count(
                "messaging.process.duration",
                &[consuming[0], consuming[1], ("tidings.outcome", "ack")],
            ) as i64,
            4,
        ),
        (
            "messaging.process.duration, outcome retry",
            m.count(
                "messaging.process.duration",
                &[consuming[0], consuming[1], ("tidings.outcome", "retry")],
            ) as i64,
            4,
        ),
        (
            "messaging.process.duration, outcome dead_letter",
            m.count(
                "messaging.process.duration",
                &[
                    consuming[0],
                    consuming[1],
                    ("tidings.outcome", "dead_letter"),
                ],
            ) as i64,
            3,
        ),
        ("tidings.retries", m.sum("tidings.retries", &consuming), 4),
        (
            "tidings.dead_letters",
            m.sum("tidings.dead_letters", &consuming),
            3,
        ),
        (
            "tidings.lag (count)",
            m.count("tidings.lag", &consuming) as i64,
            11,
        ),
        (
            "tidings.handlers.in_flight",
            m.sum("tidings.handlers.in_flight", &consuming),
            0,
        ),
        (
            "messaging.client.sent.messages by beta",
            m.sum("messaging.client.sent.messages", &consuming),
            0,
        ),
    ];
    for (what, got, want) in checks {
        assert_eq!(got, want, "{what}; {}", context());
    }
    let subscription = scene.subscription("beta");
    let expected_labels = [
        format!("messaging.system={system}"),
        format!("messaging.destination.name={topic}"),
    ];
    for (instrument, filter, consumer) in [
        ("messaging.client.sent.messages", &producing, false),
        ("messaging.client.consumed.messages", &consuming, true),
        ("tidings.retries", &consuming, true),
        ("tidings.dead_letters", &consuming, true),
        ("messaging.process.duration", &consuming, true),
    ] {
        let sets = m.attribute_sets(instrument, filter);
        assert!(!sets.is_empty(), "{instrument}: no data points");
        for set in sets {
            for label in &expected_labels {
                assert!(set.contains(label), "{instrument}: {set:?} lacks {label}");
            }
            let sub = format!("messaging.destination.subscription.name={subscription}");
            assert_eq!(
                set.contains(&sub),
                consumer,
                "{instrument}: {set:?} and the subscription label"
            );
        }
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}
