//! Domain events published as integration events by the domain event queue
//! (`EventQueueBuilder::publish_converted`), on the memory transport: a converter returning
//! `None` publishes nothing, the correlation id the domain event was queued with runs on,
//! and a conversion the bus cannot publish is a failure `drain` reports.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::domain::{Converters, EventQueue};
use tidings::Memory;
use tidings::{Bus, Context, Event, HandlerError, PublishOptions, Subscription, Topic};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "orders.order-placed", version = 1)]
struct OrderPlaced {
    order: u32,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "orders")]
enum OrderEvents {
    OrderPlaced(OrderPlaced),
}

/// Published to a topic the ordering bus does not declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "audit.noted", version = 1)]
struct Noted {
    what: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "audit")]
enum AuditEvents {
    Noted(Noted),
}

/// The ordering context's rich domain events.
#[derive(Debug, Clone)]
enum OrderingDomainEvent {
    Placed { order: u32, internal_note: String },
    DraftSaved,
}

fn converters() -> Converters<OrderingDomainEvent> {
    Converters::new().convert(|e: &OrderingDomainEvent| match e {
        OrderingDomainEvent::Placed { order, .. } => Some(OrderPlaced { order: *order }),
        OrderingDomainEvent::DraftSaved => None,
    })
}

type Seen = Mutex<Vec<(u32, Option<Uuid>)>>;

async fn record(e: OrderPlaced, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state()
        .lock()
        .unwrap()
        .push((e.order, cx.correlation_id()));
    Ok(())
}

async fn buses(hub: &Memory) -> (Bus, Bus, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let billing = Bus::builder("billing")
        .transport(hub.clone())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_shared_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let ordering = Bus::builder("ordering")
        .transport(hub.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    (ordering, billing, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_a_converter_returns_is_published_with_the_flows_correlation_id() {
    let hub = Memory::new();
    let (ordering, billing, seen) = buses(&hub).await;
    let queue = EventQueue::builder()
        .publish_converted(&ordering, converters())
        .start();
    let correlation = Uuid::new_v4();
    let flow = PublishOptions::new().correlation_id(correlation);
    queue
        .enqueue_with(OrderingDomainEvent::DraftSaved, flow.clone())
        .await
        .unwrap();
    let placed = OrderingDomainEvent::Placed {
        order: 2,
        internal_note: "rush".into(),
    };
    queue.enqueue_with(placed, flow).await.unwrap();
    queue.drain().await.expect("both handled");
    // The draft was queued first: had it been published, it would have arrived first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "order 2 never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.idle().await;
    assert_eq!(*seen.lock().unwrap(), vec![(2, Some(correlation))]);
    ordering.shutdown().await;
    billing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_the_bus_cannot_publish_is_a_failure_drain_reports() {
    let hub = Memory::new();
    let (ordering, billing, seen) = buses(&hub).await;
    let to_audit = Converters::new().convert(|e: &OrderingDomainEvent| match e {
        OrderingDomainEvent::Placed { internal_note, .. } => Some(AuditEvents::Noted(Noted {
            what: internal_note.clone(),
        })),
        OrderingDomainEvent::DraftSaved => None,
    });
    let queue = EventQueue::builder()
        .publish_converted(&ordering, to_audit)
        .start();
    let placed = OrderingDomainEvent::Placed {
        order: 3,
        internal_note: "x".into(),
    };
    queue.enqueue(placed).await.unwrap();
    let failure = queue
        .drain()
        .await
        .expect_err("the ordering bus does not declare `audit`");
    assert!(failure.to_string().contains("audit"), "{failure}");
    queue
        .enqueue(OrderingDomainEvent::DraftSaved)
        .await
        .unwrap();
    queue.drain().await.expect("the queue goes on");
    hub.idle().await;
    assert!(seen.lock().unwrap().is_empty());
    ordering.shutdown().await;
    billing.shutdown().await;
}
