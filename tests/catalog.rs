//! The catalog a bus describes itself with: payload schemas derived from the contract
//! types (or none, said so), subscriptions with versions and upcasts, the retry policy and
//! the transport with its password masked.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidings::catalog::{ServiceCatalog, CATALOG_FORMAT};
use tidings::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "shop.order-placed", version = 2)]
struct OrderPlaced {
    order: u64,
    /// Free text; optional.
    note: Option<String>,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Line {
    sku: String,
    quantity: u32,
}

/// The v1 shape, still read by subscribers through an upcast.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "shop.order-placed", version = 1)]
struct OrderPlacedV1 {
    order: u64,
}

impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        OrderPlaced {
            order: v1.order,
            note: None,
            lines: Vec::new(),
        }
    }
}

/// No `JsonSchema`: still an event, with no schema in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "shop.order-cancelled")]
struct OrderCancelled {
    order: u64,
}

#[derive(Topic)]
#[topic(name = "shop")]
enum ShopEvents {
    OrderPlaced(OrderPlaced),
    OrderCancelled(OrderCancelled),
}

async fn placed(_: OrderPlaced, _: Context<()>) -> Result<(), HandlerError> {
    Ok(())
}

async fn cancelled(_: OrderCancelled, _: Context<()>) -> Result<(), HandlerError> {
    Ok(())
}

#[test]
fn the_derive_finds_a_json_schema_impl_and_says_none_without_one() {
    let schema = OrderPlaced::payload_schema().expect("OrderPlaced implements JsonSchema");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["properties"]["order"]["type"], "integer");
    assert_eq!(schema["required"], json!(["order", "lines"]));
    // Sub-schemas are inlined: one self-contained document per event.
    assert_eq!(
        schema["properties"]["lines"]["items"]["properties"]["sku"]["type"],
        "string"
    );
    assert!(!schema.to_string().contains("$ref"), "{schema}");
    assert_eq!(OrderCancelled::payload_schema(), None);
    assert_eq!(ShopEvents::event_schema("shop.order-placed"), Some(schema));
    assert_eq!(ShopEvents::event_schema("shop.order-cancelled"), None);
    assert_eq!(ShopEvents::event_schema("shop.unknown"), None);
}

#[tokio::test]
async fn a_bus_describes_what_it_publishes_and_handles() {
    let memory = Memory::new();
    let builder = Bus::builder("billing")
        .transport(memory.clone())
        .namespace("test")
        .subscribe(
            Subscription::to::<ShopEvents>()
                .on(placed)
                .on(cancelled)
                .upcast::<OrderPlacedV1, OrderPlaced>()
                .concurrency(4)
                .retry(RetryPolicy::none()),
        );
    let before = builder.catalog();
    let bus = builder.build().await.unwrap();
    assert_eq!(bus.catalog(), &before, "the builder and the bus agree");
    let c = bus.catalog();
    assert_eq!(c.tidings_catalog, CATALOG_FORMAT);
    assert_eq!(c.service, "billing");
    assert_eq!(c.namespace.as_deref(), Some("test"));
    assert_eq!(c.transport.kind.as_deref(), Some("memory"));
    assert_eq!(c.codec, "application/msgpack");
    assert!(c.publishes.is_empty());
    let s = &c.subscriptions[0];
    assert_eq!((s.name.as_str(), s.topic.as_str()), ("billing", "shop"));
    assert_eq!(s.broker_topic, "test.shop");
    assert_eq!(s.concurrency, 4);
    assert_eq!((s.retry.immediate, s.retry.redeliveries), (1, 0));
    let placed = &s.handles[0];
    assert_eq!(
        (
            placed.name.as_str(),
            placed.version,
            placed.type_name.as_str()
        ),
        ("shop.order-placed", 2, "OrderPlaced")
    );
    assert!(placed.schema.is_some());
    assert_eq!(placed.upcasts.len(), 1);
    assert_eq!(placed.upcasts[0].from_version, 1);
    assert_eq!(placed.upcasts[0].type_name, "OrderPlacedV1");
    assert_eq!(
        placed.upcasts[0].schema.as_ref().unwrap()["required"],
        json!(["order"])
    );
    assert!(placed.reads(1) && placed.reads(2) && !placed.reads(3));
    assert_eq!(s.handles[1].schema, None);
    bus.shutdown().await;
}

#[test]
fn the_catalog_round_trips_as_json_and_masks_the_password() {
    let builder = Bus::builder("shop")
        .describe_transport("amqp://guest:s3cret@broker:5672/%2f")
        .publishes::<ShopEvents>()
        .retry(
            RetryPolicy::default()
                .immediate(2)
                .backoff(Duration::from_millis(250), 3.0, Duration::from_secs(60))
                .redeliveries(5),
        );
    let catalog = builder.catalog();
    let text = catalog.to_json();
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(catalog.transport.kind.as_deref(), Some("rabbitmq"));
    assert_eq!(
        catalog.transport.url.as_deref(),
        Some("amqp://guest:***@broker:5672/%2f")
    );
    assert_eq!(ServiceCatalog::from_json(&text).unwrap(), catalog);
    let events = &catalog.publishes[0].events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].version, 2);
    assert!(events[0].schema.is_some() && events[1].schema.is_none());
    assert!(text.ends_with("}\n"));

    let err = ServiceCatalog::from_json("{\"service\": 1}").unwrap_err();
    assert!(err.starts_with("not a tidings catalog: "), "{err}");
    let newer = text.replacen("\"tidings_catalog\": 1", "\"tidings_catalog\": 9", 1);
    let err = ServiceCatalog::from_json(&newer).unwrap_err();
    assert!(err.contains("catalog format 9 is not supported"), "{err}");
}
