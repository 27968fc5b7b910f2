//! What a bus created on the broker: `Bus::broker_objects` names it, `Bus::teardown`
//! deletes it (wait queues, the delay queues of earlier versions, and dead letters
//! included), and a second teardown is not an error. Checked behind the transport's back
//! with lapin passive declares. Needs `TIDINGS_RABBITMQ_URL`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tidings_core::{Bus, Context, HandlerError, RetryPolicy, Subscription};
use tidings_rabbitmq::RabbitMq;

use common::{eventually, namespace, raw, OrderEvents, OrderPlaced, Seen};

const PATIENCE: Duration = Duration::from_secs(30);

/// Whether the queue `name` exists (a passive declare on a channel of its own).
async fn queue_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = ch.close(200, "".into()).await;
    found
}

/// Whether the exchange `name` exists.
async fn exchange_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = ch.close(200, "".into()).await;
    found
}

#[tokio::test]
async fn teardown_deletes_every_object_the_bus_created() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    // Fails the first time, so a wait queue is declared, and dead-letters order 2.
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    let catalog = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(move |e: OrderPlaced, cx: Context<Seen>| {
                    let flag = flag.clone();
                    async move {
                        cx.state().record(e.n, cx.attempt(), cx.redelivered());
                        if e.n == 2 {
                            return Err(HandlerError::permanent(std::io::Error::other(
                                "order 2 is refused",
                            )));
                        }
                        if !flag.swap(true, Ordering::SeqCst) {
                            return Err(HandlerError::transient(std::io::Error::other(
                                "first try fails",
                            )));
                        }
                        Ok(())
                    }
                })
                .retry(
                    RetryPolicy::default()
                        .immediate(1)
                        .redeliveries(1)
                        .backoff(Duration::from_millis(100), 2.0, Duration::from_millis(100))
                        .jitter(false),
                ),
        )
        .build()
        .await
        .expect("building the subscriber");
    let shop = Bus::builder("shop")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .publishes::<OrderEvents>()
        .build()
        .await
        .expect("building the publisher");
    shop.publish(OrderPlaced { n: 1 }).await.unwrap();
    eventually(PATIENCE, "order 1 handled on its second delivery", || {
        seen.runs(1).len() == 2
    })
    .await;
    shop.publish(OrderPlaced { n: 2 }).await.unwrap();
    eventually(PATIENCE, "order 2 dead-lettered", || {
        seen.runs(2).len() == 1
    })
    .await;

    let work = format!("{ns}.catalog.{ns}.orders");
    let objects: Vec<String> = catalog
        .broker_objects()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        objects,
        [
            format!("exchange `{ns}.orders`"),
            format!("queue `{work}`"),
            format!("exchange `{work}.dlx`"),
            format!("queue `{work}.dlq`"),
            format!("delay queues `{work}.wait.*ms`"),
        ],
    );
    assert_eq!(
        shop.broker_objects().len(),
        1,
        "{:?}",
        shop.broker_objects()
    );

    let conn = raw(&url).await;
    // The 100 ms retry delay waited in the 128 ms bucket (within the slack of 32 ms).
    let wait = format!("{work}.wait.128ms");
    // A delay queue as earlier versions declared it, left by an old deployment.
    let legacy = format!("{work}.delay.128ms");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        legacy.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = ch.close(200, "".into()).await;
    let queues = [work.clone(), format!("{work}.dlq"), wait, legacy];
    let exchanges = [format!("{ns}.orders"), format!("{work}.dlx")];
    for q in &queues {
        assert!(queue_exists(&conn, q).await, "queue {q} was not created");
    }
    for x in &exchanges {
        assert!(
            exchange_exists(&conn, x).await,
            "exchange {x} was not created"
        );
    }

    catalog
        .teardown()
        .await
        .expect("tearing down the subscriber");
    shop.teardown().await.expect("tearing down the publisher");
    for q in &queues {
        assert!(!queue_exists(&conn, q).await, "queue {q} is still there");
    }
    for x in &exchanges {
        assert!(
            !exchange_exists(&conn, x).await,
            "exchange {x} is still there"
        );
    }
    // Already gone is fine.
    catalog.teardown().await.expect("a second teardown");
}

/// What `tidings tail` does: watch through a temporary subscription, stop watching, and
/// remove the subscription at once. Stopping must cancel the consumer before its channel
/// closes: a `basic.cancel` that reaches the broker after the close is a connection error
/// (`CHANNEL_ERROR - expected 'channel.open'`) that fails whatever else is on the
/// connection, here the removal. Repeated, since it was a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_removed_right_after_its_watcher_stops_leaves_the_connection_whole() {
    use futures::StreamExt;
    use tidings_core::transport::{DynTransport, SubscriptionSpec, Topology, Transport};
    use tidings_core::Envelope;

    let Some(url) = common::url() else { return };
    let ns = namespace();
    let rabbitmq = RabbitMq::from_url(&url).unwrap();
    let topic = format!("{ns}.watched");
    let mut publisher = Topology::new("watcher");
    publisher
        .publishes
        .push(tidings_core::transport::TopicSpec::new(&topic, Vec::new()));
    Transport::provision(&rabbitmq, &publisher).await.unwrap();
    for round in 0..20 {
        let spec = SubscriptionSpec::new(
            "watcher",
            format!("{ns}.tail-{round}"),
            &topic,
            vec!["watched.ping".into()],
        );
        let mut topology = Topology::new("watcher");
        topology.subscriptions.push(spec.clone());
        Transport::provision(&rabbitmq, &topology).await.unwrap();
        let mut watched = rabbitmq.watch_dyn(&spec).await.unwrap();
        let envelope = Envelope::new(
            "watched.ping",
            1,
            "watcher",
            "application/json",
            bytes::Bytes::from_static(b"{}"),
        );
        Transport::publish(&rabbitmq, &topic, vec![envelope])
            .await
            .unwrap();
        let seen = tokio::time::timeout(PATIENCE, watched.next())
            .await
            .expect("the ping arrives");
        seen.expect("a delivery").expect("not an error");
        drop(watched);
        rabbitmq
            .remove_subscription_dyn(&spec)
            .await
            .unwrap_or_else(|e| panic!("round {round}: removing the subscription failed: {e}"));
    }
    Transport::teardown(&rabbitmq, &publisher).await.unwrap();
}
