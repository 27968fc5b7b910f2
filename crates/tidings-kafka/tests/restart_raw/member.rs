//! The group member under test: a poll thread that hands records to a worker, commits
//! what the worker processed, and records what it saw for the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::broker::number;

/// What the consumer saw, shared with its callbacks.
#[derive(Default)]
pub(crate) struct Diag {
    /// Seconds since the test started, for the event log.
    pub(crate) t0: Mutex<Option<Instant>>,
    pub(crate) assigns: AtomicU64,
    pub(crate) revokes: AtomicU64,
    /// Client errors by name.
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    /// Rebalances and first occurrences of errors, with their time.
    pub(crate) events: Mutex<Vec<String>>,
    /// Set while the broker is stopped.
    pub(crate) broker_down: AtomicBool,
    /// Records read and not yet processed: (partition, offset, number).
    pub(crate) queue: Arc<Mutex<std::collections::VecDeque<(i32, i64, u64)>>>,
    /// librdkafka's log lines go here when `RESTART_RAW_LOG` names a file.
    pub(crate) log: Mutex<Option<std::fs::File>>,
}

impl Diag {
    fn secs(&self) -> f64 {
        self.t0
            .lock()
            .unwrap()
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Count an error by kind; the first of each kind goes to the event log.
    fn count(&self, kind: String, detail: &str) {
        let mut errors = self.errors.lock().unwrap();
        let c = errors.entry(kind.clone()).or_default();
        *c += 1;
        if *c == 1 {
            drop(errors);
            self.event(format!("{kind}: {detail}"));
        }
    }

    pub(crate) fn event(&self, what: String) {
        let t = self.secs();
        let mut events = self.events.lock().unwrap();
        if events.len() < 200 {
            events.push(format!("{t:7.2}s {what}"));
        }
    }
}

struct Ctx(Arc<Diag>, Behaviour);

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        let t = self.0.secs();
        if let Some(file) = self.0.log.lock().unwrap().as_mut() {
            use std::io::Write;
            let _ = writeln!(file, "{t:7.2}s {level:?} {fac} {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = format!("client error {:?}", error.rdkafka_error_code());
        self.0.count(kind, reason);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Records of revoked partitions are not processed any more (their new owner reads
        // them from the committed offset); the tidings subscriber drops them the same way.
        if let Rebalance::Revoke(_) = rebalance {
            self.0.queue.lock().unwrap().clear();
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.0.assigns.fetch_add(1, Ordering::SeqCst);
                self.0.event(format!("assigned {} partitions", tpl.count()));
                // librdkafka keeps a partition's application pause across a revocation
                // and a new assignment of it; only `resume` clears it.
                if self.1.resume_on_assign {
                    c.resume(tpl).unwrap();
                }
            }
            Rebalance::Revoke(tpl) => {
                self.0.revokes.fetch_add(1, Ordering::SeqCst);
                self.0.event(format!("revoked {} partitions", tpl.count()));
            }
            Rebalance::Error(e) => self.0.event(format!("rebalance error {e}")),
        }
    }
}

/// Consumer settings under test; `extra` are added to the plain ones.
pub(crate) fn consumer_config(address: &str, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", address)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// How the group member treats its partitions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Behaviour {
    /// Processing time per record. Records go through a queue of [`QUEUE`] records to a
    /// worker thread, as they go from the tidings poll thread to the bus.
    pub(crate) per_record: Duration,
    /// While the queue is full, pause every assigned partition (and keep polling); when it
    /// is empty again, resume the partitions assigned then. The tidings subscriber's
    /// back-pressure.
    pub(crate) pause_when_behind: bool,
    /// Resume the partitions of every assignment in the Assign callback.
    pub(crate) resume_on_assign: bool,
    /// Process nothing while the broker is down, like handlers that publish to the same
    /// broker: the member is still behind when its session times out.
    pub(crate) stall_while_down: bool,
}

/// Records the poll thread hands to the worker before it pauses.
const QUEUE: usize = 1_000;

/// A group member: a poll thread that hands records to a worker thread, which records each
/// record's number; the poll thread commits what the worker processed every 500 ms
/// (asynchronously, as the tidings subscriber does).
pub(crate) fn spawn_consumer(
    config: ClientConfig,
    topic: String,
    behaviour: Behaviour,
    diag: Arc<Diag>,
    received: Arc<Mutex<BTreeMap<u64, u32>>>,
    last_record: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer<Ctx> = config
            .create_with_context(Ctx(diag.clone(), behaviour))
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let queue = diag.queue.clone();
        let processed: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
        let worker = {
            let (queue, processed, stop) = (queue.clone(), processed.clone(), stop.clone());
            let diag_w = diag.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if behaviour.stall_while_down && diag_w.broker_down.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let Some((p, o, n)) = queue.lock().unwrap().pop_front() else {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    std::thread::sleep(behaviour.per_record);
                    *received.lock().unwrap().entry(n).or_default() += 1;
                    *last_record.lock().unwrap() = Some(Instant::now());
                    processed.lock().unwrap().insert(p, o + 1);
                }
            })
        };
        let mut sent: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_commit = Instant::now();
        let mut paused = false;
        let mut pauses = 0;
        while !stop.load(Ordering::SeqCst) {
            let queued = queue.lock().unwrap().len();
            if queued >= QUEUE && behaviour.pause_when_behind && !paused {
                let assignment = consumer.assignment().unwrap();
                consumer.pause(&assignment).unwrap();
                paused = true;
                pauses += 1;
                if pauses <= 3 {
                    diag.event(format!("paused {} partitions", assignment.count()));
                }
            } else if paused && queued == 0 {
                // What tidings resumes: the partitions assigned now.
                let assignment = consumer.assignment().unwrap();
                consumer.resume(&assignment).unwrap();
                paused = false;
                if pauses <= 3 || assignment.count() == 0 {
                    diag.event(format!("resumed {} partitions", assignment.count()));
                }
            }
            if queued >= QUEUE && !behaviour.pause_when_behind {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let n = number(&m).expect("a record number");
                        queue
                            .lock()
                            .unwrap()
                            .push_back((m.partition(), m.offset(), n));
                    }
                    Some(Err(e)) => {
                        diag.count(format!("poll error {:?}", e.rdkafka_error_code()), "")
                    }
                    None => {}
                }
            }
            if last_commit.elapsed() >= Duration::from_millis(500) {
                last_commit = Instant::now();
                let processed = processed.lock().unwrap().clone();
                let mut tpl = TopicPartitionList::new();
                for (p, o) in &processed {
                    if sent.get(p) != Some(o) {
                        tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                            .unwrap();
                    }
                }
                // As the tidings subscriber does: commit what moved. librdkafka reports
                // the result of an asynchronous manual commit only to an
                // `offset_commit_cb`, which rdkafka 0.38 does not set (a failure is only
                // logged as COMMITFAIL), so nothing waits for it; the next commit carries
                // the same offsets or higher ones.
                sent = processed;
                if tpl.count() > 0 {
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        diag.event(format!("commit refused at once: {e}"));
                    }
                }
            }
        }
        worker.join().unwrap();
    })
}
