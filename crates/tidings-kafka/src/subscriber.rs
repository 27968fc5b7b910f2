//! Consuming one subscription, at least once.
//!
//! # How it works
//!
//! One consumer, in the subscription's consumer group (`catalog.lending`: the subscription
//! and the topic, `SubscriptionSpec::queue_name`), reads the topic and
//! the subscription's retry topic on a dedicated thread (the *poll thread*), which owns
//! the librdkafka consumer, serves its rebalance callbacks and commits offsets. Records
//! go to the async [`KafkaSubscriber`] through a bounded channel (the subscription's
//! prefetch). When the bus falls behind, the poll thread stops taking records until it
//! catches up; if that lasts more than 5 s it pauses the partitions and goes on polling,
//! so the consumer keeps its place in the group (and resumes them from the position of
//! the last record it took, so nothing is skipped).
//!
//! **Offsets.** Each partition keeps the offsets it handed out, in order, with their
//! state. An offset counts as settled once its envelope was handled, skipped (no handler),
//! sent to the retry topic or dead-lettered; the offset committed for a partition is the
//! one below which *everything* is settled, so a commit never passes an unhandled record
//! even when records of a partition are handled concurrently. Commits go out every
//! `commit_interval`, on rebalance and on shutdown.
//!
//! **Rebalance.** When partitions are revoked, the poll thread (inside librdkafka's
//! rebalance callback) stops handing out their records, waits up to `drain_timeout` for
//! the handlers in flight on them to settle, commits what is settled, and only then lets
//! the partitions go. A duplicate can only come from a handler still running after that.
//!
//! **Delayed retries.** A failed unkeyed delivery that the retry policy redelivers later
//! is written to `<subscription>.<topic>.retry` with the headers `tidings-attempt` (the
//! next attempt) and `tidings-due` (Unix milliseconds when it is due), then its original
//! offset is settled. The subscription's consumer reads the retry topic too: a record not
//! yet due is held in memory, ordered by due time, and handed to the bus as a redelivery
//! once due, earliest first, so a retry (or a scheduled event the core put back) is
//! delivered no earlier than due and never waits behind one due later. The poll thread
//! reads a retry partition ahead while it holds fewer than 10,000 records
//! (`held::HOLD_LIMIT`) and pauses it only then. Retries come out of offset order, but
//! the partition's commit point never passes a record still held: after a restart or
//! rebalance the partition is read again from the earliest record still held, so the
//! records behind it that were handled already are delivered again (at least once).
//! Retry topics are created with a retention of 7 days, the furthest ahead a retry or a
//! scheduled event may be due. Keyed envelopes never go to the retry topic (that would let
//! later events of the key overtake them): the bus waits in place for them.
//!
//! **Records.** Each record becomes a delivery through `Delivery::from_wire`: `wire` hands
//! its headers and value to the core, which decides whether they are an envelope. A record
//! that is not an envelope reaches the bus as a placeholder, and the bus dead-letters it
//! like any other poison message.
//!
//! **Dead letters.** The last failure goes to `<subscription>.<topic>.dlq` with the
//! dead-letter headers (`DeadLetterInfo::stamp`) and `tidings-kafka-partition` /
//! `tidings-kafka-offset`, the record's original place in the topic. A dead letter the
//! producer or broker refuses as too large fails with `ErrorKind::MessageTooLarge`; the
//! bus then parks it without its payload.
//!
//! **Shutdown.** Dropping the subscriber (the bus does when its consumer loop ends, before
//! `Bus::shutdown` returns) stops the poll thread and waits for it: its last commit is
//! made and the consumer has left the group and is destroyed when the drop returns. A
//! broker that is away holds the commit and the close; after 10 s the drop returns and
//! the consumer finishes closing in the background.
//!
//! **Unsettled deliveries.** A delivery dropped without being settled (the bus could not
//! settle it) makes the poll thread seek its partition back to it once the partition has
//! nothing else in flight, so it is delivered again.
//!
//! **Order.** Records of one partition are handed out in offset order. With the
//! subscription's concurrency at 1 (the default), each is handled before the next.
//! With a higher concurrency, the bus handles deliveries of different ordering keys in
//! parallel and those of one key one after another; since the record key is the ordering
//! key, events with the same key are on one partition and keep their publish order.
//! Unkeyed events of one partition may then be handled in parallel; commits still follow
//! offset order.

mod held;
mod poller;
pub(crate) mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tidings_core::{
    transport::{Delivery, Subscriber, SubscriptionSpec},
    Error, Result,
};
use tokio::sync::mpsc;

use poller::{Callbacks, Poller, Redeclare};
use state::{Shared, State, Tp};

use crate::acker::KafkaAcker;
use crate::config::{KafkaConfig, StartFrom};
use crate::error::from_kafka;
use crate::topology::SubscriptionTopics;

/// The default `fetch.wait.max.ms` of subscription consumers (see [`KafkaSubscriber::start`]).
pub(crate) const FETCH_WAIT_MS: &str = "25";

/// One record, as the poll thread passes it to the subscriber: its place and the
/// delivery made of it.
#[derive(Debug)]
struct Item {
    tp: Tp,
    epoch: u64,
    offset: i64,
    delivery: Delivery<KafkaAcker>,
}

/// The poll threads running now, per consumer group.
fn live_threads() -> &'static Mutex<HashMap<String, usize>> {
    static LIVE: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// How many poll threads of the consumer group `group` are running in this process (for
/// tests: after `Bus::shutdown` there are none).
#[doc(hidden)]
pub fn live_poll_threads(group: &str) -> usize {
    live_threads()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(group)
        .copied()
        .unwrap_or(0)
}

/// Counts a poll thread as live while it exists.
struct LiveThread(String);

impl LiveThread {
    fn new(group: &str) -> Self {
        *live_threads()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(group.to_string())
            .or_default() += 1;
        LiveThread(group.to_string())
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        let mut live = live_threads().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.0);
            }
        }
    }
}

/// The deliveries of one Kafka subscription.
pub struct KafkaSubscriber {
    rx: mpsc::Receiver<Vec<Item>>,
    /// Records received from the poll thread and not handed out yet.
    buf: VecDeque<Item>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("group", &self.shared.names.group)
            .field("topic", &self.shared.names.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscriber {
    /// Join the consumer group of `spec` and start the poll thread.
    pub(crate) fn start(
        config: &KafkaConfig,
        spec: &SubscriptionSpec,
        producer: FutureProducer,
    ) -> Result<Self> {
        let names = SubscriptionTopics::of(spec);
        let shared = Arc::new(Shared {
            subscription: Arc::from(spec.name.as_str()),
            names: names.clone(),
            state: std::sync::Mutex::new(State::default()),
            settled: Condvar::new(),
            stop: AtomicBool::new(false),
            reassigned: AtomicBool::new(false),
            drain_timeout: config.drain_timeout,
        });
        let mut c = config.client_config();
        c.set("group.id", &names.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match config.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        // How long the broker may hold a fetch that finds no records (librdkafka's
        // default is 500 ms). Kafka answers a held fetch as soon as records arrive, so
        // there the value only sets how often an idle consumer asks again (1000 / 25 = 40
        // fetch requests a second per broker). Brokers that hold a fetch for the whole
        // wait (tansu) add up to this much to every delivery and to every hop of a retry
        // or scheduled event: with 100 ms, one-at-a-time delivery took 107 ms (p50)
        // against 18 ms for raw rdkafka at 10 ms. 25 ms trades those idle requests for
        // that latency; `KafkaConfig::property("fetch.wait.max.ms", ..)` sets another.
        if c.get("fetch.wait.max.ms").is_none() {
            c.set("fetch.wait.max.ms", FETCH_WAIT_MS);
        }
        if let Some(t) = config.session_timeout {
            c.set("session.timeout.ms", t.as_millis().to_string());
        }
        let consumer: BaseConsumer<Callbacks> = c
            .create_with_context(Callbacks {
                shared: shared.clone(),
            })
            .map_err(|e| {
                from_kafka(
                    format_args!("creating the Kafka consumer of {}", names.group),
                    e,
                )
            })?;
        consumer
            .subscribe(&[&names.topic, &names.retry])
            .map_err(|e| {
                from_kafka(
                    format_args!("subscribing {} to {}", names.group, names.topic),
                    e,
                )
            })?;
        let capacity = usize::from(spec.prefetch.max(1));
        // Records cross to the bus in chunks, a quarter of the prefetch each: one wake-up
        // per chunk rather than per record.
        let (tx, rx) = mpsc::channel(4);
        let poller = Poller {
            consumer,
            shared: shared.clone(),
            producer,
            tx,
            pending: VecDeque::new(),
            capacity,
            paused_all: false,
            behind_since: None,
            commit_interval: config.commit_interval,
            last_commit: Instant::now(),
            redeclare: Redeclare {
                runtime: tokio::runtime::Handle::try_current().ok(),
                config: config.clone(),
                topology: {
                    let mut t = tidings_core::transport::Topology::new(spec.service.clone());
                    t.subscriptions.push(spec.clone());
                    t
                },
                last: None,
            },
        };
        let live = LiveThread::new(&names.group);
        let thread = std::thread::Builder::new()
            .name(format!("tidings-kafka-{}", names.group))
            .spawn(move || poller.run(live))
            .map_err(|e| Error::backend("starting the Kafka poll thread", e))?;
        Ok(KafkaSubscriber {
            rx,
            buf: VecDeque::new(),
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        // The poll thread commits what is settled, leaves the group, destroys the consumer
        // and ends; wait for it, so that no Kafka client of the subscription outlives it.
        self.shared.stop.store(true, Ordering::SeqCst);
        self.rx.close();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let join = move || {
            if thread.join().is_err() {
                tracing::error!("the Kafka poll thread panicked");
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(join),
            _ => join(),
        }
    }
}

impl Subscriber for KafkaSubscriber {
    type Acker = KafkaAcker;

    async fn next(&mut self) -> Option<Result<Delivery<KafkaAcker>>> {
        loop {
            let Some(item) = self.buf.pop_front() else {
                let chunk = self.rx.recv().await?;
                self.buf.extend(chunk);
                continue;
            };
            let Item {
                tp,
                epoch,
                offset,
                delivery,
            } = item;
            if !self.shared.hand_out(tp, epoch, offset) {
                tracing::trace!(?tp, offset, epoch, "stale record dropped");
                delivery.acker.forget();
                continue;
            }
            tracing::trace!(?tp, offset, epoch, "record handed out");
            return Some(Ok(delivery));
        }
    }
}
