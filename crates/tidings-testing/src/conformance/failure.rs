//! Failure cases: retries, dead letters and their replay, poison payloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    Bus, Codec, Context, DeadLetter, DecodeLimits, Envelope, Event, HandlerError, Replay,
    ResultExt, RetryPolicy, Subscription,
};
use uuid::Uuid;

use super::events::{ConfEvents, Ping};
use super::support::{describe, Must, Probe, Scene, Seen};
use super::TransportFactory;

/// A short retry policy: `immediate` runs per delivery, `redeliveries` delayed
/// redeliveries 10 ms apart (growing to 40 ms).
pub(super) fn quick(immediate: u32, redeliveries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .immediate(immediate)
        .redeliveries(redeliveries)
        .backoff(Duration::from_millis(10), 2.0, Duration::from_millis(40))
}

/// Poll `bus`'s dead letters of the suite's topic until `done` accepts them.
pub(super) async fn dead_letters_until(
    scene: &Scene<'_>,
    bus: &Bus,
    what: &str,
    done: impl Fn(&[DeadLetter]) -> bool,
) -> Vec<DeadLetter> {
    let done = &done;
    scene
        .poll(what, || async move {
            let dead = bus
                .dead_letters::<ConfEvents>(100)
                .await
                .must("listing dead letters");
            if done(&dead) {
                Ok(dead)
            } else {
                Err(dead
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {}: {}",
                            d.envelope.event_type, d.envelope.id, d.info.reason
                        )
                    })
                    .collect::<Vec<_>>())
            }
        })
        .await
}

/// State of a handler that refuses ping 1 until fixed.
#[derive(Debug)]
struct Refuser {
    probe: Arc<Probe>,
    fixed: AtomicBool,
}

/// A handler that always fails runs `immediate × (redeliveries + 1)` times (here 2 × 3,
/// `cx.attempt()` counting 1 to 6), then its envelope is dead-lettered: listed by
/// `Bus::dead_letters` with the handler's message in the reason, 6 attempts, the service,
/// subscription and topic, and the envelope as published. The event after it is handled
/// meanwhile. Once the handler is fixed, replaying the dead letters gets it handled and
/// empties the dead-letter destination.
pub async fn retry_then_dead_letter(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "retry_then_dead_letter");
    let probe = Probe::new();
    let state = Arc::new(Refuser {
        probe: probe.clone(),
        fixed: AtomicBool::new(false),
    });
    let policy = quick(2, 2);
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(state.clone())
                    .retry(policy)
                    .on(|e: Ping, cx: Context<Refuser>| async move {
                        let s = cx.state();
                        if e.n == 1 && !s.fixed.load(Ordering::SeqCst) {
                            s.probe
                                .record(Seen::of("failed", Ping::NAME, e.n, &e.key, &cx));
                            return Err(HandlerError::msg(format!(
                                "conformance handler refuses ping {}",
                                e.n
                            )));
                        }
                        s.probe
                            .record(Seen::of("handled", Ping::NAME, e.n, &e.key, &cx));
                        Ok(())
                    }),
            ),
            "`beta` with a failing handler",
        )
        .await;
    let alpha = scene.publisher().await;
    let doomed = alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    alpha
        .publish(Ping::unkeyed(2))
        .await
        .must("publishing ping 2");

    probe.wait_for_ns("handled", [2], scene.patience()).await;
    dead_letters_until(&scene, &beta, "ping 1 in the dead letters", |d| {
        !d.is_empty()
    })
    .await;
    scene.quiet().await;

    let runs = policy.max_handler_runs();
    assert_eq!(runs, 6);
    let failed = probe.labelled("failed");
    let attempts: Vec<u32> = failed.iter().map(|s| s.attempt).collect();
    assert_eq!(
        attempts,
        (1..=runs).collect::<Vec<_>>(),
        "the failing handler should run {runs} times with attempts 1..={runs}; {}",
        describe(&failed)
    );
    assert!(
        failed.iter().all(|s| s.envelope.id == doomed),
        "runs of another envelope were recorded as failed: {}",
        describe(&failed)
    );
    let dead = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters");
    assert_eq!(dead.len(), 1, "one dead letter expected: {dead:?}");
    let letter = &dead[0];
    assert_eq!(
        letter.envelope.id, doomed,
        "the dead letter is another envelope"
    );
    assert_eq!(letter.envelope.event_type, Ping::NAME);
    assert_eq!(letter.envelope.source.as_ref(), "alpha");
    let codec = Codec::for_content_type(&letter.envelope.content_type)
        .expect("the dead letter keeps its content type");
    let payload: Ping = codec
        .decode(&letter.envelope.payload, DecodeLimits::default())
        .must("decoding the dead letter's payload");
    assert_eq!(
        payload,
        Ping::unkeyed(1),
        "the dead letter's payload changed"
    );
    let info = &letter.info;
    assert!(
        info.reason.contains("conformance handler refuses ping 1"),
        "the reason should carry the handler's error: {:?}",
        info.reason
    );
    assert_eq!(info.attempts, runs, "attempts in the dead letter");
    assert_eq!(info.service.as_ref(), "beta", "service in the dead letter");
    assert_eq!(
        info.topic.as_ref(),
        scene.topic(),
        "topic in the dead letter"
    );
    assert_eq!(
        info.subscription.as_ref(),
        scene.subscription("beta"),
        "subscription in the dead letter"
    );

    state.fixed.store(true, Ordering::SeqCst);
    let replayed = beta
        .replay_dead_letters::<ConfEvents>(Replay::All)
        .await
        .must("replaying dead letters");
    assert_eq!(replayed, 1, "replay should move the one dead letter back");
    let handled = probe.wait_for_ns("handled", [1], scene.patience()).await;
    assert!(
        handled.iter().any(|s| s.n == 1 && s.envelope.id == doomed),
        "the replayed ping 1 arrived with another id: {}",
        describe(&handled)
    );
    dead_letters_until(&scene, &beta, "no dead letters after the replay", |d| {
        d.is_empty()
    })
    .await;
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// A failure the handler marks permanent (`.permanent()?`) is dead-lettered after its one
/// run, although the policy allows six (2 immediate runs, 2 redeliveries): attempts 1, the
/// handler's error as the reason, never delivered again; the next event is handled.
pub async fn permanent_failure(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "permanent_failure");
    let probe = Probe::new();
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(probe.clone())
                    .retry(quick(2, 2))
                    .on(|e: Ping, cx: Context<Probe>| async move {
                        if e.n == 1 {
                            cx.state()
                                .record(Seen::of("failed", Ping::NAME, e.n, &e.key, &cx));
                            "not a number".parse::<u64>().permanent()?;
                        }
                        cx.state()
                            .record(Seen::of("handled", Ping::NAME, e.n, &e.key, &cx));
                        Ok(())
                    }),
            ),
            "`beta` with a handler that fails for good",
        )
        .await;
    let alpha = scene.publisher().await;
    let doomed = alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    alpha
        .publish(Ping::unkeyed(2))
        .await
        .must("publishing ping 2");
    probe.wait_for_ns("handled", [2], scene.patience()).await;
    scene.quiet().await;
    let failed = probe.labelled("failed");
    assert_eq!(
        failed.len(),
        1,
        "a permanent failure runs the handler once: {}",
        describe(&failed)
    );
    let dead = dead_letters_until(&scene, &beta, "ping 1 in the dead letters", |d| {
        !d.is_empty()
    })
    .await;
    assert_eq!(dead.len(), 1, "one dead letter expected: {dead:?}");
    assert_eq!(
        dead[0].envelope.id, doomed,
        "the dead letter is another envelope"
    );
    assert_eq!(dead[0].info.attempts, 1, "attempts in the dead letter");
    assert!(
        dead[0].info.reason.contains("invalid digit"),
        "the reason should carry the handler's error: {:?}",
        dead[0].info.reason
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// A handler that fails on its first two runs and then succeeds (policy: 2 immediate runs,
/// 2 redeliveries) is handled exactly once, on attempt 3, with `cx.attempt()` counting
/// 1, 2, 3; nothing is dead-lettered. Checked for an event without an ordering key (the
/// transport redelivers it) and one with a key (the bus retries it in place).
pub async fn retry_then_success(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "retry_then_success");
    let probe = Probe::new();
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(probe.clone())
                    .retry(quick(2, 2))
                    .on(|e: Ping, cx: Context<Probe>| async move {
                        cx.state()
                            .record(Seen::of("run", Ping::NAME, e.n, &e.key, &cx));
                        if cx.attempt() <= 2 {
                            return Err(HandlerError::msg(format!(
                                "conformance handler fails attempt {}",
                                cx.attempt()
                            )));
                        }
                        cx.state()
                            .record(Seen::of("handled", Ping::NAME, e.n, &e.key, &cx));
                        Ok(())
                    }),
            ),
            "`beta` with a flaky handler",
        )
        .await;
    let alpha = scene.publisher().await;
    alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    alpha
        .publish(Ping::keyed(2, "flaky"))
        .await
        .must("publishing ping 2");
    probe.wait_for_ns("handled", [1, 2], scene.patience()).await;
    scene.quiet().await;

    for n in [1, 2] {
        let runs: Vec<Seen> = probe
            .labelled("run")
            .into_iter()
            .filter(|s| s.n == n)
            .collect();
        let attempts: Vec<u32> = runs.iter().map(|s| s.attempt).collect();
        assert_eq!(
            attempts,
            vec![1, 2, 3],
            "ping {n}: the handler should run on attempts 1, 2, 3; {}",
            describe(&runs)
        );
        let handled: Vec<Seen> = probe
            .labelled("handled")
            .into_iter()
            .filter(|s| s.n == n)
            .collect();
        assert_eq!(
            handled.len(),
            1,
            "ping {n} should be handled once: {}",
            describe(&handled)
        );
        assert!(
            handled[0].redelivered,
            "ping {n} was handled on attempt 3 but `cx.redelivered()` is false"
        );
    }
    let dead = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters");
    assert!(dead.is_empty(), "nothing should be dead-lettered: {dead:?}");
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// Envelopes that can never be handled are dead-lettered at once, the handler never runs
/// for them (attempts 0), the reason names the cause, and a good event published after
/// them is handled:
/// - garbage bytes for a handled event type: "undecodable";
/// - a newer version than the handler's: "unsupported version";
/// - a payload over the consumer's `DecodeLimits::max_size` (512 bytes here; the
///   publisher has the default limit): "oversized";
/// - a content type no codec reads: names the content type.
pub async fn poison_payloads(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "poison_payloads");
    let probe = Probe::new();
    let beta = scene
        .build(
            scene
                .builder("beta")
                .decode_limits(DecodeLimits {
                    max_size: 512,
                    ..DecodeLimits::default()
                })
                .subscribe(
                    Subscription::to::<ConfEvents>()
                        .with_state(super::support::Tap::new(&probe, "beta"))
                        .on(super::support::tap_ping),
                ),
            "`beta` with a 512-byte decode limit",
        )
        .await;
    let alpha = scene.publisher().await;
    let topic = alpha
        .topic_name::<ConfEvents>()
        .must("the publisher's topic name")
        .to_string();
    let codec = Codec::default();
    let ct = codec.content_type();
    let encode = |p: &Ping| codec.encode(p).must("encoding a ping");

    let garbage = Envelope::new(
        Ping::NAME,
        Ping::VERSION,
        "alpha",
        ct,
        vec![0xc1u8, 0xc1, 0xc1, 0xc1],
    );
    let newer = Envelope::new(
        Ping::NAME,
        Ping::VERSION + 1,
        "alpha",
        ct,
        encode(&Ping::unkeyed(102)),
    );
    let oversized = Envelope::new(
        Ping::NAME,
        Ping::VERSION,
        "alpha",
        ct,
        encode(&Ping::keyed(103, "x".repeat(2_000))),
    );
    let unknown_type = Envelope::new(
        Ping::NAME,
        Ping::VERSION,
        "alpha",
        "text/x-conformance",
        encode(&Ping::unkeyed(104)),
    );
    let cases: Vec<(&str, Uuid, Vec<&str>)> = vec![
        ("garbage bytes", garbage.id, vec!["undecodable"]),
        ("a newer version", newer.id, vec!["unsupported version"]),
        ("an oversized payload", oversized.id, vec!["oversized"]),
        (
            "an unknown content type",
            unknown_type.id,
            vec!["text/x-conformance"],
        ),
    ];
    for env in [garbage, newer, oversized, unknown_type] {
        alpha
            .publish_envelopes_to(&topic, vec![env])
            .await
            .must("publishing a poison envelope");
    }
    alpha
        .publish(Ping::unkeyed(105))
        .await
        .must("publishing the good ping");

    probe.wait_for_ns("beta", [105], scene.patience()).await;
    let dead = dead_letters_until(
        &scene,
        &beta,
        "the 4 poison envelopes in the dead letters",
        |d| d.len() >= 4,
    )
    .await;
    for (what, id, words) in &cases {
        let letter = dead
            .iter()
            .find(|d| d.envelope.id == *id)
            .unwrap_or_else(|| panic!("{what} was not dead-lettered; dead letters: {dead:?}"));
        let reason = letter.info.reason.to_lowercase();
        for word in words {
            assert!(
                reason.contains(word),
                "the dead-letter reason for {what} should say {word:?}: {:?}",
                letter.info.reason
            );
        }
        assert_eq!(
            letter.info.attempts, 0,
            "{what}: the handler must not have run"
        );
        assert_eq!(letter.info.service.as_ref(), "beta", "{what}: service");
        assert_eq!(letter.info.topic.as_ref(), scene.topic(), "{what}: topic");
    }
    scene.quiet().await;
    let ran: Vec<Seen> = probe
        .snapshot()
        .into_iter()
        .filter(|s| s.n != 105)
        .collect();
    assert!(
        ran.is_empty(),
        "the handler ran for poison envelopes: {}",
        describe(&ran)
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}
