//! The dead-letter dashboard inside a service's own axum app: a billing service whose
//! handler fails for good on orders noted `fail...`, so they become dead letters to read,
//! fix and replay in the browser.
//!
//! ```text
//! cargo run --example dashboard --features dashboard                 # memory transport
//! cargo run --example dashboard --features dashboard,rabbitmq -- amqp://guest:guest@127.0.0.1:5672/%2f
//! open http://127.0.0.1:8080/dead-letters   (user: any, password: the token printed)
//! ```
//!
//! On the memory transport the dead letters live in this process, so mounting the
//! dashboard here is the only way to see them; on a broker, `tidings dashboard` shows the
//! same from outside. Fix an order's note in its payload and replay it: the handler prints
//! it.

use serde::{Deserialize, Serialize};
use tidings::dashboard::{Auth, Dashboard};
use tidings::prelude::*;

/// An order was placed.
#[derive(Event, Serialize, Deserialize, Debug, Clone, schemars::JsonSchema)]
#[event(name = "shop.order-placed", version = 1)]
struct OrderPlaced {
    order: u32,
    note: String,
}

/// The orders topic.
#[derive(Topic, Debug, Clone)]
#[topic(name = "orders")]
enum OrderEvents {
    OrderPlaced(OrderPlaced),
}

async fn bill(order: OrderPlaced, _cx: Context) -> Result<(), HandlerError> {
    if order.note.starts_with("fail") {
        return Err(HandlerError::permanent(std::io::Error::other(format!(
            "order {} cannot be billed: {}",
            order.order, order.note
        ))));
    }
    println!("billing: order {} billed ({})", order.order, order.note);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let bus = Bus::builder("billing")
        .transport_url(url)
        .publishes::<OrderEvents>()
        .subscribe(Subscription::to::<OrderEvents>().on(bill))
        .build()
        .await?;
    for (order, note) in [
        (1, "gift wrap"),
        (2, "fail: card expired"),
        (3, "fail: no address"),
    ] {
        bus.publish(OrderPlaced {
            order,
            note: note.into(),
        })
        .await?;
    }

    let token = uuid::Uuid::new_v4().simple().to_string();
    let dashboard = Dashboard::for_bus(&bus).auth(Auth::token(token.clone()));
    let app = axum::Router::new().nest("/dead-letters", dashboard.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("dead letters on http://127.0.0.1:8080/dead-letters (any user, password {token})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    bus.shutdown().await;
    Ok(())
}
