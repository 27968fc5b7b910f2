//! Shared by the broker tests: the broker address, unique namespaces, test contracts, and
//! polling helpers.
#![allow(dead_code, unreachable_pub)]

pub mod adversary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Context, HandlerError};
use tidings_macros::{Event, Topic};

/// How long a test waits for what it expects.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A handler recording each run of an order.
pub async fn record(e: OrderPlaced, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state().record(e.n, cx.attempt(), cx.redelivered());
    Ok(())
}

/// The message count of the queue `name`, or `None` if it does not exist (a passive
/// declare on a channel of its own).
pub async fn queue_exists(conn: &lapin::Connection, name: &str) -> Option<u32> {
    let ch = conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let found = ch
        .queue_declare(name.into(), passive, lapin::types::FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = ch.close(200, "".into()).await;
    found
}

/// The broker URL, or `None` (after printing why) when the tests should skip.
pub fn url() -> Option<String> {
    match std::env::var("TIDINGS_RABBITMQ_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: TIDINGS_RABBITMQ_URL is not set (scripts/test sets it)");
            None
        }
    }
}

/// The publisher of orders, `shop`, in namespace `ns` on its own connection.
pub async fn shop(url: &str, ns: &str) -> tidings_core::Bus {
    tidings_core::Bus::builder("shop")
        .namespace(ns)
        .transport(tidings_rabbitmq::RabbitMq::from_url(url).unwrap())
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap()
}

/// A fresh namespace, so tests never share broker objects.
pub fn namespace() -> String {
    format!("rmq-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Orders: the topic the tests publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "orders.placed", version = 1)]
pub struct OrderPlaced {
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "orders.cancelled", version = 1)]
pub struct OrderCancelled {
    pub n: u64,
}

#[derive(Debug, Topic)]
#[topic(name = "orders")]
pub enum OrderEvents {
    OrderPlaced(OrderPlaced),
    OrderCancelled(OrderCancelled),
}

/// (attempt, redelivered) of each handler run.
pub type Runs = Vec<(u32, bool)>;

/// Counts handler runs per number, with the attempts and redelivered flags seen.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    inner: Arc<Mutex<HashMap<u64, Runs>>>,
}

impl Seen {
    pub fn record(&self, n: u64, attempt: u32, redelivered: bool) {
        self.inner
            .lock()
            .unwrap()
            .entry(n)
            .or_default()
            .push((attempt, redelivered));
    }

    pub fn runs(&self, n: u64) -> Vec<(u32, bool)> {
        self.inner
            .lock()
            .unwrap()
            .get(&n)
            .cloned()
            .unwrap_or_default()
    }

    pub fn distinct(&self) -> usize {
        self.inner.lock().unwrap().len()
    }

    pub fn total(&self) -> usize {
        self.inner.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn missing(&self, upto: u64) -> Vec<u64> {
        let seen = self.inner.lock().unwrap();
        (0..upto).filter(|n| !seen.contains_key(n)).collect()
    }
}

/// Poll `check` every 50 ms until it holds or `limit` passes; panics with `what`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw lapin connection to the test broker, for checks behind the transport's back.
pub async fn raw(url: &str) -> lapin::Connection {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("TIDINGS_RABBITMQ_URL is set but the broker is unreachable")
}
