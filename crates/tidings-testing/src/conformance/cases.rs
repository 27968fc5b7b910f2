//! Delivery cases: confirms and envelope fidelity, fan-out, competing consumers,
//! at-least-once redelivery, skipping unhandled events, upcasting, correlation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use tidings_core::{Codec, Context, Event, HandlerError, PublishOptions, Subscription, JSON};
use tokio::time::Instant;
use uuid::Uuid;

use super::events::{ConfEvents, ConfEventsV1, Ping, PingV1, Pong, Unhandled, UPCAST_KEY};
use super::support::{describe, Must, Probe, Process, Scene, Seen, Tap};
use super::TransportFactory;

/// `publish` returns once confirmed with the envelope id; a subscriber receives the
/// envelope with id, type, source, version, time, correlation and causation ids, trace
/// context, custom header, ordering key and content type intact, and the payload decodes.
/// A batch publish returns the ids in order and each arrives. With the `json` codec
/// compiled in, a JSON publisher's events arrive as `application/json` and decode too.
pub async fn publish_confirms(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "publish_confirms");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;

    let correlation = Uuid::new_v4();
    let causation = Uuid::new_v4();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let before = SystemTime::now();
    let id = alpha
        .publish_with(
            Ping::keyed(1, "key-1"),
            PublishOptions::new()
                .header("conformance-tag", "yes")
                .correlation_id(correlation)
                .causation_id(causation)
                .traceparent(traceparent)
                .tracestate("conformance=1"),
        )
        .await
        .must("publishing a ping with options");
    let ids = alpha
        .publish_batch([Ping::unkeyed(2), Ping::unkeyed(3), Ping::unkeyed(4)])
        .await
        .must("publishing a batch of three pings");
    assert_eq!(
        ids.len(),
        3,
        "publish_batch returned {ids:?} for three events"
    );

    let seen = probe.wait_for_ns("beta", 1..=4, scene.patience()).await;
    let after = SystemTime::now();
    let first = seen.iter().find(|s| s.n == 1).expect("waited for it");
    let env = &first.envelope;
    assert_eq!(
        env.id, id,
        "the received envelope's id differs from what publish returned"
    );
    assert_eq!(env.event_type, Ping::NAME, "event type");
    assert_eq!(env.source.as_ref(), "alpha", "source");
    assert_eq!(env.version, Ping::VERSION, "version");
    assert_eq!(env.correlation_id, Some(correlation), "correlation id");
    assert_eq!(env.causation_id, Some(causation), "causation id");
    assert_eq!(env.traceparent.as_deref(), Some(traceparent), "traceparent");
    assert_eq!(
        env.tracestate.as_deref(),
        Some("conformance=1"),
        "tracestate"
    );
    assert_eq!(
        env.header("conformance-tag"),
        Some("yes"),
        "custom header; headers: {:?}",
        env.headers
    );
    assert_eq!(env.ordering_key.as_deref(), Some("key-1"), "ordering key");
    assert_eq!(
        env.content_type,
        Codec::default().content_type(),
        "content type"
    );
    assert_eq!(
        first.key, "key-1",
        "the payload decoded to a different ping"
    );
    assert!(
        env.time + Duration::from_millis(1) >= before && env.time <= after,
        "the envelope's time {:?} is not between publishing ({before:?}) and receiving ({after:?})",
        env.time
    );
    for (n, id) in (2..=4).zip(&ids) {
        let s = seen.iter().find(|s| s.n == n).expect("waited for it");
        assert_eq!(
            &s.envelope.id, id,
            "ping {n} of the batch arrived with another id"
        );
        assert_eq!(
            s.envelope.ordering_key, None,
            "ping {n} has no ordering key"
        );
    }

    if Codec::for_content_type(JSON).is_some() {
        let json = scene
            .build(
                scene
                    .builder("alpha-json")
                    .publishes::<ConfEvents>()
                    .codec(Codec::Json),
                "the JSON publisher",
            )
            .await;
        json.publish(Ping::keyed(5, "json"))
            .await
            .must("publishing a ping as JSON");
        let seen = probe.wait_for_ns("beta", [5], scene.patience()).await;
        let five = seen.iter().find(|s| s.n == 5).expect("waited for it");
        assert_eq!(
            five.envelope.content_type, JSON,
            "content type of the JSON ping"
        );
        assert_eq!(
            five.key, "json",
            "the JSON payload decoded to a different ping"
        );
        json.shutdown().await;
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// Two services subscribed to one topic each get every one of 50 events.
pub async fn fan_out(f: &dyn TransportFactory) {
    const N: u64 = 50;
    let scene = Scene::new(f, "fan_out");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let gamma = scene
        .build(
            scene
                .builder("gamma")
                .subscribe(Tap::pings(&probe, "gamma")),
            "`gamma`",
        )
        .await;
    let alpha = scene.publisher().await;
    for n in 0..N / 2 {
        alpha
            .publish(Ping::keyed(n, format!("k{}", n % 5)))
            .await
            .must("publishing");
    }
    alpha
        .publish_batch((N / 2..N).map(Ping::unkeyed))
        .await
        .must("publishing a batch");
    probe.wait_for_ns("beta", 0..N, scene.patience()).await;
    probe.wait_for_ns("gamma", 0..N, scene.patience()).await;
    for bus in [alpha, beta, gamma] {
        bus.shutdown().await;
    }
}

/// Two instances of one service (separate connections) share the events of their
/// subscription: every event is handled at least once, each instance handles some, and
/// they do not both get everything (that would be fan-out).
///
/// Events are published in rounds of 20 until both instances have handled some (brokers
/// may need a while to spread a subscription over a new consumer, e.g. a Kafka
/// rebalance); an instance that gets nothing within the patience fails the case.
pub async fn competing_consumers(f: &dyn TransportFactory) {
    const ROUND: u64 = 20;
    const MAX_ROUNDS: u64 = 50;
    let scene = Scene::new(f, "competing_consumers");
    if !scene
        .needs("competing_consumers", |c| c.competing_consumers)
        .await
    {
        return;
    }
    let probe = Probe::new();
    let (one, two) = scene.competing_pair(&probe).await;
    let alpha = scene.publisher().await;

    let deadline = Instant::now() + scene.patience();
    let mut published = 0;
    loop {
        alpha
            .publish_batch((published..published + ROUND).map(|n| Ping::keyed(n, format!("c{n}"))))
            .await
            .must("publishing a round of pings");
        published += ROUND;
        let wanted: BTreeSet<u64> = (0..published).collect();
        probe
            .wait_until(
                scene.patience(),
                &format!("the two instances together to handle events 0..{published}"),
                |seen| {
                    let got: BTreeSet<u64> = seen.iter().map(|s| s.n).collect();
                    wanted.is_subset(&got).then_some(())
                },
            )
            .await;
        let both = !probe.labelled("beta-1").is_empty() && !probe.labelled("beta-2").is_empty();
        if both {
            break;
        }
        if Instant::now() >= deadline || published >= ROUND * MAX_ROUNDS {
            panic!(
                "competing_consumers: after {published} events one instance of `beta` has handled none; {}",
                describe(&probe.snapshot())
            );
        }
    }
    scene.quiet().await;
    let by_n = probe.snapshot().into_iter().fold(
        BTreeMap::<u64, BTreeSet<&'static str>>::new(),
        |mut m, s| {
            m.entry(s.n).or_default().insert(s.label);
            m
        },
    );
    let twice = by_n.values().filter(|labels| labels.len() == 2).count();
    println!(
        "competing_consumers: {published} events; instance 1 handled {}, instance 2 handled {}, {twice} by both",
        probe.labelled("beta-1").len(),
        probe.labelled("beta-2").len()
    );
    assert!(
        (twice as u64) < published,
        "every one of the {published} events was handled by both instances: they do not compete"
    );
    for bus in [alpha, one, two] {
        bus.shutdown().await;
    }
}

/// An event whose handler is in flight when its process dies (its runtime dropped with the
/// consumer, the handler and the connection: nothing settled) is delivered again to the
/// next instance of the service, with the same id; an event published while no instance
/// runs is delivered too.
pub async fn at_least_once_redelivery(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "at_least_once_redelivery");
    let probe = Probe::new();
    let doomed = scene.builder("beta").subscribe(
        Subscription::to::<ConfEvents>()
            .with_state(Tap::new(&probe, "doomed"))
            .on(|e: Ping, cx: Context<Tap>| async move {
                cx.state()
                    .probe
                    .record(Seen::of(cx.state().label, Ping::NAME, e.n, &e.key, &cx));
                // Never finishes: the process dies with the handler in flight.
                futures::future::pending::<Result<(), HandlerError>>().await
            }),
    );
    let process = Process::start();
    let (ready, built) = tokio::sync::oneshot::channel();
    process.spawn(async move {
        match doomed.build().await {
            Ok(bus) => {
                let _ = ready.send(Ok(()));
                let _keep = bus;
                futures::future::pending::<()>().await;
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
    built
        .await
        .expect("the simulated process ended before building its bus")
        .must("building the instance that will die");

    let alpha = scene.publisher().await;
    let first = alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    probe.wait_for_ns("doomed", [1], scene.patience()).await;
    process.kill().await;
    let second = alpha
        .publish(Ping::unkeyed(2))
        .await
        .must("publishing ping 2");

    let next = scene
        .build(
            scene.builder("beta").subscribe(Tap::pings(&probe, "next")),
            "the next instance of `beta`",
        )
        .await;
    let seen = probe.wait_for_ns("next", [1, 2], scene.patience()).await;
    for (n, id) in [(1, first), (2, second)] {
        assert!(
            seen.iter().any(|s| s.n == n && s.envelope.id == id),
            "ping {n} arrived with another id than {id}; {}",
            describe(&seen)
        );
    }
    alpha.shutdown().await;
    next.shutdown().await;
}

/// Events of the topic that a subscription has no handler for are acknowledged and
/// skipped: the handled events around them arrive, nothing is dead-lettered, and the next
/// instance of the service (which does handle them) does not get them again.
pub async fn skip_unhandled(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "skip_unhandled");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    alpha
        .publish_batch::<ConfEvents, _>([
            Unhandled { n: 1 }.into(),
            Pong { n: 2 }.into(),
            Ping::unkeyed(3).into(),
            Unhandled { n: 4 }.into(),
            Ping::unkeyed(5).into(),
        ])
        .await
        .must("publishing a mixed batch");
    alpha.publish(Unhandled { n: 6 }).await.must("publishing");
    alpha.publish(Ping::unkeyed(7)).await.must("publishing");
    probe.wait_for_ns("beta", [3, 5, 7], scene.patience()).await;
    scene.quiet().await;
    let dead = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters");
    assert!(
        dead.is_empty(),
        "skipped events were dead-lettered: {:?}",
        dead.iter()
            .map(|d| (&d.envelope.event_type, &d.info.reason))
            .collect::<Vec<_>>()
    );
    beta.shutdown().await;

    let next = scene
        .build(
            scene
                .builder("beta")
                .subscribe(Tap::everything(&probe, "next")),
            "the next instance of `beta`, handling every event",
        )
        .await;
    alpha
        .publish(Unhandled { n: 100 })
        .await
        .must("publishing the sentinel");
    probe.wait_for_ns("next", [100], scene.patience()).await;
    scene.quiet().await;
    let again: Vec<Seen> = probe
        .labelled("next")
        .into_iter()
        .filter(|s| s.event != Ping::NAME && s.n != 100)
        .collect();
    assert!(
        again.is_empty(),
        "events skipped by the first instance were delivered again: {}",
        describe(&again)
    );
    alpha.shutdown().await;
    next.shutdown().await;
}

/// A v1 event, published by a service that still knows the old contract, reaches the v2
/// handler through the upcaster registered with `Subscription::upcast::<PingV1, Ping>()`;
/// a v2 event of the same name goes straight to it.
pub async fn upcasting(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "upcasting");
    let probe = Probe::new();
    let beta = scene
        .build(
            scene
                .builder("beta")
                .subscribe(Tap::pings(&probe, "beta").upcast::<PingV1, Ping>()),
            "`beta` with an upcaster",
        )
        .await;
    let old = scene
        .build(
            scene.builder("alpha-v1").publishes::<ConfEventsV1>(),
            "the publisher of v1",
        )
        .await;
    let alpha = scene.publisher().await;
    old.publish(PingV1 { n: 1 })
        .await
        .must("publishing a v1 ping");
    alpha
        .publish(Ping::keyed(2, "v2"))
        .await
        .must("publishing a v2 ping");
    let seen = probe.wait_for_ns("beta", [1, 2], scene.patience()).await;
    let v1 = seen.iter().find(|s| s.n == 1).expect("waited for it");
    assert_eq!(
        v1.envelope.version,
        PingV1::VERSION,
        "the v1 ping arrived as version {}",
        v1.envelope.version
    );
    assert_eq!(
        v1.key, UPCAST_KEY,
        "the v1 ping did not go through the upcaster"
    );
    let v2 = seen.iter().find(|s| s.n == 2).expect("waited for it");
    assert_eq!(v2.envelope.version, Ping::VERSION);
    assert_eq!(v2.key, "v2", "the v2 ping was changed on the way");
    for bus in [alpha, old, beta] {
        bus.shutdown().await;
    }
}

/// An event published from a handler with `cx.publish` carries the correlation id on (the
/// handled event's id when it started the flow) and has the handled event's id as its
/// causation id, plus its trace context; its source is the handling service.
pub async fn correlation_flows(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "correlation_flows");
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
    let flow = Uuid::new_v4();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let started = alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing ping 1");
    let continued = alpha
        .publish_with(
            Ping::unkeyed(2),
            PublishOptions::new()
                .correlation_id(flow)
                .traceparent(traceparent),
        )
        .await
        .must("publishing ping 2");
    let seen = probe.wait_for_ns("gamma", [1, 2], scene.patience()).await;
    let pong = |n: u64| {
        &seen
            .iter()
            .find(|s| s.n == n)
            .expect("waited for it")
            .envelope
    };
    assert_eq!(pong(1).source.as_ref(), "beta", "source of the pong");
    assert_eq!(
        pong(1).correlation_id,
        Some(started),
        "a flow started by ping 1 has its id as correlation id"
    );
    assert_eq!(
        pong(1).causation_id,
        Some(started),
        "causation id of pong 1"
    );
    assert_eq!(
        pong(2).correlation_id,
        Some(flow),
        "the correlation id of ping 2 was not carried on"
    );
    assert_eq!(
        pong(2).causation_id,
        Some(continued),
        "causation id of pong 2"
    );
    assert_eq!(
        pong(2).traceparent.as_deref(),
        Some(traceparent),
        "traceparent of pong 2"
    );
    for bus in [alpha, beta, gamma] {
        bus.shutdown().await;
    }
}
