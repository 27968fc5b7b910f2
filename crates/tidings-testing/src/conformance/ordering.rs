//! Ordering cases: events with one ordering key are handled one at a time, in publish
//! order, even with several handlers in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_core::{Context, Event, HandlerError, RetryPolicy, Subscription};

use super::events::{ConfEvents, Ping};
use super::support::{describe, Must, Probe, Scene, Seen};
use super::TransportFactory;

const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const PER_KEY: u64 = 30;
/// The event that fails twice in [`ordering_per_key_with_retry`]: key `k1`, its 6th event.
const FLAKY: u64 = 5 * KEYS.len() as u64 + 1;

/// State of the ordering handler: the probe, and per key how many handlers run right now.
#[derive(Debug)]
struct Lanes {
    probe: Arc<Probe>,
    in_flight: Mutex<HashMap<String, u32>>,
    overlaps: Mutex<Vec<String>>,
    flaky: bool,
}

async fn handle(e: Ping, cx: Context<Lanes>) -> Result<(), HandlerError> {
    let lanes = cx.state();
    {
        let mut in_flight = lanes.in_flight.lock().expect("lanes lock");
        let running = in_flight.entry(e.key.clone()).or_default();
        *running += 1;
        if *running > 1 {
            lanes.overlaps.lock().expect("lanes lock").push(format!(
                "ping {} of key {} started while {} other(s) of the key ran",
                e.n,
                e.key,
                *running - 1
            ));
        }
    }
    // Shake the order: handlers of different keys finish in random order.
    let pause = rand::random_range(0..=2_000u64);
    tokio::time::sleep(Duration::from_micros(pause)).await;
    let fail = lanes.flaky && e.n == FLAKY && cx.attempt() <= 2;
    let label = if fail { "failed" } else { "handled" };
    lanes
        .probe
        .record(Seen::of(label, Ping::NAME, e.n, &e.key, &cx));
    *lanes
        .in_flight
        .lock()
        .expect("lanes lock")
        .get_mut(&e.key)
        .expect("entered above") -= 1;
    if fail {
        return Err(HandlerError::msg(format!(
            "conformance handler fails ping {} on attempt {}",
            e.n,
            cx.attempt()
        )));
    }
    Ok(())
}

async fn ordering(f: &dyn TransportFactory, case: &'static str, flaky: bool) {
    let scene = Scene::new(f, case);
    if !scene.needs("ordering_key", |c| c.ordering_key).await {
        return;
    }
    let probe = Probe::new();
    let lanes = Arc::new(Lanes {
        probe: probe.clone(),
        in_flight: Mutex::default(),
        overlaps: Mutex::default(),
        flaky,
    });
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(lanes.clone())
                    .concurrency(8)
                    .retry(RetryPolicy::default().immediate(1).redeliveries(3).backoff(
                        Duration::from_millis(10),
                        2.0,
                        Duration::from_millis(40),
                    ))
                    .on(handle),
            ),
            "`beta` with concurrency 8",
        )
        .await;
    let alpha = scene.publisher().await;
    // Publish order: round by round, the keys interleaved; n numbers the events 0.. in
    // that order, so per key the numbers must be handled increasing.
    let total = PER_KEY * KEYS.len() as u64;
    for n in 0..total {
        let key = KEYS[(n % KEYS.len() as u64) as usize];
        alpha
            .publish(Ping::keyed(n, key))
            .await
            .must("publishing a keyed ping");
    }
    probe
        .wait_for_ns("handled", 0..total, scene.patience())
        .await;
    scene.quiet().await;

    let overlaps = lanes.overlaps.lock().expect("lanes lock").clone();
    assert!(
        overlaps.is_empty(),
        "events of one key ran at the same time: {}",
        overlaps.join("; ")
    );
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in probe.labelled("handled") {
        per_key.entry(s.key.clone()).or_default().push(s.n);
    }
    for (key, handled) in &per_key {
        let published: Vec<u64> = (0..total)
            .filter(|n| KEYS[(n % KEYS.len() as u64) as usize] == key)
            .collect();
        assert_eq!(
            handled, &published,
            "key {key}: handled in this order (left), published in this order (right)"
        );
    }
    if flaky {
        let failed = probe.labelled("failed");
        let attempts: Vec<u32> = failed.iter().map(|s| s.attempt).collect();
        assert!(
            failed.iter().all(|s| s.n == FLAKY) && attempts == [1, 2],
            "ping {FLAKY} should fail on attempts 1 and 2 only; {}",
            describe(&failed)
        );
        let handled = probe
            .labelled("handled")
            .into_iter()
            .find(|s| s.n == FLAKY)
            .expect("waited for it");
        assert_eq!(
            handled.attempt, 3,
            "ping {FLAKY} should succeed on attempt 3"
        );
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// With `.concurrency(8)`, 3 keys × 30 events published in order are handled per key one
/// at a time and in publish order (handlers sleep a random 0–2 ms to shake the order).
pub async fn ordering_per_key(f: &dyn TransportFactory) {
    ordering(f, "ordering_per_key", false).await;
}

/// Like [`ordering_per_key`], while one event of a key fails on its first two runs and
/// succeeds on the third (retry policy: 1 immediate run, 3 redeliveries): the events after
/// it in its key wait for it.
pub async fn ordering_per_key_with_retry(f: &dyn TransportFactory) {
    ordering(f, "ordering_per_key_with_retry", true).await;
}
