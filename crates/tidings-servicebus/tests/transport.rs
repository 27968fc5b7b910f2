//! The Service Bus transport against the local development server: provisioning, the
//! mapping onto Service Bus messages, lock renewal, the dead-letter subqueue, secrets, and
//! the paths where the azure crate's receive calls would lose or stall messages.

extern crate tidings_core as tidings;

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_messaging_servicebus::service_bus::TopicClient;
use serde::{Deserialize, Serialize};
use tidings_core::{
    attrs, Bus, Context, DeadLetterInfo, Envelope, ErrorKind, HandlerError, Replay, RetryPolicy,
    Subscriber, Subscription, SubscriptionSpec, Transport,
};
use tidings_macros::{Event, Topic};
use tidings_servicebus::{ServiceBus, ServiceBusConfig};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sbtest.thing-happened", version = 1)]
struct ThingHappened {
    n: u64,
    note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sbtest.other-thing", version = 1)]
struct OtherThing {
    n: u64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "things")]
enum Things {
    ThingHappened(ThingHappened),
    OtherThing(OtherThing),
}

/// What handlers saw.
#[derive(Default)]
struct Seen {
    runs: Mutex<Vec<(u64, u32)>>,
    changed: Notify,
}

impl Seen {
    fn record(&self, n: u64, attempt: u32) {
        self.runs.lock().unwrap().push((n, attempt));
        self.changed.notify_waiters();
    }
    fn runs(&self) -> Vec<(u64, u32)> {
        self.runs.lock().unwrap().clone()
    }
    async fn wait_for(&self, count: usize) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.runs.lock().unwrap().len() >= count {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("expected {count} handler runs, saw {:?}", self.runs()));
    }
}

async fn record_thing(e: ThingHappened, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state().record(e.n, cx.attempt());
    Ok(())
}

fn transport() -> ServiceBus {
    ServiceBus::new(support::config()).unwrap()
}

use support::Raw;

fn in_process() -> bool {
    support::in_process_server()
}

#[tokio::test]
async fn build_provisions_topic_subscription_and_label_rule_once() {
    if !in_process() {
        return;
    }
    let ns = support::unique("prov");
    let seen = Arc::new(Seen::default());
    let build = || {
        Bus::builder("catalog")
            .transport(transport())
            .namespace(ns.clone())
            .subscribe(
                Subscription::to::<Things>()
                    .with_shared_state(seen.clone())
                    .on(record_thing),
            )
            .build()
    };
    let bus = build().await.unwrap();
    let raw = Raw::new();
    let topic = format!("{ns}.things");
    let sub = format!("{ns}.catalog");
    assert!(raw
        .get(&format!("/{topic}?api-version=2017-04"))
        .await
        .contains("<TopicDescription"));
    let subscription = raw
        .get(&format!("/{topic}/subscriptions/{sub}?api-version=2017-04"))
        .await;
    assert!(
        subscription.contains("<MaxDeliveryCount>10</MaxDeliveryCount>"),
        "{subscription}"
    );
    let rules = raw
        .get(&format!(
            "/{topic}/subscriptions/{sub}/rules?api-version=2017-04"
        ))
        .await;
    assert!(
        !rules.contains("$Default"),
        "the $Default rule is removed: {rules}"
    );
    assert!(
        rules.contains("((sys.Label IN (&apos;sbtest.thing-happened&apos;) OR sys.Label IS NULL) AND sys.To IS NULL) OR sys.To = &apos;"),
        "{rules}"
    );
    bus.shutdown().await;
    // Again: everything exists, nothing fails.
    build().await.unwrap().shutdown().await;
}

#[tokio::test]
async fn only_handled_events_reach_the_subscription() {
    if !in_process() {
        return;
    }
    let ns = support::unique("route");
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
    lending.publish(OtherThing { n: 1 }).await.unwrap();
    lending
        .publish(ThingHappened {
            n: 2,
            note: "x".into(),
        })
        .await
        .unwrap();
    seen.wait_for(1).await;
    catalog.shutdown().await;
    // The rule kept OtherThing out of the subscription altogether.
    let counts = Raw::new()
        .get(&format!(
            "/{ns}.things/subscriptions/{ns}.catalog?api-version=2017-04"
        ))
        .await;
    assert!(
        counts.contains("<d2p1:ActiveMessageCount>0</d2p1:ActiveMessageCount>"),
        "{counts}"
    );
    assert_eq!(seen.runs(), vec![(2, 1)]);
}

#[tokio::test]
async fn without_manage_rights_build_says_what_to_provision_and_provision_false_works() {
    if !in_process() {
        return;
    }
    let ns = support::unique("rights");
    let app = || {
        ServiceBus::new(
            ServiceBusConfig::new(support::NAMESPACE, support::APP_KEY_NAME, support::APP_KEY)
                .endpoint(support::endpoint()),
        )
        .unwrap()
    };
    let seen = Arc::new(Seen::default());
    let err = Bus::builder("catalog")
        .transport(app())
        .namespace(ns.clone())
        .subscribe(
            Subscription::to::<Things>()
                .with_shared_state(seen.clone())
                .on(record_thing),
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("Manage") && msg.contains(&format!("subscription `{ns}.catalog`")),
        "{msg}"
    );
    assert!(
        msg.contains("sys.Label IN ('sbtest.thing-happened')") && msg.contains("provision(false)"),
        "{msg}"
    );
    assert!(!msg.contains(support::APP_KEY), "{msg}");

    // An administrator provisions (here: a build with the root policy), then the app runs
    // with provisioning off on Send and Listen rights only.
    Bus::builder("catalog")
        .transport(transport())
        .namespace(ns.clone())
        .subscribe(
            Subscription::to::<Things>()
                .with_shared_state(seen.clone())
                .on(record_thing),
        )
        .build()
        .await
        .unwrap()
        .shutdown()
        .await;
    let app = || {
        ServiceBus::new(
            ServiceBusConfig::new(support::NAMESPACE, support::APP_KEY_NAME, support::APP_KEY)
                .endpoint(support::endpoint())
                .provision(false),
        )
        .unwrap()
    };
    let catalog = Bus::builder("catalog")
        .transport(app())
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
        .transport(app())
        .namespace(ns.clone())
        .publishes::<Things>()
        .build()
        .await
        .unwrap();
    lending
        .publish(ThingHappened {
            n: 7,
            note: String::new(),
        })
        .await
        .unwrap();
    seen.wait_for(1).await;
    catalog.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_an_unauthorized_error_that_does_not_show_the_key() {
    let config = support::config();
    let wrong = ServiceBusConfig::new(
        config.namespace(),
        "RootManageSharedAccessKey",
        "wrong-s3cret-key",
    )
    .endpoint(support::endpoint());
    let sb = ServiceBus::new(wrong).unwrap();
    let env = Envelope::new(
        "sbtest.thing-happened",
        1,
        "lending",
        "application/json",
        &b"{}"[..],
    );
    let _ = sb.publish("things", vec![env]).await;
    // Neither the key nor the (cached) SAS token shows.
    let debug = format!("{sb:?}");
    assert!(
        !debug.contains("wrong-s3cret-key") && !debug.contains("SharedAccessSignature"),
        "{debug}"
    );
    let env = Envelope::new(
        "sbtest.thing-happened",
        1,
        "lending",
        "application/json",
        &b"{}"[..],
    );
    let err = sb.publish("things", vec![env]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-s3cret-key"));
}

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

/// An envelope published by someone else straight to the REST API: MessagePack body (not
/// UTF-8), CloudEvents attributes as headers.
async fn publish_raw_msgpack(topic: &str, n: u64) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    let body = rmp_serde::to_vec_named(&ThingHappened {
        n,
        note: "raw".into(),
    })
    .unwrap();
    assert!(
        std::str::from_utf8(&body).is_err(),
        "the body must not be UTF-8"
    );
    let bp = format!(r#"{{"MessageId":"{id}","Label":"sbtest.thing-happened"}}"#);
    let (status, body) = Raw::new()
        .call(
            reqwest::Method::POST,
            &format!("/{topic}/messages"),
            &[
                ("brokerproperties", &bp),
                ("content-type", "application/msgpack"),
                ("ce_source", "elsewhere"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    id
}

#[tokio::test]
async fn non_utf8_bodies_are_delivered_where_the_azure_crate_fails_after_locking() {
    if !in_process() {
        return;
    }
    let ns = support::unique("binary");
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
    let topic = format!("{ns}.things");
    publish_raw_msgpack(&topic, 41).await;
    seen.wait_for(1).await;
    assert_eq!(seen.runs(), vec![(41, 1)]);
    catalog.shutdown().await;

    // The azure crate on the same message: `peek_lock_message2` locks it, then fails to
    // read the body as UTF-8 and returns an error without the lock URI, so the message
    // stays locked until the lock expires.
    let sb = transport();
    publish_raw_msgpack(&topic, 42).await;
    let client = TopicClient::new(
        sb.http_client(),
        support::NAMESPACE,
        topic.clone(),
        support::KEY_NAME,
        support::KEY,
    )
    .unwrap();
    let receiver = client.subscription_receiver(&format!("{ns}.catalog"));
    assert!(receiver
        .peek_lock_message2(Some(Duration::from_secs(1)))
        .await
        .is_err());
    let (status, _) = Raw::new()
        .call(
            reqwest::Method::POST,
            &format!("/{topic}/subscriptions/{ns}.catalog/messages/head?timeout=0"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(
        status, 204,
        "the message is stuck behind the lock the crate lost"
    );
}

#[tokio::test]
async fn no_message_is_not_a_delivery_where_the_azure_crate_reports_success() {
    if !in_process() {
        return;
    }
    let ns = support::unique("empty");
    let sb = transport();
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.things"),
        vec!["sbtest.thing-happened".into()],
    );
    let mut topology = tidings_core::Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    sb.provision(&topology).await.unwrap();

    // The azure crate: `peek_lock_message` answers Ok("") for 204, `peek_lock_message2`
    // answers Ok with status 204 and nothing to settle.
    let client = TopicClient::new(
        sb.http_client(),
        support::NAMESPACE,
        spec.topic.clone(),
        support::KEY_NAME,
        support::KEY,
    )
    .unwrap();
    let receiver = client.subscription_receiver(&spec.name);
    assert_eq!(
        receiver
            .peek_lock_message(Some(Duration::from_secs(0)))
            .await
            .unwrap(),
        ""
    );
    let peeked = receiver
        .peek_lock_message2(Some(Duration::from_secs(0)))
        .await
        .unwrap();
    assert_eq!(u16::from(*peeked.status()), 204);

    // The transport: nothing, no error, for several empty receives.
    let mut subscriber = sb.subscribe(&spec).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), subscriber.next())
            .await
            .is_err()
    );

    // And when the subscription is gone, the 410 is an error, not a delivery.
    let (status, _) = Raw::new()
        .call(
            reqwest::Method::DELETE,
            &format!(
                "/{}/subscriptions/{}?api-version=2017-04",
                spec.topic, spec.name
            ),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);
    let next = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .unwrap();
    match next {
        Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
        Some(Ok(d)) => panic!("a delivery from a deleted subscription: {d:?}"),
        None => panic!("the subscriber ended"),
    }
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
    let mut topology = tidings_core::Topology::new("catalog");
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
        tidings_core::Acker::retry(d.acker, d.envelope, attempt + 1, Duration::ZERO)
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
    tidings_core::Acker::ack(d.acker).await.unwrap();
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
async fn a_deleted_topic_and_subscription_are_declared_again() {
    if !in_process() {
        return;
    }
    let ns = support::unique("again");
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
    // As after a restart of the (in-memory) development server: everything is gone.
    let (status, _) = Raw::new()
        .call(
            reqwest::Method::DELETE,
            &format!("/{ns}.things?api-version=2017-04"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);
    // The consumer notices on its next receive and declares its subscription again.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (status, body) = Raw::new()
                .call(
                    reqwest::Method::GET,
                    &format!("/{ns}.things/subscriptions/{ns}.catalog?api-version=2017-04"),
                    &[],
                    Vec::new(),
                )
                .await;
            if status == 200 && body.contains("<entry") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the subscription is declared again");
    lending
        .publish(ThingHappened {
            n: 9,
            note: String::new(),
        })
        .await
        .unwrap();
    seen.wait_for(1).await;
    assert_eq!(seen.runs(), vec![(9, 1)]);
    catalog.shutdown().await;
}

#[tokio::test]
async fn the_azure_crate_peek_lock_message_loses_the_lock_uri_and_the_message_stalls() {
    if !in_process() {
        return;
    }
    let ns = support::unique("lockuri");
    let sb = transport();
    let spec = SubscriptionSpec::new(
        "catalog",
        format!("{ns}.catalog"),
        format!("{ns}.things"),
        vec!["sbtest.thing-happened".into()],
    );
    let mut topology = tidings_core::Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    sb.provision(&topology).await.unwrap();
    let env = Envelope::new(
        "sbtest.thing-happened",
        1,
        "lending",
        "application/json",
        &br#"{"n":3,"note":""}"#[..],
    );
    sb.publish(&spec.topic, vec![env.clone()]).await.unwrap();
    sb.publish(&spec.topic, vec![env.clone()]).await.unwrap();

    // The crate: the body, and no way to complete or unlock the message.
    let client = TopicClient::new(
        sb.http_client(),
        support::NAMESPACE,
        spec.topic.clone(),
        support::KEY_NAME,
        support::KEY,
    )
    .unwrap();
    let body = client
        .subscription_receiver(&spec.name)
        .peek_lock_message(Some(Duration::from_secs(0)))
        .await
        .unwrap();
    assert_eq!(body, r#"{"n":3,"note":""}"#);

    // The transport: it takes the other copy, completes it by its lock URI, and the
    // subscription is left with only the copy the crate stranded (still locked).
    let mut subscriber = sb.subscribe(&spec).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.envelope.id, env.id);
    tidings_core::Acker::ack(d.acker).await.unwrap();
    drop(subscriber);
    let desc = Raw::new()
        .get(&format!(
            "/{}/subscriptions/{}?api-version=2017-04",
            spec.topic, spec.name
        ))
        .await;
    assert!(
        desc.contains("<d2p1:ActiveMessageCount>1</d2p1:ActiveMessageCount>"),
        "{desc}"
    );
}

#[tokio::test]
async fn without_scheduled_retries_the_bus_waits_in_place_holding_the_lock() {
    let ns = support::unique("inplace");
    let sb = || ServiceBus::new(support::config().scheduled_retries(false)).unwrap();
    assert!(!tidings_core::Transport::capabilities(&sb()).delayed_redelivery);
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
