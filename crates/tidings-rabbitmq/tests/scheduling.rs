//! Scheduled publishing on a real broker (`TIDINGS_RABBITMQ_URL`): an event put back until
//! its time waits in the fixed-TTL wait queues, bucket by bucket, so a short delay never
//! waits behind a longer one published before it, nothing is handled early, and lateness
//! stays within the transport's declared tolerance.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidings_core::transport::Transport;
use tidings_core::{Bus, Context, HandlerError, PublishOptions, RetryPolicy, Subscription};
use tidings_rabbitmq::RabbitMq;

use common::{eventually, namespace, OrderEvents, OrderPlaced, PATIENCE};

/// When each order reached its handler, and on which attempt.
#[derive(Debug, Default, Clone)]
struct Handled {
    inner: Arc<Mutex<HashMap<u64, (SystemTime, u32)>>>,
}

impl Handled {
    fn get(&self, n: u64) -> Option<(SystemTime, u32)> {
        self.inner.lock().unwrap().get(&n).copied()
    }

    fn count(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}

/// A subscriber recording when each order is handled, and a publisher of orders.
async fn buses(url: &str, ns: &str, handled: &Handled, concurrency: usize) -> (Bus, Bus) {
    let sub = Bus::builder("catalog")
        .namespace(ns)
        .transport(RabbitMq::from_url(url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(handled.clone())
                .concurrency(concurrency)
                .on(|e: OrderPlaced, cx: Context<Handled>| async move {
                    let now = SystemTime::now();
                    cx.state()
                        .inner
                        .lock()
                        .unwrap()
                        .entry(e.n)
                        .or_insert((now, cx.attempt()));
                    Ok(())
                }),
        )
        .build()
        .await
        .unwrap();
    let publisher = common::shop(url, ns).await;
    (sub, publisher)
}

/// `delay` from now, to the whole millisecond (the header keeps milliseconds).
fn due_in(delay: Duration) -> SystemTime {
    let since = (SystemTime::now() + delay)
        .duration_since(UNIX_EPOCH)
        .unwrap();
    UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

fn late(handled: SystemTime, due: SystemTime) -> Duration {
    handled
        .duration_since(due)
        .unwrap_or_else(|e| panic!("handled {:?} before its time", e.duration()))
}

/// Per-message TTLs in one delay queue per bucket expired only at the head: a 4.2 s
/// event published after a 7.5 s one (both in the old 8192 ms bucket) was handled at
/// 7.5 s, after it. With fixed-TTL wait queues each is handled on time; the 6 s and 1.5 s
/// pair is checked the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_schedule_is_not_held_behind_a_longer_one_published_before_it() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let handled = Handled::default();
    let (sub, publisher) = buses(&url, &ns, &handled, 1).await;

    // (order, delay), published in this order: each longer one first.
    let plan = [(1, 7_500), (2, 4_200), (3, 6_000), (4, 1_500)];
    let mut due = HashMap::new();
    for (n, ms) in plan {
        let at = due_in(Duration::from_millis(ms));
        due.insert(n, at);
        publisher
            .publish_with(OrderPlaced { n }, PublishOptions::new().deliver_at(at))
            .await
            .unwrap();
    }
    eventually(PATIENCE, "every order handled", || {
        handled.count() == plan.len()
    })
    .await;

    let mut lateness = HashMap::new();
    for (n, ms) in plan {
        let (at, attempt) = handled.get(n).unwrap();
        let late = late(at, due[&n]);
        println!("order {n}, scheduled {ms} ms ahead: handled {late:?} late");
        // Being put back until due is not a delivery attempt.
        assert_eq!(attempt, 1, "order {n}");
        lateness.insert(n, (at, late));
    }
    for (long, short) in [(1, 2), (3, 4)] {
        let (long_at, _) = lateness[&long];
        let (short_at, short_late) = lateness[&short];
        assert!(
            short_at < long_at,
            "order {short} was handled after order {long}, scheduled later and published before it"
        );
        assert!(
            short_late <= Duration::from_secs(2),
            "order {short} was {short_late:?} late"
        );
    }

    publisher.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

/// Many events scheduled over a few seconds and published out of order of their times:
/// none is handled early, and none later than the tolerance the transport declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_scheduled_in_random_order_arrive_within_the_declared_tolerance() {
    let Some(url) = common::url() else { return };
    let tolerance = RabbitMq::from_url(&url)
        .unwrap()
        .capabilities()
        .scheduling
        .tolerance;
    let ns = namespace();
    let handled = Handled::default();
    let (sub, publisher) = buses(&url, &ns, &handled, 16).await;

    const EVENTS: u64 = 300;
    // Delays from 0.5 s to 8 s in a shuffled order (a fixed linear congruential sequence).
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut due = HashMap::new();
    for n in 0..EVENTS {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(500 + (state >> 33) % 7_500);
        let at = due_in(delay);
        due.insert(n, at);
        publisher
            .publish_with(OrderPlaced { n }, PublishOptions::new().deliver_at(at))
            .await
            .unwrap();
    }
    eventually(PATIENCE, "every order handled", || {
        handled.count() == EVENTS as usize
    })
    .await;

    let mut lateness: Vec<Duration> = (0..EVENTS)
        .map(|n| {
            let (at, attempt) = handled.get(n).unwrap();
            assert_eq!(attempt, 1, "order {n}: put back counted as an attempt");
            late(at, due[&n])
        })
        .collect();
    lateness.sort();
    let pick = |q: f64| lateness[((lateness.len() - 1) as f64 * q) as usize];
    println!(
        "lateness of {EVENTS} events: median {:?}, p99 {:?}, max {:?} (tolerance {tolerance:?})",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    assert!(
        pick(1.0) <= tolerance,
        "an event was {:?} late, beyond the declared tolerance of {tolerance:?}",
        pick(1.0)
    );

    publisher.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

/// When each run of a handler began, and its attempt.
type Runs = Arc<Mutex<Vec<(SystemTime, u32)>>>;

/// A failed handler's redelivery after a backoff goes through the same wait queues: the
/// backoffs of 300 ms and 600 ms (first hops in the 256 ms and 512 ms buckets) are waited
/// in full, and not much more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_backoff_is_waited_in_full_and_not_much_more() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let runs: Runs = Arc::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .retry(
            RetryPolicy::default()
                .immediate(1)
                .redeliveries(3)
                .backoff(Duration::from_millis(300), 2.0, Duration::from_secs(2))
                .jitter(false),
        )
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(runs.clone())
                .on(|_: OrderPlaced, cx: Context<Runs>| async move {
                    let mut runs = cx.state().lock().unwrap();
                    runs.push((SystemTime::now(), cx.attempt()));
                    if runs.len() < 3 {
                        return Err(HandlerError::msg("not yet"));
                    }
                    Ok(())
                }),
        )
        .build()
        .await
        .unwrap();
    let publisher = common::shop(&url, &ns).await;
    publisher.publish(OrderPlaced { n: 1 }).await.unwrap();
    eventually(PATIENCE, "three runs", || runs.lock().unwrap().len() == 3).await;

    let runs = runs.lock().unwrap().clone();
    assert_eq!(
        runs.iter().map(|r| r.1).collect::<Vec<_>>(),
        [1, 2, 3],
        "attempts"
    );
    for (i, backoff) in [(1, 300), (2, 600)] {
        let gap = runs[i].0.duration_since(runs[i - 1].0).unwrap();
        println!("backoff {backoff} ms: redelivered after {gap:?}");
        assert!(
            gap >= Duration::from_millis(backoff),
            "redelivered after {gap:?}, before its backoff of {backoff} ms"
        );
        assert!(
            gap <= Duration::from_millis(backoff + 500),
            "redelivered after {gap:?}, well after its backoff of {backoff} ms"
        );
    }

    publisher.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}
