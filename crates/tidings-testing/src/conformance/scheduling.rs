//! Scheduled publishing: events published with a time are handled no earlier than it and
//! within the transport's declared tolerance after it, whatever order their times come in.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tidings_core::transport::DELIVER_AT;
use tidings_core::{ErrorKind, PublishOptions};

use super::adversarial::{adversary, headers_of};
use super::events::Ping;
use super::failure::dead_letters_until;
use super::support::{Must, Probe, Scene, Seen, Tap};
use super::{RawMessage, TransportFactory};

/// What a loaded test machine may add to a transport's declared tolerance (two cores
/// running several suites at once stall a runtime for a second at times). A transport that
/// holds an event back behind one due later is caught by the order of the two, not by
/// this bound.
const GRACE: Duration = Duration::from_secs(5);

/// When an event may be handled, and when it should have been by, before the tolerance:
/// its time, or when its publish returned if that was later.
type Due = (SystemTime, SystemTime);

/// Check that every run in `seen` came no earlier than its event's time in `due` and, with
/// a `tolerance`, no later than it (plus [`GRACE`]) after the event was ready; returns the
/// largest lateness.
fn check_times(
    case: &str,
    seen: &[Seen],
    due: &BTreeMap<u64, Due>,
    tolerance: Option<Duration>,
) -> Duration {
    let mut latest = Duration::ZERO;
    for s in seen {
        let Some((at, ready)) = due.get(&s.n) else {
            continue;
        };
        if let Err(early) = s.at.duration_since(*at) {
            panic!(
                "{case}: ping {} was handled {:?} before its time",
                s.n,
                early.duration()
            );
        }
        let late = s.at.duration_since(*ready).unwrap_or_default();
        latest = latest.max(late);
        let Some(tolerance) = tolerance else {
            continue;
        };
        assert!(
            late <= tolerance + GRACE,
            "{case}: ping {} was handled {late:?} after its time, beyond the declared tolerance of {tolerance:?} (plus {GRACE:?} for a loaded machine)",
            s.n
        );
    }
    latest
}

/// Events scheduled a little ahead are handled no earlier than their time and within the
/// declared tolerance after it, counted as their first attempt: one due later published
/// before one due sooner does not hold it back; a time that has passed is handled at once;
/// a keyed one leaves its key's order (the key's next event, due at once, does not wait for
/// it) on transports with delayed redelivery; a message sent with the broker's own client carrying a time is held back too, and
/// one whose time cannot be read is dead-lettered naming the header. A time beyond the
/// transport's maximum is refused on publish.
pub async fn scheduled_delivery(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "scheduled_delivery");
    let adversary = adversary(f, scene.case);
    let capabilities = scene.capabilities().await;
    let tolerance = capabilities.scheduling.tolerance;
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let now = SystemTime::now();
    let mut due = BTreeMap::new();
    let mut schedule = |n: u64, after: Duration| {
        due.insert(n, (now + after, now + after));
        PublishOptions::new().deliver_at(now + after)
    };
    let later = schedule(1, Duration::from_millis(2500));
    let sooner = schedule(2, Duration::from_millis(1000));
    let keyed = schedule(3, Duration::from_millis(1500));
    alpha
        .publish_with(Ping::unkeyed(1), later)
        .await
        .must("publishing ping 1 for in 2.5 s");
    alpha
        .publish_with(Ping::unkeyed(2), sooner)
        .await
        .must("publishing ping 2 for in 1 s");
    alpha
        .publish_with(
            Ping::unkeyed(4),
            PublishOptions::new().deliver_at(now - Duration::from_secs(60)),
        )
        .await
        .must("publishing ping 4 for a minute ago");
    alpha
        .publish_with(Ping::keyed(3, "k"), keyed)
        .await
        .must("publishing ping 3 for in 1.5 s");
    alpha
        .publish(Ping::keyed(5, "k"))
        .await
        .must("publishing ping 5 after it, same key");

    // Sent with the broker's own client: the headers tidings would write, the time set by
    // hand on the second.
    let raw = |n: u64, deliver_at: SystemTime, tweak: Option<&str>| {
        let mut env = alpha
            .envelope(
                &Ping::unkeyed(n),
                PublishOptions::new().deliver_at(deliver_at),
            )
            .must("encoding a ping");
        if let Some(value) = tweak {
            env.set_header(DELIVER_AT, value);
        }
        (
            env.id,
            RawMessage {
                headers: headers_of(&env),
                payload: env.payload.to_vec(),
                key: None,
            },
        )
    };
    let raw_at = now + Duration::from_millis(1200);
    due.insert(6, (raw_at, raw_at));
    let (_, held) = raw(6, raw_at, None);
    let (bad_id, bad) = raw(7, raw_at, Some("next tuesday"));
    for message in [held, bad] {
        adversary
            .inject(&scene.topic(), message)
            .await
            .must("injecting a scheduled raw message with the broker's own client");
    }

    let seen = probe
        .wait_for_ns("beta", [1, 2, 3, 4, 5, 6], scene.patience())
        .await;
    let latest = check_times(scene.case, &seen, &due, Some(tolerance));
    println!(
        "{}: latest {latest:?} after its time (tolerance {tolerance:?})",
        scene.case
    );
    let first = |n: u64| seen.iter().find(|s| s.n == n).expect("waited for it");
    for s in &seen {
        assert_eq!(
            s.attempt, 1,
            "{}: ping {} was held back as a failed attempt: {s}",
            scene.case, s.n
        );
    }
    assert!(
        first(2).at < first(1).at,
        "{}: ping 2, due sooner, was handled after ping 1, published before it but due later",
        scene.case
    );
    assert!(
        first(4).at < first(2).at,
        "{}: ping 4, scheduled in the past, waited behind ping 2",
        scene.case
    );
    if capabilities.delayed_redelivery {
        assert!(
            first(5).at < first(3).at,
            "{}: ping 5 waited for ping 3, scheduled for later with the same key (a scheduled event leaves its key's order)",
            scene.case
        );
    }
    let dead = dead_letters_until(
        &scene,
        &beta,
        "the raw message with an unreadable time",
        |d| d.iter().any(|d| d.envelope.id == bad_id),
    )
    .await;
    let reason = &dead
        .iter()
        .find(|d| d.envelope.id == bad_id)
        .expect("polled for it")
        .info
        .reason;
    assert!(
        reason.contains(DELIVER_AT) && reason.contains("next tuesday"),
        "{}: the dead letter's reason does not name the header and its value: {reason}",
        scene.case
    );
    assert!(
        !probe.snapshot().iter().any(|s| s.n == 7),
        "{}: the handler ran for the message with an unreadable time",
        scene.case
    );

    if let Some(max) = capabilities.scheduling.max_delay {
        let err = alpha
            .publish_at(
                Ping::unkeyed(8),
                SystemTime::now() + max + Duration::from_secs(3600),
            )
            .await
            .expect_err("publishing beyond the transport's maximum delay must fail");
        assert_eq!(err.kind(), ErrorKind::Config, "{}: {err}", scene.case);
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// 10,000 events scheduled over the next minute, published in an order unrelated to
/// their times, to a subscription with 64 handlers in flight: every one is handled, none
/// before its time, none lost.
pub async fn scheduled_ten_thousand(f: &dyn TransportFactory) {
    const N: u64 = 10_000;
    const SPREAD_MS: u64 = 60_000;
    let scene = Scene::new(f, "scheduled_ten_thousand");
    let tolerance = scene.capabilities().await.scheduling.tolerance;
    let probe = Probe::new();
    // Many in flight, as a subscription sized for such a stream would be: most events
    // arrive early, to be put back.
    let beta = scene
        .build(
            scene
                .builder("beta")
                .subscribe(Tap::pings(&probe, "beta").concurrency(64)),
            "the subscriber `beta`",
        )
        .await;
    let alpha = scene.publisher().await;
    let start = SystemTime::now() + Duration::from_secs(2);
    // A permutation of the minute: consecutive events are about 37 s apart.
    let times: BTreeMap<u64, SystemTime> = (0..N)
        .map(|n| {
            (
                n,
                start + Duration::from_millis(n * 7_919 % N * SPREAD_MS / N),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let publishing = futures::stream::iter(times)
        .map(|(n, at)| {
            let alpha = alpha.clone();
            async move {
                alpha
                    .publish_with(Ping::unkeyed(n), PublishOptions::new().deliver_at(at))
                    .await
                    .map(|_| (n, (at, at.max(SystemTime::now()))))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    // An event published after its time (publishing 10,000 takes a while) is ready once
    // published.
    let due = publishing
        .into_iter()
        .map(|r| r.must("publishing a scheduled ping"))
        .collect::<BTreeMap<_, _>>();
    println!("{}: {N} published in {:?}", scene.case, started.elapsed());
    let seen = probe
        .wait_for_ns(
            "beta",
            0..N,
            Duration::from_millis(SPREAD_MS) + Duration::from_secs(2) + scene.patience(),
        )
        .await;
    // How late they come is the subscriber's throughput as much as the broker's timers
    // (10,000 publishes compete with the deliveries); the tolerance is checked by
    // `scheduled_delivery`, the lateness printed here.
    let latest = check_times(scene.case, &seen, &due, None);
    println!(
        "{}: {N} handled ({} runs), latest {latest:?} after it was ready (tolerance {tolerance:?})",
        scene.case,
        seen.len()
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}
