//! The messaging metrics count what a case did.

use super::*;

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

/// Handlers in flight and consumed messages are observed from the subscription when the
/// meter provider collects: while `beta`'s handler is held, `tidings.handlers.in_flight`
/// reads 1 and `messaging.client.consumed.messages` 1, both with the subscription's labels;
/// once it is let go, in flight is back to 0, consumed stays 1 and the delivery has its
/// lag. A transport that settled or counted a delivery before its handler finished, or an
/// instrument read from the wrong subscription, fails it.
pub async fn trace_in_flight(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "trace_in_flight");
    let kit = kit(scene.case);
    let system = system(&scene).await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(gate.clone())
                    .on(|_: Ping, cx: Context<tokio::sync::Semaphore>| async move {
                        let _held = cx.state().acquire().await;
                        Ok::<(), HandlerError>(())
                    }),
            ),
            "`beta` with a held handler",
        )
        .await;
    let alpha = scene.publisher().await;
    let topic = scene.topic();
    alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing a ping");
    let consuming = [
        ("tidings.service", "beta"),
        ("messaging.destination.name", topic.as_str()),
    ];
    let instruments = [
        "tidings.handlers.in_flight",
        "messaging.client.consumed.messages",
    ];
    // The two are read one after the other at a collection: a delivery starting between
    // them shows in flight before it shows consumed, so wait for both.
    let (lags, sets) = kit
        .wait_for_metrics(
            scene.patience(),
            "the held handler in flight and its delivery consumed",
            |m| {
                (m.sum("tidings.handlers.in_flight", &consuming) == 1
                    && m.sum("messaging.client.consumed.messages", &consuming) == 1)
                    .then(|| {
                        (
                            m.count("tidings.lag", &consuming),
                            instruments.map(|i| m.attribute_sets(i, &consuming)),
                        )
                    })
            },
        )
        .await;
    assert_eq!(lags, 0, "no lag before the handler finished");
    let subscription = format!(
        "messaging.destination.subscription.name={}",
        scene.subscription("beta")
    );
    for (instrument, sets) in instruments.iter().zip(sets) {
        assert_eq!(sets.len(), 1, "{instrument}: one attribute set, {sets:?}");
        for label in [format!("messaging.system={system}"), subscription.clone()] {
            assert!(
                sets[0].contains(&label),
                "{instrument}: {sets:?} lacks {label}"
            );
        }
    }
    gate.add_permits(1);
    kit.wait_for_metrics(
        scene.patience(),
        "the handler let go: nothing in flight, its lag recorded",
        |m| {
            (m.sum("tidings.handlers.in_flight", &consuming) == 0
                && m.count("tidings.lag", &consuming) == 1)
                .then_some(())
        },
    )
    .await;
    scene.quiet().await;
    let m = kit.metrics();
    assert_eq!(
        m.sum("messaging.client.consumed.messages", &consuming),
        1,
        "consumed after the handler finished"
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// Two instances of `beta` in one process, competing for one subscription, share its
/// labels: the observed instruments report their sum. Pings are published in rounds until
/// both instances handled some; then consumed messages equal the deliveries both handled
/// together (not one instance's), as the lag count does, and nothing is in flight. Needs
/// competing consumers.
pub async fn trace_metrics_competing(f: &dyn TransportFactory) {
    const ROUND: u64 = 20;
    const MAX_ROUNDS: u64 = 50;
    let scene = Scene::new(f, "trace_metrics_competing");
    if !scene
        .needs("competing_consumers", |c| c.competing_consumers)
        .await
    {
        return;
    }
    let kit = kit(scene.case);
    let probe = Probe::new();
    let (one, two) = scene.competing_pair(&probe).await;
    let alpha = scene.publisher().await;
    let deadline = std::time::Instant::now() + scene.patience();
    let mut published = 0;
    loop {
        alpha
            .publish_batch((published..published + ROUND).map(Ping::unkeyed))
            .await
            .must("publishing a round of pings");
        published += ROUND;
        probe
            .wait_until(
                scene.patience(),
                &format!("the two instances together to handle {published} pings"),
                |seen| {
                    let got: HashSet<u64> = seen.iter().map(|s| s.n).collect();
                    (got.len() as u64 >= published).then_some(())
                },
            )
            .await;
        if !probe.labelled("beta-1").is_empty() && !probe.labelled("beta-2").is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && published < ROUND * MAX_ROUNDS,
            "after {published} pings one instance of `beta` has handled none"
        );
    }
    scene.quiet().await;
    let runs = probe.snapshot();
    let (ones, twos) = (
        probe.labelled("beta-1").len(),
        probe.labelled("beta-2").len(),
    );
    let topic = scene.topic();
    let consuming = [
        ("tidings.service", "beta"),
        ("messaging.destination.name", topic.as_str()),
    ];
    let deliveries = runs.len() as i64;
    kit.wait_for_metrics(
        scene.patience(),
        &format!(
            "consumed and lag counting the {deliveries} deliveries of both instances ({ones} and {twos})"
        ),
        |m| {
            (m.sum("messaging.client.consumed.messages", &consuming) == deliveries
                && m.count("tidings.lag", &consuming) as i64 == deliveries
                && m.sum("tidings.handlers.in_flight", &consuming) == 0)
                .then_some(())
        },
    )
    .await;
    alpha.shutdown().await;
    one.shutdown().await;
    two.shutdown().await;
}
