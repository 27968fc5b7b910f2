//! The tidings side: the benchmark event and topic, a counting handler, and the buses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tidings_core::{
    Bus, Context, Event, EventInfo, HandlerError, Subscription, Topic, TopicMember,
};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
use tokio::sync::Notify;

use crate::{PREFETCH, WINDOW};

/// The benchmark event: about 100 bytes of MessagePack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Tick {
    pub(crate) n: u64,
    pub(crate) sent_micros: u64,
    pub(crate) note: String,
}

impl Event for Tick {
    const NAME: &'static str = "bench.tick";
    const VERSION: u32 = 1;
}

impl TopicMember for Tick {
    type Topic = BenchEvents;
}

pub(crate) struct BenchEvents;

impl Topic for BenchEvents {
    const NAME: &'static str = "bench";
    fn events() -> &'static [EventInfo] {
        &[EventInfo {
            name: "bench.tick",
            version: 1,
            type_name: "Tick",
        }]
    }
}

pub(crate) fn tick(n: u64) -> Tick {
    Tick {
        n,
        sent_micros: now_micros(),
        note: "the quick brown fox jumps over the lazy dog, twice: the quick brown fox".into(),
    }
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

pub(crate) struct Counter {
    pub(crate) seen: AtomicU64,
    pub(crate) target: AtomicU64,
    pub(crate) done: Notify,
    pub(crate) latencies: Mutex<Option<Histogram<u64>>>,
}

pub(crate) async fn count(e: Tick, cx: Context<Counter>) -> Result<(), HandlerError> {
    let c = cx.state();
    if let Some(h) = c.latencies.lock().unwrap().as_mut() {
        h.saturating_record(now_micros().saturating_sub(e.sent_micros));
    }
    std::hint::black_box(e);
    if c.seen.fetch_add(1, Ordering::Relaxed) + 1 == c.target.load(Ordering::Relaxed) {
        c.done.notify_one();
    }
    Ok(())
}

pub(crate) fn counter(target: u64, latencies: bool) -> Arc<Counter> {
    Arc::new(Counter {
        seen: AtomicU64::new(0),
        target: AtomicU64::new(target),
        done: Notify::new(),
        latencies: Mutex::new(
            latencies.then(|| Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        ),
    })
}

pub(crate) async fn tidings_publisher(url: &str, ns: &str) -> Bus {
    let transport = RabbitMq::connect(RabbitMqConfig::new(url).max_in_flight(WINDOW))
        .await
        .unwrap();
    Bus::builder("writer")
        .namespace(ns)
        .transport(transport)
        .publishes::<BenchEvents>()
        .build()
        .await
        .unwrap()
}

pub(crate) async fn tidings_consumer(transport: RabbitMq, ns: &str, counter: Arc<Counter>) -> Bus {
    Bus::builder("reader")
        .namespace(ns)
        .transport(transport)
        .subscribe(
            Subscription::to::<BenchEvents>()
                .with_shared_state(counter)
                .on(count)
                .prefetch(PREFETCH),
        )
        .build()
        .await
        .unwrap()
}

pub(crate) async fn tidings_end_to_end(
    url: &str,
    publisher: &Bus,
    ns: &str,
    n: u64,
) -> Histogram<u64> {
    let counter = counter(n, true);
    let transport = RabbitMq::connect(RabbitMqConfig::new(url)).await.unwrap();
    let bus = tidings_consumer(transport, ns, counter.clone()).await;
    for i in 0..n {
        publisher.publish(tick(i)).await.unwrap();
    }
    counter.done.notified().await;
    bus.shutdown().await;
    let h = counter.latencies.lock().unwrap().take().unwrap();
    h
}
