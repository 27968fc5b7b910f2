//! Provisioning on the local development server: the topic, subscription and rule
//! `build()` creates (or says to create without the Manage right), a refused key, and
//! entities declared again when they vanish.

mod support;
mod things;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{transport::Transport, Bus, Envelope, ErrorKind, Subscription};
use tidings_servicebus::{ServiceBus, ServiceBusConfig};

use support::Raw;
use things::{in_process, record_thing, transport, OtherThing, Seen, ThingHappened, Things};

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
