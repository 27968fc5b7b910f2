//! The paths where the azure crate's receive calls would lose or stall messages, next to
//! the transport's behaviour on the same server.

mod support;
mod things;

use std::sync::Arc;
use std::time::Duration;

use azure_messaging_servicebus::service_bus::TopicClient;
use tidings_core::{
    transport::{Subscriber, SubscriptionSpec, Transport},
    Bus, Envelope, ErrorKind, Subscription,
};

use support::Raw;
use things::{in_process, record_thing, transport, Seen, ThingHappened, Things};

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
    publish_raw_msgpack(&topic, 42).await;
    let client = TopicClient::new(
        support::azure_http_client(),
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
    let mut topology = tidings_core::transport::Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    sb.provision(&topology).await.unwrap();

    // The azure crate: `peek_lock_message` answers Ok("") for 204, `peek_lock_message2`
    // answers Ok with status 204 and nothing to settle.
    let client = TopicClient::new(
        support::azure_http_client(),
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
    let mut topology = tidings_core::transport::Topology::new("catalog");
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
        support::azure_http_client(),
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
    tidings_core::transport::Acker::ack(d.acker).await.unwrap();
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
