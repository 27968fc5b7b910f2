//! RabbitMQ-specific behaviour against a real broker (`TIDINGS_RABBITMQ_URL`): topology and
//! names, the AMQP message, publishing (confirms, errors, large batches), and a queue
//! deleted under a running consumer.

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use tidings_core::{
    transport::{Topology, Transport},
    Bus, Envelope, ErrorKind, Subscription,
};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

use common::{
    eventually, namespace, queue_exists, raw, record, OrderCancelled, OrderEvents, OrderPlaced,
    Seen, PATIENCE,
};

#[tokio::test]
async fn build_declares_the_documented_topology() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let catalog = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .expect("build");

    let conn = raw(&url).await;
    let work = format!("{ns}.catalog.{ns}.orders");
    assert_eq!(
        queue_exists(&conn, &work).await,
        Some(0),
        "work queue {work}"
    );
    assert_eq!(
        queue_exists(&conn, &format!("{work}.dlq")).await,
        Some(0),
        "dead-letter queue"
    );
    let ch = conn.create_channel().await.unwrap();
    for (exchange, kind) in [
        (format!("{ns}.orders"), lapin::ExchangeKind::Topic),
        (format!("{work}.dlx"), lapin::ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(
            exchange.as_str().into(),
            kind,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("exchange {exchange} missing: {e}"));
    }

    // The binding is per handled event: a cancelled order (no handler) never reaches
    // the queue; a placed order does.
    let lending = common::shop(&url, &ns).await;
    lending.publish(OrderCancelled { n: 1 }).await.unwrap();
    lending.publish(OrderPlaced { n: 2 }).await.unwrap();
    eventually(PATIENCE, "order 2 handled", || seen.runs(2).len() == 1).await;
    catalog.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue_exists(&conn, &work).await,
        Some(0),
        "the cancelled order was routed to the queue"
    );
    lending.teardown().await.unwrap();
    catalog.teardown().await.unwrap();
}

#[tokio::test]
async fn messages_carry_cloudevents_headers_and_amqp_properties() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::from_url(&url).unwrap();
    let topic = format!("{ns}.orders");
    let mut topology = Topology::new("shop");
    topology
        .publishes
        .push(tidings_core::transport::TopicSpec::new(
            topic.clone(),
            vec![],
        ));
    transport.provision(&topology).await.unwrap();

    // A queue of our own, bound to the exchange, to read the raw message.
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    let q = format!("{ns}.raw");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        topic.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let mut env = Envelope::new(
        "orders.placed",
        3,
        "shop",
        "application/json",
        &b"{\"n\":1}"[..],
    );
    env.correlation_id = Some(uuid::Uuid::new_v4());
    env.set_header("tenant", "north");
    transport.publish(&topic, vec![env.clone()]).await.unwrap();

    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.routing_key.as_str(), "orders.placed");
    assert_eq!(d.data, b"{\"n\":1}");
    let p = &d.properties;
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        p.message_id().as_ref().unwrap().as_str(),
        env.id.to_string()
    );
    assert_eq!(
        p.correlation_id().as_ref().unwrap().as_str(),
        env.correlation_id.unwrap().to_string()
    );
    let headers = p.headers().as_ref().unwrap().inner();
    let text = |n: &str| match headers.get(n) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {n}: {other:?}"),
    };
    assert_eq!(text("ce_specversion"), "1.0");
    assert_eq!(text("ce_id"), env.id.to_string());
    assert_eq!(text("ce_type"), "orders.placed");
    assert_eq!(text("ce_source"), "shop");
    assert_eq!(text("ce_version"), "3");
    assert_eq!(
        text("ce_correlationid"),
        env.correlation_id.unwrap().to_string()
    );
    assert_eq!(text("tenant"), "north");
    assert!(text("ce_time").contains('T'));
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    ch.queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();
    transport.teardown(&topology).await.unwrap();
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_not_found_and_harms_nothing() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let bus = common::shop(&url, &ns).await;
    let env = Envelope::new("orders.placed", 1, "shop", "application/json", &b"{}"[..]);
    let err = bus
        .publish_envelopes_to(&format!("{ns}.nowhere"), vec![env])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("nowhere"), "{err}");
    // The publishing channel still works.
    bus.publish(OrderPlaced { n: 7 }).await.unwrap();
    eventually(PATIENCE, "order 7 handled", || seen.runs(7).len() == 1).await;
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_publishes_and_a_large_batch_all_arrive() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record)
                .concurrency(16)
                .prefetch(200),
        )
        .build()
        .await
        .unwrap();
    // A small window, so that the batch is sent as a sliding window.
    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::new(RabbitMqConfig::new(&url).max_in_flight(64)))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    let batch: Vec<_> = (0..2000).map(|n| OrderPlaced { n }).collect();
    let publishing = (2000..2200).map(|n| {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(OrderPlaced { n }).await })
    });
    let tasks: Vec<_> = publishing.collect();
    bus.publish_batch(batch).await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eventually(PATIENCE, "all 2200 orders handled", || {
        seen.distinct() == 2200
    })
    .await;
    assert!(seen.missing(2200).is_empty());
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn a_queue_deleted_under_a_running_consumer_is_declared_again() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let bus = common::shop(&url, &ns).await;
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    let work = format!("{ns}.catalog.{ns}.orders");
    ch.queue_delete(work.as_str().into(), Default::default())
        .await
        .unwrap();
    assert_eq!(queue_exists(&conn, &work).await, None);

    // Events published while the queue is missing go nowhere (no queue is bound): keep
    // publishing until the consumer has declared it again and handles one.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 0;
    while seen.distinct() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue was not declared again"
        );
        bus.publish(OrderPlaced { n }).await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(queue_exists(&conn, &work).await.is_some());
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}
