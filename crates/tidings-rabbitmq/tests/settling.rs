//! Settling deliveries on a real broker (`TIDINGS_RABBITMQ_URL`): retries through the wait
//! queues, dead letters (listing without removal, replay), redelivery of a delivery dropped
//! unsettled, and the quorum queues' delivery count.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    transport::{attrs, Acker, Subscriber, SubscriptionSpec, Topology, Transport},
    Bus, Context, Envelope, ErrorKind, HandlerError, Replay, RetryPolicy, Subscription,
};
use tidings_rabbitmq::{QueueNames, QueueType, RabbitMq, RabbitMqConfig};

use common::{eventually, namespace, queue_exists, raw, OrderEvents, OrderPlaced, Seen, PATIENCE};

#[tokio::test]
async fn a_failed_handler_is_retried_through_the_wait_queues() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let failures = Arc::new(AtomicU32::new(0));
    let f = failures.clone();
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
                .with_state(seen.clone())
                .on(move |e: OrderPlaced, cx: Context<Seen>| {
                    let f = f.clone();
                    async move {
                        cx.state().record(e.n, cx.attempt(), cx.redelivered());
                        if f.fetch_add(1, Ordering::SeqCst) < 2 {
                            return Err(HandlerError::msg("not yet"));
                        }
                        Ok(())
                    }
                }),
        )
        .build()
        .await
        .unwrap();
    let bus = common::shop(&url, &ns).await;
    bus.publish(OrderPlaced { n: 1 }).await.unwrap();
    eventually(PATIENCE, "three runs of order 1", || {
        seen.runs(1).len() == 3
    })
    .await;
    let runs = seen.runs(1);
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "attempts {runs:?}"
    );
    assert!(
        !runs[0].1 && runs[1].1 && runs[2].1,
        "redelivered flags {runs:?}"
    );

    // The delays went through the documented bucket queues, now empty.
    let conn = raw(&url).await;
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.orders"),
        vec![],
    );
    let names = QueueNames::of(&spec);
    for delay in [300, 600] {
        let q = names.delay(Duration::from_millis(delay));
        assert_eq!(queue_exists(&conn, &q).await, Some(0), "wait queue {q}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.runs(1).len(), 3, "handled again after success");
    assert!(sub
        .dead_letters::<OrderEvents>(10)
        .await
        .unwrap()
        .is_empty());
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_listed_without_removal_and_replayed() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .retry(RetryPolicy::none())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(move |e: OrderPlaced, cx: Context<Seen>| {
                    let h = h.clone();
                    async move {
                        cx.state().record(e.n, cx.attempt(), cx.redelivered());
                        if h.load(Ordering::SeqCst) {
                            Ok(())
                        } else {
                            Err(HandlerError::msg("database is down"))
                        }
                    }
                }),
        )
        .build()
        .await
        .unwrap();
    let bus = common::shop(&url, &ns).await;
    let ids = bus
        .publish_batch([
            OrderPlaced { n: 1 },
            OrderPlaced { n: 2 },
            OrderPlaced { n: 3 },
        ])
        .await
        .unwrap();

    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = sub.dead_letters::<OrderEvents>(10).await.unwrap();
        if letters.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(
        letters.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        ids,
        "oldest first"
    );
    let info = &letters[0].info;
    assert!(info.reason.contains("database is down"), "{info:?}");
    assert_eq!(info.attempts, 1);
    assert_eq!(info.service.as_ref(), "catalog");
    assert_eq!(info.topic.as_ref(), format!("{ns}.orders"));
    // Listing did not remove anything, and a limit is a limit.
    assert_eq!(sub.dead_letters::<OrderEvents>(10).await.unwrap().len(), 3);
    assert_eq!(sub.dead_letters::<OrderEvents>(2).await.unwrap().len(), 2);

    healthy.store(true, Ordering::SeqCst);
    let moved = sub
        .replay_dead_letters::<OrderEvents>(Replay::Ids(vec![ids[1]]))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    eventually(PATIENCE, "order 2 handled after replay", || {
        seen.runs(2).len() == 2
    })
    .await;
    let left = sub.dead_letters::<OrderEvents>(10).await.unwrap();
    assert_eq!(
        left.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    // The replayed envelope arrived without the dead-letter headers, as a first attempt.
    assert_eq!(seen.runs(2)[1].0, 1);

    assert_eq!(
        sub.replay_dead_letters::<OrderEvents>(Replay::All)
            .await
            .unwrap(),
        2
    );
    eventually(PATIENCE, "orders 1 and 3 handled after replay", || {
        seen.runs(1).len() == 2 && seen.runs(3).len() == 2
    })
    .await;
    assert!(sub
        .dead_letters::<OrderEvents>(10)
        .await
        .unwrap()
        .is_empty());
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_dropped_unsettled_is_delivered_again() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::from_url(&url).unwrap();
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.orders"),
        vec!["orders.placed".into()],
    );
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    transport.provision(&topology).await.unwrap();
    let env = Envelope::new("orders.placed", 1, "shop", "application/json", &b"{}"[..]);
    transport
        .publish(&spec.topic, vec![env.clone()])
        .await
        .unwrap();

    let mut subscriber = transport.subscribe(&spec).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.envelope.id, env.id);
    assert_eq!(first.attempt, 1);
    assert!(!first.redelivered);
    drop(first);
    let again = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.envelope.id, env.id);
    assert!(again.redelivered);
    again.acker.ack().await.map_err(|(e, _)| e).unwrap();
    // Acknowledged: not delivered a third time, even to a new subscriber.
    drop(subscriber);
    let mut fresh = transport.subscribe(&spec).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(700), fresh.next())
            .await
            .is_err(),
        "delivered again after the ack"
    );
    drop(fresh);
    transport.teardown(&topology).await.unwrap();
}

#[tokio::test]
async fn quorum_queues_work_and_count_deliveries() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::new(RabbitMqConfig::new(&url).queue_type(QueueType::Quorum));
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.orders"),
        vec!["orders.placed".into()],
    );
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    transport.provision(&topology).await.unwrap();
    let env = Envelope::new("orders.placed", 1, "shop", "application/json", &b"{}"[..]);
    transport
        .publish(&spec.topic, vec![env.clone()])
        .await
        .unwrap();

    let mut subscriber = transport.subscribe(&spec).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    drop(first); // requeued: the quorum queue counts it
    let again = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.envelope.id, env.id);
    assert_eq!(again.attempt, 2, "x-delivery-count adds to the attempt");
    again.acker.ack().await.map_err(|(e, _)| e).unwrap();

    // The same names as classic queues cannot be redeclared as classic: a clear error.
    let classic = RabbitMq::from_url(&url).unwrap();
    let err = classic.provision(&topology).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains(&spec.queue_name()), "{err}");
    drop(subscriber);
    transport.teardown(&topology).await.unwrap();
}

#[tokio::test]
async fn retry_and_dead_letter_from_the_acker_keep_the_envelope() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::from_url(&url).unwrap();
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.orders"),
        vec!["orders.placed".into()],
    );
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    transport.provision(&topology).await.unwrap();
    let mut env = Envelope::new(
        "orders.placed",
        1,
        "shop",
        "application/json",
        &b"{\"n\":1}"[..],
    );
    env.set_header("tenant", "north");
    transport
        .publish(&spec.topic, vec![env.clone()])
        .await
        .unwrap();

    let mut subscriber = transport.subscribe(&spec).await.unwrap();
    let d = subscriber.next().await.unwrap().unwrap();
    d.acker
        .retry(d.envelope.clone(), 4, Duration::from_millis(50))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let d = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.envelope.id, env.id);
    assert_eq!(d.attempt, 4);
    assert_eq!(d.envelope.header("tenant"), Some("north"));
    assert_eq!(d.envelope.payload, env.payload);
    let info = tidings_core::DeadLetterInfo::new(
        "gave up",
        4,
        "catalog".into(),
        spec.name.as_str().into(),
        spec.topic.as_str().into(),
    );
    d.acker
        .dead_letter(d.envelope.clone(), info)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let letters = transport.dead_letters(&spec, 5).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, env.id);
    assert_eq!(
        letters[0].envelope.header(attrs::DLQ_REASON),
        Some("gave up")
    );
    assert_eq!(letters[0].envelope.header(attrs::ATTEMPT), None);
    assert_eq!(letters[0].info.attempts, 4);
    drop(subscriber);
    transport.teardown(&topology).await.unwrap();
}
