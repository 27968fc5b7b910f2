//! The spans of a scheduled event.

use std::time::Duration;

use super::*;

/// How far ahead the case schedules its event.
const AHEAD: Duration = Duration::from_millis(1500);

/// An event published to be handled 1.5 s from now shows in its trace one process
/// span per delivery, each a child of the send span: `defer` (with the time still to wait
/// in `tidings.retry_delay_ms`, and no error) for every delivery that came early and was
/// put back, then one `ack` for the handler run; none says `retry`, since no handler
/// failed. (A broker that holds the event itself until its time, as Service Bus does,
/// delivers it once, and the trace shows only the `ack` span.)
pub async fn trace_scheduled_deferral(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_scheduled_deferral");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let probe = Probe::new();
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(probe.clone())
                    .on(|e: Ping, cx: Context<Probe>| async move {
                        cx.state()
                            .record(Seen::of("run", Ping::NAME, e.n, &e.key, &cx));
                        Ok::<(), HandlerError>(())
                    }),
            ),
            "`beta` recording pings",
        )
        .await;
    let alpha = scene.publisher().await;
    let (request, trace) = kit.root("request");
    let id = alpha
        .publish_after(Ping::unkeyed(1), AHEAD)
        .instrument(request)
        .await
        .must("publishing a scheduled ping");
    kit.wait_for_trace(
        trace,
        scene.patience() + AHEAD,
        "the process span of the handler run",
        |all| {
            processing(&of_kind(all, trace, SpanKind::Consumer), id)
                .iter()
                .any(|s| s.string("tidings.outcome").as_deref() == Some("ack"))
                .then_some(())
        },
    )
    .await;
    scene.quiet().await;
    let all = kit.trace(trace);
    let mine = processing(&of_kind(&all, trace, SpanKind::Consumer), id);
    let sends = of_kind(&all, trace, SpanKind::Producer);
    let [send] = sends.as_slice() else {
        panic!("one send span expected; {}", describe_spans(&sends));
    };
    let acks = mine
        .iter()
        .filter(|s| s.string("tidings.outcome").as_deref() == Some("ack"))
        .count();
    assert_eq!(acks, 1, "one handler run; {}", describe_spans(&mine));
    for span in &mine {
        let what = format!(
            "the scheduled ping's {} span",
            span.string("tidings.outcome").unwrap_or_default()
        );
        check_process(span, &scene, system, "beta", &what);
        assert_eq!(
            span.parent_span_id,
            send.span_id(),
            "{what}: every delivery's span is a child of the send span"
        );
        lacks(span, "error.type", &what);
        match span.string("tidings.outcome").as_deref() {
            Some("ack") => {}
            Some("defer") => {
                // Recorded rounded up, of a time itself rounded up to the millisecond the
                // header carries: at least 1 ms, at most 1 ms over the time ahead.
                let wait = span.int("tidings.retry_delay_ms").unwrap_or(-1);
                assert!(
                    (1..=AHEAD.as_millis() as i64 + 1).contains(&wait),
                    "{what}: the time left to wait, {wait} ms, should be within the {AHEAD:?} ahead"
                );
            }
            other => panic!(
                "{what}: outcome {other:?}, where an early delivery is `defer` and the run `ack`"
            ),
        }
    }
    let runs = probe.snapshot();
    assert_eq!(runs.len(), 1, "one handler run: {}", describe(&runs));
    alpha.shutdown().await;
    beta.shutdown().await;
}
