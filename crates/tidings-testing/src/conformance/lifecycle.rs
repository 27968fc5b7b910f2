//! Lifecycle cases: shutdown drains, and the errors of publishing and building wrongly.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{Context, Envelope, ErrorKind, Event, HandlerError, Subscription};
use tokio::sync::Semaphore;

use super::events::{ClashEvents, ConfEvents, Ping, Stray};
use super::support::{describe, tap_ping, Must, Probe, Scene, Seen, Tap};
use super::TransportFactory;

/// State of the draining handler: the probe, and a gate the blocked events wait at.
#[derive(Debug)]
struct Gate {
    probe: Arc<Probe>,
    open: Semaphore,
    blocked: Vec<u64>,
}

async fn gated(e: Ping, cx: Context<Gate>) -> Result<(), HandlerError> {
    let gate = cx.state();
    gate.probe
        .record(Seen::of("started", Ping::NAME, e.n, &e.key, &cx));
    if gate.blocked.contains(&e.n) {
        let _pass = gate.open.acquire().await.expect("gate never closed");
        // Still busy a little after the gate opens, so a shutdown that does not wait
        // returns before this handler ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.probe
        .record(Seen::of("finished", Ping::NAME, e.n, &e.key, &cx));
    Ok(())
}

async fn drain(f: &dyn TransportFactory, concurrency: usize, blocked: Vec<u64>) {
    let scene = Scene::new(f, "shutdown_drains");
    let probe = Probe::new();
    let gate = Arc::new(Gate {
        probe: probe.clone(),
        open: Semaphore::new(0),
        blocked: blocked.clone(),
    });
    let beta = scene
        .build(
            scene.builder("beta").publishes::<ConfEvents>().subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(gate.clone())
                    .concurrency(concurrency)
                    .on(gated),
            ),
            "`beta` with gated handlers",
        )
        .await;
    let alpha = scene.publisher().await;
    for &n in &blocked {
        alpha
            .publish(Ping::unkeyed(n))
            .await
            .must("publishing a ping");
    }
    probe
        .wait_for_ns("started", blocked.iter().copied(), scene.patience())
        .await;

    let shutting = tokio::spawn({
        let beta = beta.clone();
        async move { beta.shutdown().await }
    });
    scene
        .poll("the shutdown to begin", || async {
            if beta.is_shut_down() {
                Ok(())
            } else {
                Err("bus not shut down yet")
            }
        })
        .await;
    gate.open.add_permits(blocked.len());
    shutting.await.expect("shutdown panicked");
    let finished = probe.labelled("finished");
    for n in &blocked {
        assert!(
            finished.iter().any(|s| s.n == *n),
            "concurrency {concurrency}: shutdown() returned before the handler of ping {n}, in flight when it was called, finished; {}",
            describe(&probe.snapshot())
        );
    }

    let started = probe.labelled("started").len();
    let after: Vec<u64> = (100..103).collect();
    for &n in &after {
        alpha
            .publish(Ping::unkeyed(n))
            .await
            .must("publishing after shutdown");
    }
    scene.quiet().await;
    let started_after: Vec<Seen> = probe
        .labelled("started")
        .into_iter()
        .skip(started)
        .collect();
    assert!(
        started_after.is_empty(),
        "concurrency {concurrency}: handlers started after shutdown() returned: {}",
        describe(&started_after)
    );

    let err = beta
        .publish(Ping::unkeyed(200))
        .await
        .expect_err("publishing on a shut-down bus must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::Closed,
        "publish after shutdown: {err}"
    );
    let env = Envelope::new(
        Ping::NAME,
        Ping::VERSION,
        "beta",
        "application/msgpack",
        vec![0x80u8],
    );
    let err = beta
        .publish_envelopes_to(&scene.topic(), vec![env])
        .await
        .expect_err("publishing envelopes on a shut-down bus must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::Closed,
        "publish_envelopes_to after shutdown: {err}"
    );

    let next = scene
        .build(
            scene.builder("beta").subscribe(Tap::pings(&probe, "next")),
            "the next instance of `beta`",
        )
        .await;
    probe
        .wait_for_ns("next", after.iter().copied(), scene.patience())
        .await;
    alpha.shutdown().await;
    next.shutdown().await;
}

/// `shutdown()` waits for the handlers in flight when it is called (they have finished
/// when it returns), no handler starts after it returns (events published afterwards stay
/// unhandled by that bus, and the next instance of the service gets them), and publishing
/// on the shut-down bus fails with `ErrorKind::Closed`. Checked with concurrency 1 and 4.
pub async fn shutdown_drains(f: &dyn TransportFactory) {
    drain(f, 1, vec![1]).await;
    drain(f, 4, vec![1, 2]).await;
}

/// Publishing an event of a topic the service did not declare with `publishes::<T>()`
/// fails with `ErrorKind::NotDeclared` and a message that says what to add; so does
/// publishing from a bus that only subscribes.
pub async fn publish_not_declared(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "publish_not_declared");
    let alpha = scene.publisher().await;
    let err = alpha
        .publish(Stray { n: 1 })
        .await
        .expect_err("publishing an undeclared topic must fail");
    assert_eq!(err.kind(), ErrorKind::NotDeclared, "{err}");
    assert!(
        err.message().contains(".publishes::<StrayEvents>()"),
        "the message should say what to add: {err}"
    );
    let err = alpha
        .publish_batch([Stray { n: 2 }])
        .await
        .expect_err("publishing a batch of an undeclared topic must fail");
    assert_eq!(err.kind(), ErrorKind::NotDeclared, "{err}");

    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let err = beta
        .publish(Ping::unkeyed(3))
        .await
        .expect_err("publishing from a bus that did not declare the topic must fail");
    assert_eq!(err.kind(), ErrorKind::NotDeclared, "{err}");
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// `build()` fails with `ErrorKind::Config` and a message that says what to do for a
/// subscription without handlers, two handlers for one event in one subscription, and two
/// events with one wire name among the topics a service knows.
pub async fn build_rejects_bad_registrations(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "build_rejects_bad_registrations");
    let probe = Probe::new();
    let checks = [
        (
            "a subscription without handlers",
            scene
                .builder("beta")
                .subscribe(Subscription::to::<ConfEvents>()),
            vec!["no handlers", ".on("],
        ),
        (
            "two handlers for one event",
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_state(Tap::new(&probe, "beta"))
                    .on(tap_ping)
                    .on(tap_ping),
            ),
            vec!["two handlers", Ping::NAME, ".named("],
        ),
        (
            "two events with one wire name",
            scene
                .builder("alpha")
                .publishes::<ConfEvents>()
                .publishes::<ClashEvents>(),
            vec!["share the wire name", Ping::NAME],
        ),
    ];
    for (what, builder, words) in checks {
        let err = builder
            .build()
            .await
            .expect_err(&format!("build() must refuse {what}"));
        assert_eq!(err.kind(), ErrorKind::Config, "{what}: {err}");
        for word in words {
            assert!(
                err.message().contains(word),
                "{what}: the message should mention {word:?}: {err}"
            );
        }
    }
    assert!(probe.is_empty());
}

/// `Bus::teardown` deletes what `build()` created, with what it still held: an event
/// left in a stopped subscription is gone when the same buses are built again, a second
/// teardown is no error, and the rebuilt buses work (topology declared anew).
pub async fn teardown_removes_topology(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "teardown_removes_topology");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let objects = beta.broker_objects();
    assert!(
        !objects.is_empty(),
        "broker_objects names nothing for a bus with a subscription"
    );
    beta.shutdown().await;
    alpha
        .publish(Ping::unkeyed(1))
        .await
        .must("publishing to the stopped subscription");
    beta.teardown().await.must("tearing down `beta`");
    alpha.teardown().await.must("tearing down `alpha`");
    beta.teardown()
        .await
        .must("tearing down `beta` a second time (what is gone is no error)");

    let beta = scene.subscriber("beta", &probe).await;
    assert_eq!(
        beta.broker_objects(),
        objects,
        "the same bus names the same broker objects"
    );
    let alpha = scene.publisher().await;
    alpha
        .publish(Ping::unkeyed(2))
        .await
        .must("publishing after the teardown");
    probe.wait_for_ns("beta", [2], scene.patience()).await;
    scene.quiet().await;
    let stale: Vec<Seen> = probe.snapshot().into_iter().filter(|s| s.n == 1).collect();
    assert!(
        stale.is_empty(),
        "the event left in the torn-down subscription came back: {}",
        describe(&stale)
    );
    beta.teardown().await.must("tearing down `beta` at the end");
    alpha
        .teardown()
        .await
        .must("tearing down `alpha` at the end");
}
