//! One trace from a publish to its handling, and on through a handler.

use super::*;

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
    has_int(
        single_send,
        "messaging.message.body.size",
        ping1.payload.len() as i64,
        "the send span of ping 1",
    );
    has(
        single_send,
        "tidings.wire_name",
        Ping::NAME,
        "the send span of ping 1",
    );
    has_int(
        single_send,
        "tidings.version",
        i64::from(Ping::VERSION),
        "the send span of ping 1",
    );
    has_int(
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
        has_int(
            process,
            "messaging.message.body.size",
            env.payload.len() as i64,
            &what,
        );
        has(process, "tidings.wire_name", Ping::NAME, &what);
        has_int(process, "tidings.version", i64::from(Ping::VERSION), &what);
        has_int(process, "tidings.attempt", 1, &what);
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
pub(super) fn random_context() -> (TraceId, SpanId) {
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
                    .on(super::super::support::tap_pong),
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
