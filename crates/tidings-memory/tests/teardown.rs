//! What a bus created on the hub can be listed and removed (`broker_objects`, `teardown`).

mod common;

use std::time::Duration;

use common::{env, spec, topology};
use tidings_core::{
    transport::{Acker, Subscriber, TopicSpec, Transport},
    BrokerObject, Bus, Context, DeadLetterInfo, ErrorKind, HandlerError, Subscription,
};
use tidings_memory::Memory;

const A: &str = "lending.book-borrowed";

#[tokio::test]
async fn broker_objects_name_the_topics_queues_and_dead_letter_lists() {
    let memory = Memory::new();
    let mut t = topology(&[&spec("catalog", "lending", &[A])]);
    t.publishes.push(TopicSpec::new("orders", vec![]));
    assert_eq!(
        memory.broker_objects(&t),
        vec![
            BrokerObject::new("dead-letter list", "catalog.lending.dlq"),
            BrokerObject::new("queue", "catalog.lending"),
            BrokerObject::new("topic", "lending"),
            BrokerObject::new("topic", "orders"),
        ]
    );
}

#[tokio::test]
async fn teardown_removes_the_queues_their_envelopes_and_dead_letters_and_is_idempotent() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    let t = topology(&[&catalog]);
    memory.provision(&t).await.unwrap();
    memory
        .publish("lending", vec![env(A), env(A), env(A)])
        .await
        .unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let parked = sub.next().await.unwrap().unwrap();
    let info = DeadLetterInfo::new(
        "bad",
        1,
        "catalog".into(),
        "catalog".into(),
        "lending".into(),
    );
    parked
        .acker
        .dead_letter(parked.envelope.clone(), info)
        .await
        .unwrap();
    let held = sub.next().await.unwrap().unwrap();
    assert_eq!(memory.queues()[0].dead_letters, 1);
    assert_eq!(memory.pending(), 2, "one waiting, one held");

    memory.teardown(&t).await.unwrap();

    assert!(memory.queues().is_empty(), "{:?}", memory.queues());
    assert_eq!(
        memory.subscribe(&catalog).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        memory.dead_letters(&catalog, 10).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The subscriber of the removed queue ends; the delivery it held settles into nothing.
    assert!(sub.next().await.is_none());
    drop(held);
    assert_eq!(memory.pending(), 0);
    tokio::time::timeout(Duration::from_secs(5), memory.idle())
        .await
        .expect("nothing is left pending");
    // The topic is gone: publishing to it reaches nobody.
    memory.publish("lending", vec![env(A)]).await.unwrap();
    assert_eq!(memory.pending(), 0);
    // Again: already gone is fine.
    memory.teardown(&t).await.unwrap();
    // Provisioned again, the queue starts empty.
    memory.provision(&t).await.unwrap();
    assert_eq!(memory.queues()[0].waiting, 0);
    assert_eq!(memory.queues()[0].dead_letters, 0);
}

#[tokio::test]
async fn bus_teardown_removes_what_its_build_created() {
    async fn fail(_: common::Borrowed, _: Context<()>) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no"))
    }
    let memory = Memory::new();
    let catalog = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(Subscription::to::<common::Lending>().on(fail))
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(memory.clone())
        .publishes::<common::Lending>()
        .build()
        .await
        .unwrap();
    lending.publish(common::borrowed(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), memory.idle())
        .await
        .expect("the hub settles");
    assert_eq!(memory.queues().len(), 1);
    assert_eq!(memory.queues()[0].dead_letters, 1);
    assert!(catalog
        .broker_objects()
        .contains(&BrokerObject::new("queue", "catalog.lending")));

    catalog.teardown().await.unwrap();
    assert!(memory.queues().is_empty());
    lending.teardown().await.unwrap();
}
