//! Issue 9, defect 9, with the broker's own client only (no tidings code): a tansu with
//! SQLite storage is restarted once while 16 producers write 20,000 records at about
//! 800/s (acks=all, each delivery report awaited) and a plain rdkafka group member
//! (`enable.auto.commit=false`, offsets committed after processing, as the tidings
//! subscriber does) reads them. Every record whose delivery was confirmed must be
//! consumed at least once after the restart.
//!
//! When that fails the test tells which side is at fault before it panics: the broker's
//! high watermarks and log contents against the confirmed records (did the broker lose
//! data?), the group's committed offsets before and after the restart (did it lose
//! offsets?), and the consumer's assignments after the restart (did it rejoin?).
//! Findings and figures: `crates/tidings-kafka/RESTART.md`.
//!
//! Runs only when `TIDINGS_KAFKA_BROKERS` is set (like every broker test) and a tansu
//! binary with the `libsql` engine is found (see `common::PrivateTansu`); it starts its
//! own broker on a free port. `RESTART_RAW_RECORDS` overrides the record count.

// The event derives of `common` name the core as `tidings`.
extern crate tidings_core as tidings;

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{brokers, PrivateTansu};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const PRODUCERS: u64 = 16;
/// Records per second over all producers.
const RATE: u64 = 800;

/// What the consumer saw, shared with its callbacks.
#[derive(Default)]
struct Diag {
    /// Seconds since the test started, for the event log.
    t0: Mutex<Option<Instant>>,
    assigns: AtomicU64,
    revokes: AtomicU64,
    /// Client errors by name.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Rebalances and first occurrences of errors, with their time.
    events: Mutex<Vec<String>>,
    /// Set while the broker is stopped.
    broker_down: AtomicBool,
    /// Records read and not yet processed: (partition, offset, number).
    queue: Arc<Mutex<std::collections::VecDeque<(i32, i64, u64)>>>,
    /// librdkafka's log lines go here when `RESTART_RAW_LOG` names a file.
    log: Mutex<Option<std::fs::File>>,
}

impl Diag {
    fn event(&self, what: String) {
        let t = self
            .t0
            .lock()
            .unwrap()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let mut events = self.events.lock().unwrap();
        if events.len() < 200 {
            events.push(format!("{t:7.2}s {what}"));
        }
    }
}

struct Ctx(Arc<Diag>, Behaviour);

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        let t = self
            .0
            .t0
            .lock()
            .unwrap()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        if let Some(file) = self.0.log.lock().unwrap().as_mut() {
            use std::io::Write;
            let _ = writeln!(file, "{t:7.2}s {level:?} {fac} {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let name = format!("{error:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_string();
        let key = format!(
            "{name}: {}",
            error
                .rdkafka_error_code()
                .map_or(String::new(), |c| format!("{c:?}"))
        );
        let first = {
            let mut errors = self.0.errors.lock().unwrap();
            let c = errors.entry(key.clone()).or_default();
            *c += 1;
            *c == 1
        };
        if first {
            self.0.event(format!("error {key}: {reason}"));
        }
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
fn consumer_config(address: &str, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
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
struct Behaviour {
    /// Processing time per record. Records go through a queue of [`QUEUE`] records to a
    /// worker thread, as they go from the tidings poll thread to the bus.
    per_record: Duration,
    /// While the queue is full, pause every assigned partition (and keep polling); when it
    /// is empty again, resume the partitions assigned then. The tidings subscriber's
    /// back-pressure.
    pause_when_behind: bool,
    /// Resume the partitions of every assignment in the Assign callback.
    resume_on_assign: bool,
    /// Process nothing while the broker is down, like handlers that publish to the same
    /// broker: the member is still behind when its session times out.
    stall_while_down: bool,
}

/// Records the poll thread hands to the worker before it pauses.
const QUEUE: usize = 1_000;

/// A group member: a poll thread that hands records to a worker thread, which records each
/// record's number; the poll thread commits what the worker processed every 500 ms
/// (asynchronously, as the tidings subscriber does).
fn spawn_consumer(
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
                        let n: u64 = std::str::from_utf8(m.payload().unwrap_or_default())
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("a record number");
                        queue
                            .lock()
                            .unwrap()
                            .push_back((m.partition(), m.offset(), n));
                    }
                    Some(Err(e)) => diag.event(format!("poll error {e}")),
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

/// SIGKILL the broker listening on `port` (a crash instead of a clean stop).
fn kill_hard(port: u16) {
    let url = format!("tcp://127.0.0.1:{port}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("broker") && cmdline.contains(&format!("{url} ")) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }
}

/// The broker's low and high watermark of each partition.
fn watermarks(address: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let c: BaseConsumer = consumer_config(address, "watermarks", &[])
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let w = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or((-1, -1));
            (p, w)
        })
        .collect()
}

/// Every record in the broker's log: (partition, offset) -> number, read from the start of
/// each partition up to `high` without a group.
fn scan(address: &str, topic: &str, high: &BTreeMap<i32, (i64, i64)>) -> BTreeMap<(i32, i64), u64> {
    let c: BaseConsumer = consumer_config(address, &format!("scan-{}", uuid::Uuid::new_v4()), &[])
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let mut done: BTreeSet<i32> = high
        .iter()
        .filter(|(_, (_, h))| *h <= 0)
        .map(|(p, _)| *p)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < PARTITIONS as usize && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let n = std::str::from_utf8(m.payload().unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            out.insert((m.partition(), m.offset()), n);
            if m.offset() + 1 >= high[&m.partition()].1 {
                done.insert(m.partition());
            }
        }
    }
    out
}

/// The offsets `group` committed on `topic` (partition -> next offset), as the broker says.
fn committed_map(address: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    common::committed(address, group, topic, PARTITIONS)
        .into_iter()
        .filter_map(|(p, o)| o.map(|o| (p, o)))
        .collect()
}

fn create_topic(address: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for r in r {
        r.unwrap();
    }
}

/// One run: produce, restart once at half way, wait for the consumer; returns the report
/// and whether every confirmed record was consumed.
async fn run(
    test: &str,
    behaviour: Behaviour,
    down: Duration,
    consumer_extra: &[(&str, &str)],
) -> Option<(bool, String)> {
    brokers(test)?;
    // One broker and 16 producers at a time on a small machine.
    let _serial = SERIAL.lock().await;
    let Some(mut tansu) = PrivateTansu::new() else {
        println!("skipped: {test}: no tansu binary with the libsql engine (cargo install tansu --locked --features dynostore,libsql, or TANSU_BIN)");
        return None;
    };
    tansu.start(&[]);
    let address = tansu.address();
    let n: u64 = std::env::var("RESTART_RAW_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let down = std::env::var("RESTART_RAW_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(down, Duration::from_secs);
    // Extra consumer properties to try, `key=value,key=value`.
    let extra_env = std::env::var("RESTART_RAW_CONSUMER").unwrap_or_default();
    let mut extra: Vec<(&str, &str)> = consumer_extra.to_vec();
    extra.extend(extra_env.split(',').filter_map(|kv| kv.split_once('=')));
    let consumer_extra = &extra[..];
    let topic = common::namespace("raw-restart");
    let group = format!("{topic}-group");
    {
        let (a, t) = (address.clone(), topic.clone());
        tokio::task::spawn_blocking(move || create_topic(&a, &t))
            .await
            .unwrap();
    }

    let diag = Arc::new(Diag::default());
    *diag.t0.lock().unwrap() = Some(Instant::now());
    if let Some(path) = std::env::var_os("RESTART_RAW_LOG") {
        *diag.log.lock().unwrap() = Some(std::fs::File::create(path).unwrap());
    }
    let received: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let last_record: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        {
            let mut c = consumer_config(&address, &group, consumer_extra);
            if std::env::var_os("RESTART_RAW_LOG").is_some() {
                c.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
            }
            c
        },
        topic.clone(),
        behaviour,
        diag.clone(),
        received.clone(),
        last_record.clone(),
        stop.clone(),
    );

    // 16 publishers, each its own client, as in the issue. Not idempotent: tansu 0.6
    // refuses an idempotent producer that outlived a restart (see restart.rs).
    let producer = || -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "120000")
            .create()
            .unwrap()
    };
    // n -> (partition, offset) of its confirmed delivery.
    let confirmed: Arc<Mutex<BTreeMap<u64, (i32, i64)>>> = Arc::default();
    let failed_sends = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..PRODUCERS {
        let (producer, topic, confirmed, failed) = (
            producer(),
            topic.clone(),
            confirmed.clone(),
            failed_sends.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 * PRODUCERS / RATE));
            let mut i = task;
            while i < n {
                tick.tick().await;
                let (key, payload) = (format!("k{}", i % 64), i.to_string());
                loop {
                    let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                    match producer.send(record, Duration::from_secs(0)).await {
                        Ok(d) => {
                            confirmed.lock().unwrap().insert(i, (d.partition, d.offset));
                            break;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                i += PRODUCERS;
            }
        }));
    }

    // Restart once at half way.
    let started = Instant::now();
    while (confirmed.lock().unwrap().len() as u64) < n / 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "producing did not get to half way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_restart_received = received.lock().unwrap().len();
    let before_restart_confirmed = confirmed.lock().unwrap().len();
    let (marks_before, committed_before) = {
        let (a, t, g) = (address.clone(), topic.clone(), group.clone());
        tokio::task::spawn_blocking(move || (watermarks(&a, &t), committed_map(&a, &g, &t)))
            .await
            .unwrap()
    };
    diag.event(format!(
        "restarting: {before_restart_confirmed} confirmed, {before_restart_received} consumed"
    ));
    let assigns_at_restart = diag.assigns.load(Ordering::SeqCst);
    let restart_at = Instant::now();
    let diag_r = diag.clone();
    let mut tansu = tokio::task::spawn_blocking(move || {
        diag_r.broker_down.store(true, Ordering::SeqCst);
        if std::env::var_os("RESTART_RAW_KILL").is_some() {
            kill_hard(tansu.port);
        }
        tansu.stop();
        std::thread::sleep(down);
        tansu.start(&[]);
        diag_r.broker_down.store(false, Ordering::SeqCst);
        tansu
    })
    .await
    .unwrap();
    let restart_took = restart_at.elapsed();
    diag.event("broker listening again".into());
    // Offsets the group had right after the restart (the consumer only moves them up).
    let committed_restarted = {
        let (a, t, g) = (address.clone(), topic.clone(), group.clone());
        tokio::task::spawn_blocking(move || committed_map(&a, &g, &t))
            .await
            .unwrap()
    };
    for t in tasks {
        t.await.unwrap();
    }
    let produced_in = started.elapsed();
    diag.event("every record confirmed".into());

    // Wait for the consumer: until it has everything, or it received nothing for 60 s.
    let waited = Instant::now();
    loop {
        let missing = {
            let r = received.lock().unwrap();
            confirmed
                .lock()
                .unwrap()
                .keys()
                .filter(|k| !r.contains_key(k))
                .count()
        };
        let idle = last_record
            .lock()
            .unwrap()
            .is_none_or(|t| t.elapsed() > Duration::from_secs(30));
        if missing == 0 || (idle && waited.elapsed() > Duration::from_secs(30)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || consumer.join().unwrap())
        .await
        .unwrap();

    // Which side is at fault.
    let (marks, log, committed_after) = {
        let (a, t, g) = (address.clone(), topic.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            let marks = watermarks(&a, &t);
            let log = scan(&a, &t, &marks);
            let committed = common::committed(&a, &g, &t, PARTITIONS);
            (marks, log, committed)
        })
        .await
        .unwrap()
    };
    let confirmed = confirmed.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    let missing: Vec<u64> = confirmed
        .keys()
        .filter(|k| !received.contains_key(k))
        .copied()
        .collect();
    let in_log: BTreeSet<u64> = log.values().copied().collect();
    let lost_by_broker: Vec<u64> = confirmed
        .keys()
        .filter(|k| !in_log.contains(k))
        .copied()
        .collect();
    // A confirmed (partition, offset) that now holds another record: offsets reused.
    let overwritten = confirmed
        .iter()
        .filter(|(n, po)| log.get(po).is_some_and(|m| m != *n))
        .count();
    let mut per_partition = String::new();
    for p in 0..PARTITIONS {
        let c: Vec<i64> = confirmed
            .values()
            .filter(|(cp, _)| *cp == p)
            .map(|(_, o)| *o)
            .collect();
        let max = c.iter().max().map_or(0, |m| m + 1);
        per_partition += &format!(
            "\n  partition {p}: {} confirmed (highest confirmed offset + 1 = {max}), high watermark before restart {:?}, after {:?}, {} records in log, committed before {:?}, right after the restart {:?}, at the end {:?}",
            c.len(),
            marks_before.get(&p).map(|m| m.1),
            marks.get(&p).map(|m| m.1),
            log.keys().filter(|(lp, _)| *lp == p).count(),
            committed_before.get(&p),
            committed_restarted.get(&p),
            committed_after.iter().find(|(cp, _)| *cp == p).and_then(|(_, o)| *o),
        );
    }
    let errors = diag.errors.lock().unwrap().clone();
    let report = format!(
        "{n} records, {} confirmed in {:.1}s ({} failed sends retried), {} consumed ({} more than once), {} confirmed never consumed, {} confirmed absent from the broker's log, {} confirmed offsets now holding another record;\n\
         restart took {:.1}s; consumer: {} assignments ({} after the restart), {} revocations;{per_partition}\n\
         errors: {errors:?}\n events:\n  {}\n missing (first 20): {:?}",
        confirmed.len(),
        produced_in.as_secs_f64(),
        failed_sends.load(Ordering::SeqCst),
        received.len(),
        received.values().filter(|c| **c > 1).count(),
        missing.len(),
        lost_by_broker.len(),
        overwritten,
        restart_took.as_secs_f64(),
        diag.assigns.load(Ordering::SeqCst),
        diag.assigns.load(Ordering::SeqCst) - assigns_at_restart,
        diag.revokes.load(Ordering::SeqCst),
        diag.events.lock().unwrap().join("\n  "),
        &missing[..missing.len().min(20)],
    );
    println!("{test}: {report}");
    tansu.stop();
    if let Some(path) = std::env::var_os("RESTART_RAW_LOG") {
        let mut to = std::path::PathBuf::from(path);
        to.set_extension("tansu.log");
        let _ = std::fs::copy(tansu.dir.join("tansu.log"), to);
    }
    Some((missing.is_empty(), report))
}

/// The scenario: the broker restarted as fast as it stops and starts, a member
/// that keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rdkafka_group_member_gets_every_confirmed_record_after_a_broker_restart() {
    let test = "a_plain_rdkafka_group_member_gets_every_confirmed_record_after_a_broker_restart";
    let Some((ok, report)) = run(test, Behaviour::default(), Duration::ZERO, &[]).await else {
        return;
    };
    assert!(ok, "{report}");
}

/// A member that falls behind (processing 2 ms a record against 800 records/s), pauses
/// its partitions while behind as the tidings subscriber does, and loses its assignment
/// because the broker stays away longer than the session timeout. It gets every record
/// because it resumes the partitions of each new assignment: librdkafka keeps a pause
/// across a revocation and a new assignment. `RESTART_RAW_NO_RESUME_ON_ASSIGN=1` leaves
/// that out, to see the member stall (RESTART.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_paused_while_behind_resumes_after_losing_its_assignment() {
    let test = "a_member_that_paused_while_behind_resumes_after_losing_its_assignment";
    let behaviour = Behaviour {
        per_record: Duration::from_millis(2),
        pause_when_behind: true,
        resume_on_assign: std::env::var_os("RESTART_RAW_NO_RESUME_ON_ASSIGN").is_none(),
        stall_while_down: true,
    };
    let Some((ok, report)) = run(
        test,
        behaviour,
        Duration::from_secs(10),
        &[("session.timeout.ms", "6000")],
    )
    .await
    else {
        return;
    };
    assert!(ok, "{report}");
}
