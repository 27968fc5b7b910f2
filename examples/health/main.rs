//! A service that serves its bus's health to an orchestrator.
//!
//! ```text
//! cargo run --example health                      # memory transport, port 8080
//! cargo run --example health -- amqp://guest:guest@127.0.0.1:5672/%2f 127.0.0.1:9000
//! curl -i http://127.0.0.1:8080/health/ready
//! ```
//!
//! The answer is the bus's `Health` as JSON, 200 or 503:
//!
//! ```text
//! {"service":"catalog","shut_down":false,"subscriptions":[{"subscription":"catalog",
//!  "topic":"lending","state":{"state":"consuming"},"in_flight":0,"handled":0,
//!  "last_handled":null}]}
//! ```

// `probes` stands for a module of the service's crate (hence `pub`), shared with
// tests/health.rs.
#![allow(unreachable_pub)]

mod probes;

use serde::{Deserialize, Serialize};
use tidings::prelude::*;

/// The event the example's subscription handles.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "lending.book-borrowed", version = 1)]
struct BookBorrowed {
    book: String,
}

/// The topic it is published on.
#[derive(Topic, Debug, Clone)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
}

async fn on_borrowed(event: BookBorrowed, _cx: Context) -> Result<(), HandlerError> {
    println!("catalog: {} borrowed", event.book);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "memory://".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let bus = Bus::builder("catalog")
        .transport_url(url)
        .subscribe(Subscription::to::<LendingEvents>().on(on_borrowed))
        .build()
        .await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("health on http://{listen}/health/live and /health/ready");
    let app = probes::router(bus.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    bus.shutdown().await;
    Ok(())
}
