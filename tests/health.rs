//! `Bus::health` and the health example's endpoints, on the memory transport: a
//! subscription is consuming, counts its handlers in flight and what it handled, and is
//! stopped (not live, not ready) once the bus shuts down.

#![allow(unreachable_pub)]

#[path = "../examples/health/probes.rs"]
mod probes;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tidings::prelude::*;
use tidings::SubscriptionState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "health.pinged", version = 1)]
struct Pinged {
    n: u32,
}

#[derive(Topic, Debug, Clone)]
#[topic(name = "health")]
enum HealthEvents {
    Pinged(Pinged),
}

/// Holds each handler until the test lets it go.
async fn gated(_event: Pinged, cx: Context<Arc<Semaphore>>) -> Result<(), HandlerError> {
    cx.state().acquire().await.expect("gate open").forget();
    Ok(())
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 10 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GET `path` from `addr` over plain HTTP/1.1: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response[9..12].parse().expect("status code");
    let body = response.split_once("\r\n\r\n").expect("body").1;
    (status, serde_json::from_str(body).expect("JSON body"))
}

#[tokio::test]
async fn health_follows_the_consumer_from_consuming_to_stopped() {
    let memory = tidings::Memory::new();
    let gate = Arc::new(Semaphore::new(0));
    let bus = Bus::builder("health")
        .transport(memory)
        .publishes::<HealthEvents>()
        .subscribe(
            Subscription::to::<HealthEvents>()
                .with_state(gate.clone())
                .concurrency(4)
                .on(gated),
        )
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = probes::router(bus.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let health = bus.health();
    assert!(health.is_ready() && health.is_live(), "{health:?}");
    let sub = &health.subscriptions[0];
    assert_eq!(
        (sub.subscription.as_str(), sub.topic.as_str()),
        ("health", "health")
    );
    assert_eq!(sub.state, SubscriptionState::Consuming);
    assert_eq!((sub.in_flight, sub.handled, sub.last_handled), (0, 0, None));

    for n in 0..3 {
        bus.publish(Pinged { n }).await.unwrap();
    }
    until("three handlers in flight", || {
        bus.health().subscriptions[0].in_flight == 3
    })
    .await;
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptions"][0]["in_flight"], 3, "{body}");
    assert_eq!(
        body["subscriptions"][0]["state"]["state"], "consuming",
        "{body}"
    );

    let before = SystemTime::now();
    gate.add_permits(3);
    until("three handled", || {
        bus.health().subscriptions[0].handled == 3
    })
    .await;
    let sub = bus.health().subscriptions[0].clone();
    assert_eq!(sub.in_flight, 0);
    let last = sub.last_handled.expect("a last handled time");
    assert!(
        last + Duration::from_millis(1) >= before,
        "{last:?} before {before:?}"
    );
    let (_, body) = get(addr, "/health/live").await;
    assert!(
        body["subscriptions"][0]["last_handled"].as_str().is_some(),
        "{body}"
    );

    bus.shutdown().await;
    let health = bus.health();
    assert!(health.shut_down);
    assert_eq!(health.subscriptions[0].state, SubscriptionState::Stopped);
    assert!(!health.is_ready() && !health.is_live(), "{health:?}");
    for path in ["/health/ready", "/health/live"] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 503, "{path}: {body}");
    }
}
