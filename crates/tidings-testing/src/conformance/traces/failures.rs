//! Retries, dead letters and malformed trace contexts in the spans.

use super::flow::random_context;
use super::*;

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
    let adversary = super::super::adversarial::adversary(f, scene.case);
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
