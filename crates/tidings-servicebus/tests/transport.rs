//! The Service Bus transport against the local development server: lock renewal, the
//! dead-letter subqueue (ours and Service Bus's own), batches, and retries in place.

mod support;
mod things;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    transport::{attrs, Subscriber, SubscriptionSpec, Transport},
    Bus, Context, DeadLetterInfo, Envelope, HandlerError, Replay, RetryPolicy, Subscription,
};
use tidings_servicebus::ServiceBus;
use tokio::sync::Notify;

use support::Raw;
use things::{in_process, record_thing, transport, Seen, ThingHappened, Things};

#[tokio::test]
async fn a_handler_running_past_the_lock_duration_keeps_its_lock() {
    if !in_process() {
        return;
    }
    let ns = support::unique("renew");
    let config = || support::config().lock_duration(Duration::from_secs(2));
    let runs = Arc::new(AtomicU32::new(0));
    let done = Arc::new(Notify::new());
    async fn slow(
        e: ThingHappened,
        cx: Context<(Arc<AtomicU32>, Arc<Notify>)>,
    ) -> Result<(), HandlerError> {
        cx.state().0.fetch_add(1, Ordering::SeqCst);
        // Two and a half lock durations.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(e.n, 1);
        cx.state().1.notify_one();
        Ok(())
    }
    let catalog = Bus::builder("catalog")
        .transport(ServiceBus::new(config()).unwrap())
        .namespace(ns.clone())
        .subscribe(
            Subscription::to::<Things>()
                .with_state((runs.clone(), done.clone()))
                .on(slow)
                .concurrency(2),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(ServiceBus::new(config()).unwrap())
        .namespace(ns.clone())
        .publishes::<Things>()
        .build()
        .await
        .unwrap();
    lending
        .publish(ThingHappened {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), done.notified())
        .await
        .unwrap();
    // Had the lock lapsed, the second consumer slot would have received it again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    catalog.shutdown().await;
}

#[tokio::test]
async fn dead_letters_land_in_the_dead_letter_subqueue_with_reason_and_attempts_and_replay() {
    if !in_process() {
        return;
    }
    let ns = support::unique("dlq");
    let seen = Arc::new(Seen::default());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    async fn flaky(
        e: ThingHappened,
        cx: Context<(Arc<Seen>, Arc<std::sync::atomic::AtomicBool>)>,
    ) -> Result<(), HandlerError> {
        cx.state().0.record(e.n, cx.attempt());
        if cx.state().1.load(Ordering::SeqCst) {
            return Err(HandlerError::msg("the shelf is on fire"));
        }
        Ok(())
    }
    let catalog = Bus::builder("catalog")
        .transport(transport())
        .namespace(ns.clone())
        .retry(
            RetryPolicy::default()
                .immediate(1)
                .redeliveries(1)
                .backoff(Duration::from_millis(300), 2.0, Duration::from_secs(1))
                .jitter(false),
        )
        .subscribe(
            Subscription::to::<Things>()
                .with_state((seen.clone(), fail.clone()))
                .on(flaky),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(transport())
        .namespace(ns.clone())
        .publishes::<Things>()
        .build()
        .await
        .unwrap();
    let id = lending
        .publish(ThingHappened {
            n: 5,
            note: String::new(),
        })
        .await
        .unwrap();
    seen.wait_for(2).await;
    // Delivery 1, then the scheduled re-send as attempt 2.
    assert_eq!(seen.runs(), vec![(5, 1), (5, 2)]);
    let dead = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let dead = catalog.dead_letters::<Things>(10).await.unwrap();
            if !dead.is_empty() {
                return dead;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.id, id);
    assert_eq!(dead[0].info.attempts, 2);
    assert!(
        dead[0].info.reason.contains("the shelf is on fire"),
        "{}",
        dead[0].info.reason
    );
    assert_eq!(dead[0].info.topic.as_ref(), format!("{ns}.things"));
    // Behind the transport: it is in Service Bus's own dead-letter subqueue.
    let desc = Raw::new()
        .get(&format!(
            "/{ns}.things/subscriptions/{ns}.catalog?api-version=2017-04"
        ))
        .await;
    assert!(
        desc.contains("<d2p1:DeadLetterMessageCount>1</d2p1:DeadLetterMessageCount>"),
        "{desc}"
    );
    assert!(
        desc.contains("<d2p1:ActiveMessageCount>0</d2p1:ActiveMessageCount>"),
        "{desc}"
    );
    // Listing does not remove.
    assert_eq!(catalog.dead_letters::<Things>(10).await.unwrap().len(), 1);

    fail.store(false, Ordering::SeqCst);
    assert_eq!(
        catalog
            .replay_dead_letters::<Things>(Replay::All)
            .await
            .unwrap(),
        1
    );
    seen.wait_for(3).await;
    assert_eq!(seen.runs()[2].0, 5);
    assert!(catalog.dead_letters::<Things>(10).await.unwrap().is_empty());
    catalog.shutdown().await;
}

#[tokio::test]
async fn messages_parked_by_service_bus_itself_are_listed_with_its_reason() {
    if !in_process() {
        return;
    }
    // A subscription with MaxDeliveryCount 2, abandoned twice by hand.
    let ns = support::unique("maxdc");
    let sb = ServiceBus::new(support::config().max_delivery_count(2)).unwrap();
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.things"),
        vec!["sbtest.thing-happened".into()],
    );
    let mut topology = tidings_core::transport::Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    sb.provision(&topology).await.unwrap();
    let env = Envelope::new(
        "sbtest.thing-happened",
        1,
        "lending",
        "application/json",
        &br#"{"n":1,"note":""}"#[..],
    );
    sb.publish(&spec.topic, vec![env.clone()]).await.unwrap();
    let mut subscriber = sb.subscribe(&spec).await.unwrap();
    for attempt in 1..=2 {
        let d = subscriber.next().await.unwrap().unwrap();
        assert_eq!(
            d.attempt, attempt,
            "DeliveryCount is the delivery's attempt"
        );
        tidings_core::transport::Acker::retry(d.acker, d.envelope, attempt + 1, Duration::ZERO)
            .await
            .unwrap();
    }
    drop(subscriber);
    let dead = sb.dead_letters(&spec, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.id, env.id);
    assert!(
        dead[0].info.reason.contains("MaxDeliveryCountExceeded"),
        "{}",
        dead[0].info.reason
    );
    assert_eq!(
        DeadLetterInfo::from_headers(&dead[0].envelope)
            .unwrap()
            .reason,
        dead[0].info.reason
    );
    assert_eq!(
        sb.replay_dead_letters(&spec, &Replay::Ids(vec![uuid::Uuid::new_v4()]))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sb.replay_dead_letters(&spec, &Replay::Ids(vec![env.id]))
            .await
            .unwrap(),
        1
    );
    let mut subscriber = sb.subscribe(&spec).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.envelope.id, env.id);
    assert!(
        d.envelope.header(attrs::DLQ_REASON).is_none()
            && d.envelope.header("deadletterreason").is_none()
    );
    tidings_core::transport::Acker::ack(d.acker).await.unwrap();
}

#[tokio::test]
async fn batches_publish_many_envelopes_in_order() {
    if !in_process() {
        return;
    }
    let ns = support::unique("batch");
    let seen = Arc::new(Seen::default());
    let catalog = Bus::builder("catalog")
        .transport(transport())
        .namespace(ns.clone())
        .subscribe(
            Subscription::to::<Things>()
                .with_shared_state(seen.clone())
                .on(record_thing),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(transport())
        .namespace(ns.clone())
        .publishes::<Things>()
        .build()
        .await
        .unwrap();
    let events: Vec<ThingHappened> = (0..40)
        .map(|n| ThingHappened {
            n,
            note: "x".repeat(10_000),
        })
        .collect();
    lending.publish_batch(events).await.unwrap();
    seen.wait_for(40).await;
    let ns_seen: Vec<u64> = seen.runs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        ns_seen,
        (0..40).collect::<Vec<_>>(),
        "one receiver, sequence order"
    );
    catalog.shutdown().await;
}

#[tokio::test]
async fn without_scheduled_retries_the_bus_waits_in_place_holding_the_lock() {
    let ns = support::unique("inplace");
    let sb = || ServiceBus::new(support::config().scheduled_retries(false)).unwrap();
    assert!(!tidings_core::transport::Transport::capabilities(&sb()).delayed_redelivery);
    let seen = Arc::new(Seen::default());
    async fn fails_once(e: ThingHappened, cx: Context<Arc<Seen>>) -> Result<(), HandlerError> {
        cx.state().record(e.n, cx.attempt());
        if cx.attempt() == 1 {
            return Err(HandlerError::msg("not yet"));
        }
        Ok(())
    }
    let catalog = Bus::builder("catalog")
        .transport(sb())
        .namespace(ns.clone())
        .retry(
            RetryPolicy::default()
                .immediate(1)
                .redeliveries(2)
                .backoff(Duration::from_millis(200), 2.0, Duration::from_secs(1))
                .jitter(false),
        )
        .subscribe(
            Subscription::to::<Things>()
                .with_state(seen.clone())
                .on(fails_once),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(sb())
        .namespace(ns.clone())
        .publishes::<Things>()
        .build()
        .await
        .unwrap();
    lending
        .publish(ThingHappened {
            n: 3,
            note: String::new(),
        })
        .await
        .unwrap();
    seen.wait_for(2).await;
    assert_eq!(seen.runs(), vec![(3, 1), (3, 2)]);
    assert!(catalog.dead_letters::<Things>(10).await.unwrap().is_empty());
    catalog.shutdown().await;
}
