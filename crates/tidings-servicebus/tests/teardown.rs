//! What a bus created on Service Bus can be listed and deleted (defect 8 of issue 9):
//! `Bus::broker_objects` and `Bus::teardown`, checked behind the transport on the server.

mod support;

use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::{SubscriptionSpec, TopicSpec, Topology, Transport},
    BrokerObject, Bus, Context, HandlerError, Subscription,
};
use tidings_macros::{Event, Topic};
use tidings_servicebus::ServiceBus;

use support::Raw;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "sbteardown.happened", version = 1)]
struct Happened {
    n: u64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "teardown")]
enum Events {
    Happened(Happened),
}

async fn refuse(_: Happened, _: Context<()>) -> Result<(), HandlerError> {
    Err(HandlerError::permanent("refused, to leave a dead letter"))
}

/// Whether a management GET of `path` finds the entity (Service Bus answers a missing one
/// with an empty feed, or 404).
async fn exists(raw: &Raw, path: &str) -> bool {
    let (status, body) = raw
        .call(
            reqwest::Method::GET,
            &format!("{path}?api-version=2017-04"),
            &[],
            Vec::new(),
        )
        .await;
    assert!(status == 200 || status == 404, "{status}: {body}");
    status == 200 && body.contains("<entry")
}

#[test]
fn broker_objects_name_topics_subscriptions_rules_and_dead_letter_subqueues() {
    let transport = ServiceBus::new(support::config()).unwrap();
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(SubscriptionSpec::new(
        "catalog",
        "catalog",
        "lending",
        vec![],
    ));
    topology.publishes.push(TopicSpec::new("orders", vec![]));
    assert_eq!(
        transport.broker_objects(&topology),
        vec![
            BrokerObject::new(
                "dead-letter subqueue",
                "lending/subscriptions/catalog/$DeadLetterQueue"
            ),
            BrokerObject::new("rule", "lending/subscriptions/catalog/rules/tidings"),
            BrokerObject::new("subscription", "lending/subscriptions/catalog"),
            BrokerObject::new("topic", "lending"),
            BrokerObject::new("topic", "orders"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_deletes_the_subscription_and_topic_with_their_dead_letters() {
    if !support::in_process_server() {
        return;
    }
    let namespace = support::unique("td");
    let raw = Raw::new();
    let consumer = Bus::builder("catalog")
        .namespace(namespace.clone())
        .transport(ServiceBus::new(support::config()).unwrap())
        .subscribe(Subscription::to::<Events>().on(refuse))
        .build()
        .await
        .unwrap();
    let producer = Bus::builder("lending")
        .namespace(namespace.clone())
        .transport(ServiceBus::new(support::config()).unwrap())
        .publishes::<Events>()
        .build()
        .await
        .unwrap();
    producer.publish(Happened { n: 1 }).await.unwrap();
    // Wait for the dead letter, so there is something in the subqueue to delete.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while consumer
        .dead_letters::<Events>(10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let objects = consumer.broker_objects();
    let subscription = objects
        .iter()
        .find(|o| o.kind == "subscription")
        .expect("a subscription")
        .name
        .clone();
    let topic = objects
        .iter()
        .find(|o| o.kind == "topic")
        .expect("a topic")
        .name
        .clone();
    assert!(exists(&raw, &format!("/{subscription}")).await);
    assert!(exists(&raw, &format!("/{topic}")).await);

    consumer.teardown().await.unwrap();

    assert!(
        !exists(&raw, &format!("/{subscription}")).await,
        "{subscription} remains"
    );
    assert!(!exists(&raw, &format!("/{topic}")).await, "{topic} remains");
    // The producer's topic is the same one: already gone is fine.
    producer.teardown().await.unwrap();
    // And again.
    consumer.teardown().await.unwrap();
}
