//! RabbitMQ-specific behaviour against a real broker (`TIDINGS_RABBITMQ_URL`): topology and
//! names, the AMQP message, confirms and errors, retries through the delay queues, dead
//! letters and replay, poison messages, redelivery of dropped deliveries, quorum queues.

extern crate tidings_core as tidings;

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tidings_core::{
    attrs, Acker, Bus, Context, Envelope, ErrorKind, HandlerError, Replay, RetryPolicy, Subscriber,
    Subscription, SubscriptionSpec, Topology, Transport,
};
use tidings_rabbitmq::{QueueNames, QueueType, RabbitMq, RabbitMqConfig};

use common::{eventually, namespace, raw, OrderCancelled, OrderEvents, OrderPlaced, Seen};

const PATIENCE: Duration = Duration::from_secs(30);

async fn record(e: OrderPlaced, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state().record(e.n, cx.attempt(), cx.redelivered());
    Ok(())
}

async fn queue_exists(conn: &lapin::Connection, name: &str) -> Option<u32> {
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = ch.close(200, "".into()).await;
    found
}

#[tokio::test]
async fn build_declares_the_documented_topology() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let catalog = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
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
    let lending = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
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
    let transport = RabbitMq::connect(&url);
    let topic = format!("{ns}.orders");
    let mut topology = Topology::new("shop");
    topology
        .publishes
        .push(tidings_core::TopicSpec::new(topic.clone(), vec![]));
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
        .transport(RabbitMq::connect(&url))
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
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
async fn an_unreachable_broker_is_a_clear_unavailable_error_without_the_password() {
    // Runs whenever the broker tests run: a closed port on loopback.
    let Some(_) = common::url() else { return };
    let transport = RabbitMq::with_config(
        RabbitMqConfig::new("amqp://guest:hunter2@127.0.0.1:1/%2f")
            .publish_timeout(Duration::from_secs(1)),
    );
    let err = Bus::builder("shop")
        .transport(transport)
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_at_once() {
    let Some(url) = common::url() else { return };
    let bad = url.replacen("guest:guest@", "guest:not-the-password@", 1);
    assert_ne!(bad, url, "expected guest:guest in TIDINGS_RABBITMQ_URL");
    let started = std::time::Instant::now();
    let err = RabbitMq::connect(&bad).connected().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-password"), "{shown}");
    // Refused credentials are not retried until the deadline (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failed_handler_is_retried_through_a_delay_queue() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let failures = Arc::new(AtomicU32::new(0));
    let f = failures.clone();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
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
    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
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
        assert_eq!(queue_exists(&conn, &q).await, Some(0), "delay queue {q}");
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
        .transport(RabbitMq::connect(&url))
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
    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
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
async fn a_message_that_is_not_an_envelope_is_dead_lettered_at_once() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();

    // A foreign publisher: right routing key, no CloudEvents headers.
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("ce_id".into(), AMQPValue::LongString("not-a-uuid".into()));
    headers.insert("origin".into(), AMQPValue::LongString("legacy".into()));
    ch.basic_publish(
        format!("{ns}.orders").as_str().into(),
        "orders.placed".into(),
        BasicPublishOptions::default(),
        b"garbage",
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    bus.publish(OrderPlaced { n: 5 }).await.unwrap();
    eventually(PATIENCE, "the consumer went on to order 5", || {
        seen.runs(5).len() == 1
    })
    .await;

    let letters = sub.dead_letters::<OrderEvents>(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert!(letter.info.reason.contains("ce_id"), "{:?}", letter.info);
    assert_eq!(letter.info.attempts, 0);
    assert_eq!(letter.envelope.payload.as_ref(), b"garbage");
    assert_eq!(
        letter.envelope.header("tidings-original-origin"),
        Some("legacy")
    );
    assert_eq!(seen.distinct(), 1, "the handler never saw the garbage");
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_dropped_unsettled_is_delivered_again() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::connect(&url);
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
async fn many_concurrent_publishes_and_a_large_batch_all_arrive() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
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
        .transport(RabbitMq::with_config(
            RabbitMqConfig::new(&url).max_in_flight(64),
        ))
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
async fn quorum_queues_work_and_count_deliveries() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let transport = RabbitMq::with_config(RabbitMqConfig::new(&url).queue_type(QueueType::Quorum));
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
    let classic = RabbitMq::connect(&url);
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
    let transport = RabbitMq::connect(&url);
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

#[tokio::test]
async fn a_queue_deleted_under_a_running_consumer_is_declared_again() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let bus = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::connect(&url))
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
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
