//! The bus's own guarantees on the memory transport: build-time validation, the
//! concurrency limit, back-pressure, codecs, handler shapes, flow ids, domain events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::prelude::*;
#[cfg(feature = "json")]
use tidings::Codec;
use tidings::{ErrorKind, MemoryConfig};
use tidings_testing::TestBus;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, tidings::Event)]
#[event(name = "orders.order-placed", version = 1)]
struct OrderPlaced {
    order: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, tidings::Event)]
#[event(name = "orders.order-shipped", version = 1)]
struct OrderShipped {
    order: u64,
}

#[derive(tidings::Topic)]
#[topic(name = "orders")]
enum OrderEvents {
    OrderPlaced(OrderPlaced),
    OrderShipped(OrderShipped),
}

/// Another context that (wrongly) reuses a wire name of `orders`.
#[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
#[event(name = "orders.order-placed", version = 1)]
struct BillingOrderPlaced {
    order: u64,
}

#[derive(tidings::Topic)]
#[topic(name = "billing")]
enum BillingEvents {
    BillingOrderPlaced(BillingOrderPlaced),
}

async fn ignore(_: OrderPlaced, _: Context) -> Result<(), HandlerError> {
    Ok(())
}

async fn ignore_billing(_: BillingOrderPlaced, _: Context) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test]
async fn derived_contracts_carry_names_versions_and_topic() {
    assert_eq!(OrderPlaced::NAME, "orders.order-placed");
    assert_eq!(OrderPlaced::VERSION, 1);
    assert_eq!(OrderEvents::NAME, "orders");
    let names: Vec<_> = OrderEvents::events().iter().map(|e| e.name).collect();
    assert_eq!(names, ["orders.order-placed", "orders.order-shipped"]);
}

#[tokio::test]
async fn build_refuses_two_events_sharing_a_wire_name() {
    let err = Bus::builder("audit")
        .transport(Memory::new())
        .subscribe(Subscription::to::<OrderEvents>().on(ignore))
        .subscribe(Subscription::to::<BillingEvents>().on(ignore_billing))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.message()
            .contains("share the wire name `orders.order-placed`"),
        "{err}"
    );
}

#[tokio::test]
async fn build_refuses_a_subscription_without_handlers_and_duplicate_handlers() {
    let err = Bus::builder("audit")
        .transport(Memory::new())
        .subscribe(Subscription::to::<OrderEvents>())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("has no handlers"), "{err}");

    let err = Bus::builder("audit")
        .transport(Memory::new())
        .subscribe(Subscription::to::<OrderEvents>().on(ignore).on(ignore))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("two handlers for event `orders.order-placed`"),
        "{err}"
    );
}

#[tokio::test]
async fn build_refuses_a_missing_transport_and_a_bad_service_name() {
    let err = Bus::builder("audit").build().await.unwrap_err();
    assert!(err.message().contains("no transport"), "{err}");
    let err = Bus::builder("has space")
        .transport(Memory::new())
        .build()
        .await
        .unwrap_err();
    assert!(err.message().contains("service name"), "{err}");
}

#[tokio::test]
async fn publishing_an_undeclared_topic_says_what_to_declare() {
    let bus = Bus::builder("shipping")
        .transport(Memory::new())
        .build()
        .await
        .unwrap();
    let err = bus.publish(OrderPlaced { order: 1 }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotDeclared);
    assert!(
        err.message().contains(".publishes::<OrderEvents>()"),
        "{err}"
    );
}

#[tokio::test]
async fn transport_url_picks_the_memory_transport_and_rejects_unknown_schemes() {
    let url = format!("memory://{}", uuid::Uuid::new_v4());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let consumer = Bus::builder("audit")
        .transport_url(url.clone())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_shared_state(counter)
                .on(|_: OrderPlaced, cx: Context<AtomicUsize>| async move {
                    cx.state().fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }),
        )
        .build()
        .await
        .unwrap();
    // A second service on the same URL shares the hub.
    let publisher = Bus::builder("orders")
        .transport_url(url)
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    publisher.publish(OrderPlaced { order: 1 }).await.unwrap();
    wait_until(|| seen.load(Ordering::SeqCst) == 1).await;
    consumer.shutdown().await;

    let err = Bus::builder("x")
        .transport_url("smtp://mail")
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("memory://"), "{err}");
}

#[tokio::test]
async fn a_type_implementing_handler_gets_state_and_metadata() {
    struct Shipper {
        shipped: Arc<Mutex<Vec<(u64, u32)>>>,
    }
    impl tidings::Handler<OrderShipped, ()> for Shipper {
        async fn handle(&self, event: OrderShipped, cx: Context) -> Result<(), HandlerError> {
            self.shipped
                .lock()
                .unwrap()
                .push((event.order, cx.attempt()));
            assert_eq!(cx.source(), "orders");
            Ok(())
        }
    }
    let shipped = Arc::new(Mutex::new(Vec::new()));
    let shipper = Shipper {
        shipped: shipped.clone(),
    };
    let harness = TestBus::new();
    let _consumer = harness
        .builder("audit")
        .subscribe(Subscription::to::<OrderEvents>().on(shipper))
        .build()
        .await
        .unwrap();
    let orders = harness
        .builder("orders")
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    orders.publish(OrderShipped { order: 9 }).await.unwrap();
    // The topic enum publishes too.
    orders
        .publish(OrderEvents::OrderShipped(OrderShipped { order: 10 }))
        .await
        .unwrap();
    harness.settle().await;
    assert_eq!(*shipped.lock().unwrap(), vec![(9, 1), (10, 1)]);
}

#[tokio::test]
async fn a_handler_publishing_carries_correlation_and_causation() {
    let harness = TestBus::new();
    let _shipping = harness
        .builder("shipping")
        .publishes::<OrderEvents>()
        .subscribe(
            Subscription::to::<OrderEvents>().on(|e: OrderPlaced, cx: Context| async move {
                cx.publish(OrderShipped { order: e.order }).await?;
                Ok(())
            }),
        )
        .build()
        .await
        .unwrap();
    let orders = harness
        .builder("orders")
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    let placed = orders.publish(OrderPlaced { order: 3 }).await.unwrap();
    harness.settle().await;
    let shipped = harness
        .envelopes()
        .into_iter()
        .find(|e| e.event_type == OrderShipped::NAME)
        .expect("shipped was published");
    assert_eq!(shipped.causation_id, Some(placed));
    assert_eq!(shipped.correlation_id, Some(placed));
    assert_eq!(shipped.source.as_ref(), "shipping");
}

#[tokio::test]
async fn no_more_handlers_run_at_once_than_the_concurrency_limit() {
    struct Gauge {
        now: AtomicUsize,
        max: AtomicUsize,
        done: AtomicUsize,
    }
    let gauge = Arc::new(Gauge {
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let harness = TestBus::new();
    let _consumer = harness
        .builder("audit")
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_shared_state(gauge.clone())
                .on(|_: OrderPlaced, cx: Context<Gauge>| async move {
                    let g = cx.state();
                    let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                    g.max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    g.now.fetch_sub(1, Ordering::SeqCst);
                    g.done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .concurrency(3),
        )
        .build()
        .await
        .unwrap();
    let orders = harness
        .builder("orders")
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    orders
        .publish_batch((0..30).map(|order| OrderPlaced { order }))
        .await
        .unwrap();
    harness.settle().await;
    assert_eq!(gauge.done.load(Ordering::SeqCst), 30);
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        3,
        "the limit is reached and never exceeded"
    );
}

#[tokio::test]
async fn a_slow_handler_slows_the_publisher_instead_of_growing_memory() {
    let gate = Arc::new(Semaphore::new(0));
    let memory = Memory::with_config(MemoryConfig::default().queue_capacity(4));
    let _consumer = Bus::builder("audit")
        .transport(memory.clone())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_shared_state(gate.clone())
                .on(|_: OrderPlaced, cx: Context<Semaphore>| async move {
                    cx.state().acquire().await.unwrap().forget();
                    Ok(())
                }),
        )
        .build()
        .await
        .unwrap();
    let orders = Bus::builder("orders")
        .transport(memory.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    // One event in the handler, four in the queue: the sixth publish must wait.
    for order in 0..5 {
        orders.publish(OrderPlaced { order }).await.unwrap();
    }
    let sixth = orders.publish(OrderPlaced { order: 5 });
    tokio::pin!(sixth);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        futures::poll!(sixth.as_mut()).is_pending(),
        "publish waits while the queue is full"
    );
    gate.add_permits(100);
    sixth.await.unwrap();
    memory.idle().await;
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_publishers_and_msgpack_subscribers_understand_each_other() {
    let harness = TestBus::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let _consumer = harness
        .builder("audit")
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_shared_state(sink)
                .on(
                    |e: OrderPlaced, cx: Context<Mutex<Vec<(u64, String)>>>| async move {
                        let ct = cx.envelope().content_type.to_string();
                        cx.state().lock().unwrap().push((e.order, ct));
                        Ok(())
                    },
                ),
        )
        .build()
        .await
        .unwrap();
    let json = harness
        .builder("orders")
        .codec(Codec::Json)
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    json.publish(OrderPlaced { order: 1 }).await.unwrap();
    harness.settle().await;
    assert_eq!(
        *got.lock().unwrap(),
        vec![(1, "application/json".to_string())]
    );
    let raw = &harness.envelopes()[0];
    assert_eq!(std::str::from_utf8(&raw.payload).unwrap(), r#"{"order":1}"#);
}

#[tokio::test]
async fn oversized_events_are_refused_at_publish() {
    #[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
    #[event(name = "blobs.blob-stored", version = 1)]
    struct BlobStored {
        bytes: Vec<u8>,
    }
    #[derive(tidings::Topic)]
    #[topic(name = "blobs")]
    enum BlobEvents {
        BlobStored(BlobStored),
    }
    let bus = Bus::builder("blobs")
        .transport(Memory::new())
        .decode_limits(tidings::DecodeLimits {
            max_size: 1024,
            max_depth: 32,
        })
        .publishes::<BlobEvents>()
        .build()
        .await
        .unwrap();
    let err = bus
        .publish(BlobStored {
            bytes: vec![7; 4096],
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    assert!(
        err.message().contains("over the limit of 1024 bytes"),
        "{err}"
    );
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test]
async fn dead_letters_of_a_named_subscription_are_listed_and_replayed_by_name() {
    let memory = Memory::new();
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handled = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (fixed.clone(), handled.clone());
    let audit = Bus::builder("audit")
        .namespace("staging")
        .transport(memory.clone())
        .retry(RetryPolicy::none())
        // Two subscriptions of one service to one topic: the second is named.
        .subscribe(Subscription::to::<OrderEvents>().on(ignore))
        .subscribe(
            Subscription::to::<OrderEvents>()
                .named("audit-shipping")
                .on(move |_: OrderShipped, _: Context| {
                    let (flag, count) = (flag.clone(), count.clone());
                    async move {
                        if !flag.load(Ordering::SeqCst) {
                            return Err(HandlerError::msg("shipping ledger offline"));
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }),
        )
        .build()
        .await
        .unwrap();
    let orders = Bus::builder("orders")
        .namespace("staging")
        .transport(memory.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    orders.publish(OrderShipped { order: 1 }).await.unwrap();
    memory.idle().await;

    let err = audit.dead_letters::<OrderEvents>(10).await.unwrap_err();
    assert!(err.message().contains("several subscriptions"), "{err}");
    let dead = audit
        .dead_letters_named::<OrderEvents>("audit-shipping", 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].info.subscription.as_ref(), "staging.audit-shipping");
    assert!(dead[0].info.reason.contains("shipping ledger offline"));

    fixed.store(true, Ordering::SeqCst);
    let replayed = audit
        .replay_dead_letters_named::<OrderEvents>("audit-shipping", Replay::All)
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    memory.idle().await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    audit.shutdown().await;
}
