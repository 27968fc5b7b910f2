//! Crash tests, for real: a child process (this test binary run again, with
//! `TIDINGS_CRASH_ROLE` set) is killed with SIGKILL at a chosen point, then this process
//! plays the restarted service on the same database and checks that every event is
//! delivered and every effect happened exactly once.
//!
//! (a) `after_commit_before_publish`: the victim commits loans and their events, then is
//!     killed before any relay published them. The restarted relay publishes them.
//! (b) `after_handling_before_ack`: the victim's relay publishes the events, but the
//!     broker's confirms never come back (so the rows stay pending); the victim's inbox
//!     handler commits the effects of the first three events and the process is killed
//!     inside the handler call, after the commit and before the acknowledgement. On
//!     restart the outbox publishes all events again (the at-least-once redelivery) and
//!     the inbox acknowledges the three handled ones without running the handler.
//!
//! The memory transport dies with the victim, so there redelivery comes from the outbox
//! rows the victim left pending. (b) runs a second time on RabbitMQ (when
//! `TIDINGS_RABBITMQ_URL` is set): the victim's relay publishes with confirms, the victim
//! is killed inside the handler of the third event, and the broker itself redelivers the
//! unacknowledged deliveries to the restarted consumer.
#![allow(missing_docs)]

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tidings_core::{
    transport::{Capabilities, SubscriptionSpec, Topology, Transport},
    Bus, BusBuilder, Context, DeadLetter, Envelope, Handler, HandlerError, Replay, Result,
    Subscription,
};
use tidings_memory::{Memory, MemorySubscriber};
use tidings_outbox::{BusBuilderExt, InboxContext, Outbox, RelayConfig};
use tidings_rabbitmq::RabbitMq;

const ROLE: &str = "TIDINGS_CRASH_ROLE";
const DB: &str = "TIDINGS_CRASH_DB";
const PREFIX: &str = "TIDINGS_CRASH_PREFIX";
const NAMESPACE: &str = "TIDINGS_CRASH_NAMESPACE";
const EVENTS: u32 = 20;
const HANDLED_BEFORE_KILL: u32 = 3;

/// Kill this process with SIGKILL (no destructors, no flushing, like a power cut).
fn kill_self() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The transport of the victim in (b): publishes into the memory hub, but the broker's
/// confirmation never arrives, so the relay never marks the rows.
#[derive(Clone)]
struct ConfirmsNeverArrive(Memory);

impl Transport for ConfirmsNeverArrive {
    type Subscriber = MemorySubscriber;
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.0.provision(topology).await
    }
    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        self.0.publish(topic, envelopes).await?;
        std::future::pending().await
    }
    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<MemorySubscriber> {
        self.0.subscribe(spec).await
    }
    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        self.0.dead_letters(spec, limit).await
    }
    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        self.0.replay_dead_letters(spec, which).await
    }
    fn broker_objects(&self, topology: &Topology) -> Vec<tidings_core::BrokerObject> {
        self.0.broker_objects(topology)
    }
    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.0.teardown(topology).await
    }
}

/// Runs the inner handler, and after its `n`-th success (the inbox transaction has
/// committed) kills the process before the consumer can acknowledge the delivery.
struct KillAfter<H> {
    inner: H,
    n: u32,
    done: AtomicU32,
}

impl<H, S> Handler<BookBorrowed, S> for KillAfter<H>
where
    H: Handler<BookBorrowed, S>,
    S: Send + Sync + 'static,
{
    async fn handle(
        &self,
        event: BookBorrowed,
        cx: Context<S>,
    ) -> std::result::Result<(), HandlerError> {
        self.inner.handle(event, cx).await?;
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            println!(
                "victim: {} events handled and committed; SIGKILL before the ack",
                self.n
            );
            kill_self();
        }
        Ok(())
    }
}

/// Counts every call, then runs the inner handler.
struct Count<H> {
    inner: H,
    calls: Arc<AtomicU32>,
}

impl<H, S> Handler<BookBorrowed, S> for Count<H>
where
    H: Handler<BookBorrowed, S>,
    S: Send + Sync + 'static,
{
    async fn handle(
        &self,
        event: BookBorrowed,
        cx: Context<S>,
    ) -> std::result::Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.handle(event, cx).await
    }
}

fn rabbitmq_url(test: &str) -> Option<String> {
    match std::env::var("TIDINGS_RABBITMQ_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            println!("skipping {test}: TIDINGS_RABBITMQ_URL is not set");
            None
        }
    }
}

/// Catalog's state: where effects go, and how often the handler body ran in this process.
struct Effects {
    table: String,
    runs: AtomicU32,
}

/// Removes the SQLite file or the PostgreSQL tables of one crash test when dropped.
fn cleanup(db: &str, prefix: &str) -> Cleanup {
    match db.strip_prefix("sqlite:") {
        Some(path) => Cleanup {
            sqlite_file: Some(path.into()),
            postgres_prefix: None,
        },
        None => Cleanup {
            sqlite_file: None,
            postgres_prefix: Some(prefix.to_string()),
        },
    }
}

/// Shared by both databases: the statements use `$n` placeholders, which SQLite accepts.
macro_rules! crash_suite {
    ($name:ident, $feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        pub(crate) mod $name {
            use super::*;
            use tidings_outbox::sqlx;

            type Db = $db;

            /// Catalog's inbox handler: an effect row and a follow-up event, in the inbox
            /// transaction.
            async fn apply(e: BookBorrowed, cx: InboxContext<Effects, Db>) -> std::result::Result<(), HandlerError> {
                cx.state().runs.fetch_add(1, Ordering::SeqCst);
                {
                    let mut tx = cx.tx()?;
                    sqlx::query(&format!("INSERT INTO {} (n, event_id) VALUES ($1, $2)", cx.state().table))
                        .bind(i64::from(e.n))
                        .bind(cx.id().to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                cx.publish(StockChanged { book: e.book, n: e.n }).await?;
                Ok(())
            }

            async fn lending(transport: impl Transport) -> Bus {
                Bus::builder("lending").transport(transport).publishes::<LendingEvents>().build().await.unwrap()
            }

            /// Lending with its relay.
            async fn relaying_lending(transport: impl Transport, outbox: &Outbox<Db>, config: RelayConfig) -> Bus {
                Bus::builder("lending")
                    .transport(transport)
                    .publishes::<LendingEvents>()
                    .with_relay(outbox.clone(), config)
                    .build()
                    .await
                    .unwrap()
            }

            async fn count(pool: &sqlx::Pool<Db>, sql: &str) -> i64 {
                sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
            }

            /// Lending's use case: a loan row and its event in one transaction.
            async fn borrow(pool: &sqlx::Pool<Db>, outbox: &Outbox<Db>, bus: &Bus, prefix: &str, n: u32) {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {prefix}loans (n) VALUES ($1)")).bind(i64::from(n)).execute(&mut *tx).await.unwrap();
                outbox.enqueue(&mut tx, bus, BookBorrowed { book: format!("book-{n}"), n }).await.unwrap();
                tx.commit().await.unwrap();
            }

            pub(crate) async fn create_tables(pool: &sqlx::Pool<Db>, prefix: &str) -> Outbox<Db> {
                sqlx::query(&format!("CREATE TABLE {prefix}loans (n BIGINT NOT NULL)")).execute(pool).await.unwrap();
                sqlx::query(&format!("CREATE TABLE {prefix}effects (n BIGINT NOT NULL, event_id TEXT NOT NULL)"))
                    .execute(pool)
                    .await
                    .unwrap();
                Outbox::builder(pool.clone()).table_prefix(prefix).build().await.unwrap()
            }

            /// The victim's part; never returns normally (the process is killed).
            pub(crate) async fn victim(pool: sqlx::Pool<Db>, role: &str, prefix: &str) {
                let outbox = Outbox::builder(pool.clone()).table_prefix(prefix).build().await.unwrap();
                match role {
                    "enqueue" => {
                        let bus = lending(Memory::new()).await;
                        for n in 0..EVENTS {
                            borrow(&pool, &outbox, &bus, prefix, n).await;
                        }
                        println!("victim: {EVENTS} loans and events committed; SIGKILL before any publish");
                        kill_self();
                    }
                    "handle" => {
                        let hub = ConfirmsNeverArrive(Memory::new());
                        let effects = Arc::new(Effects { table: format!("{prefix}effects"), runs: AtomicU32::new(0) });
                        let handler = KillAfter { inner: outbox.inbox().handler(apply), n: HANDLED_BEFORE_KILL, done: AtomicU32::new(0) };
                        let _catalog = Bus::builder("catalog")
                            .transport(hub.clone())
                            .publishes::<CatalogEvents>()
                            .subscribe(Subscription::to::<LendingEvents>().with_shared_state(effects).on(handler))
                            .build()
                            .await
                            .unwrap();
                        let _lending = relaying_lending(hub, &outbox, RelayConfig::default()).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        panic!("victim: the handler was never called");
                    }
                    "handle-rabbitmq" => {
                        let url = std::env::var("TIDINGS_RABBITMQ_URL").unwrap();
                        let ns = std::env::var(NAMESPACE).unwrap();
                        let effects = Arc::new(Effects { table: format!("{prefix}effects"), runs: AtomicU32::new(0) });
                        let handler = KillAfter { inner: outbox.inbox().handler(apply), n: HANDLED_BEFORE_KILL, done: AtomicU32::new(0) };
                        // No audit consumer here: what it took would die with the victim.
                        let config = RelayConfig::default().poll_interval(Duration::from_millis(20));
                        let (_catalog, _lending, _) = rabbit_buses(&url, &ns, handler, effects, None, Some((&outbox, config))).await;
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        panic!("victim: the handler was never called");
                    }
                    other => panic!("unknown crash role {other}"),
                }
            }

            /// Catalog (subscribing with `handler`), Lending and Audit (recording follow-ups)
            /// on RabbitMQ under namespace `ns`; Catalog and Lending run relays with `relay`
            /// (started once Audit subscribes).
            async fn rabbit_buses<H: Handler<BookBorrowed, Effects>>(
                url: &str,
                ns: &str,
                handler: H,
                effects: Arc<Effects>,
                follow_ups: Option<Arc<Mutex<Vec<u32>>>>,
                relay: Option<(&Outbox<Db>, RelayConfig)>,
            ) -> (Bus, Bus, Option<Bus>) {
                let with_relay = |builder: BusBuilder| match &relay {
                    Some((outbox, config)) => builder.with_relay((*outbox).clone(), config.clone()),
                    None => builder,
                };
                let audit = match follow_ups {
                    None => None,
                    Some(follow_ups) => Some(Bus::builder("audit")
                    .namespace(ns)
                    .transport(RabbitMq::from_url(url).unwrap())
                    .subscribe(Subscription::to::<CatalogEvents>().with_shared_state(follow_ups).on(
                        |e: StockChanged, cx: Context<Mutex<Vec<u32>>>| async move {
                            cx.state().lock().unwrap().push(e.n);
                            Ok(())
                        },
                    ))
                    .build()
                    .await
                    .unwrap()),
                };
                let catalog = with_relay(Bus::builder("catalog"))
                    .namespace(ns)
                    .transport(RabbitMq::from_url(url).unwrap())
                    .publishes::<CatalogEvents>()
                    .subscribe(Subscription::to::<LendingEvents>().with_shared_state(effects).on(handler))
                    .build()
                    .await
                    .unwrap();
                let lending = with_relay(Bus::builder("lending"))
                    .namespace(ns)
                    .transport(RabbitMq::from_url(url).unwrap())
                    .publishes::<LendingEvents>()
                    .build()
                    .await
                    .unwrap();
                (catalog, lending, audit)
            }

            pub(crate) async fn after_handling_before_ack_rabbitmq(pool: sqlx::Pool<Db>, db: &str, url: &str) {
                let prefix = unique("crash_r");
                let _cleanup = cleanup(db, &prefix);
                let ns = prefix.trim_end_matches('_').to_string();
                let outbox = create_tables(&pool, &prefix).await;
                // Deploy: every queue exists before anything is published.
                let effects = Arc::new(Effects { table: format!("{prefix}effects"), runs: AtomicU32::new(0) });
                let (catalog, lending, audit) = rabbit_buses(url, &ns, outbox.inbox().handler(apply), effects, Some(Arc::default()), None).await;
                catalog.shutdown().await;
                audit.unwrap().shutdown().await;
                for n in 0..EVENTS {
                    borrow(&pool, &outbox, &lending, &prefix, n).await;
                }
                lending.shutdown().await;

                run_victim_with("handle-rabbitmq", db, &prefix, &[(NAMESPACE, ns.as_str())]).await;
                assert_eq!(
                    count(&pool, &format!("SELECT COUNT(*) FROM {prefix}effects")).await,
                    i64::from(HANDLED_BEFORE_KILL),
                    "the victim committed the effects of the events it handled"
                );

                // The restarted service.
                let effects = Arc::new(Effects { table: format!("{prefix}effects"), runs: AtomicU32::new(0) });
                let calls = Arc::new(AtomicU32::new(0));
                let follow_ups = Arc::new(Mutex::new(Vec::<u32>::new()));
                let handler = Count { inner: outbox.inbox().handler(apply), calls: calls.clone() };
                let config = RelayConfig::default().poll_interval(Duration::from_millis(20));
                let (catalog, lending, audit) = rabbit_buses(url, &ns, handler, effects.clone(), Some(follow_ups.clone()), Some((&outbox, config))).await;
                let audit = audit.unwrap();
                let distinct = |v: &Mutex<Vec<u32>>| {
                    let mut v = v.lock().unwrap().clone();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                let e = format!("{prefix}effects");
                eventually("every effect is there", || async { count(&pool, &format!("SELECT COUNT(*) FROM {e}")).await >= i64::from(EVENTS) }).await;
                eventually("every follow-up arrives", || async { distinct(&follow_ups).len() >= EVENTS as usize }).await;
                eventually("both outboxes are drained", || async { outbox.counts(None).await.unwrap().pending == 0 }).await;
                // Give a stray duplicate the chance to show up before counting.
                tokio::time::sleep(Duration::from_millis(500)).await;

                assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {e}")).await, i64::from(EVENTS), "an effect is doubled");
                assert_eq!(count(&pool, &format!("SELECT COUNT(DISTINCT n) FROM {e}")).await, i64::from(EVENTS));
                assert_eq!(distinct(&follow_ups), (0..EVENTS).collect::<Vec<_>>());
                let runs = effects.runs.load(Ordering::SeqCst);
                let calls = calls.load(Ordering::SeqCst);
                println!("restart on RabbitMQ: {calls} deliveries, {runs} handler runs, {EVENTS} effects");
                assert_eq!(runs, EVENTS - HANDLED_BEFORE_KILL, "the handler ran again for an event the victim handled");
                assert!(
                    calls > runs,
                    "the broker redelivered no event the victim had handled ({calls} deliveries, {runs} handler runs)"
                );
                catalog.shutdown().await;
                audit.shutdown().await;
                lending.shutdown().await;
            }

            async fn run_victim(role: &str, db: &str, prefix: &str) {
                run_victim_with(role, db, prefix, &[]).await
            }

            async fn run_victim_with(role: &str, db: &str, prefix: &str, env: &[(&str, &str)]) {
                let exe = std::env::current_exe().unwrap();
                let child = tokio::process::Command::new(exe)
                    .args(["crash_victim", "--exact", "--nocapture", "--test-threads=1"])
                    .env(ROLE, role)
                    .env(DB, db)
                    .env(PREFIX, prefix)
                    .envs(env.iter().copied())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                    .await
                    .expect("the victim did not die within 120 s")
                    .unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                let stderr = String::from_utf8_lossy(&output.stderr);
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    output.status.signal(),
                    Some(9),
                    "the victim was not killed by SIGKILL: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                    output.status
                );
                assert!(stdout.contains("SIGKILL"), "the victim died elsewhere:\n{stdout}\n{stderr}");
            }

            /// The restarted service: fresh buses and relays on the same database. Returns
            /// how often the catalog handler body ran here.
            async fn restart_and_check(pool: &sqlx::Pool<Db>, prefix: &str) -> u32 {
                let outbox = Outbox::builder(pool.clone()).table_prefix(prefix).build().await.unwrap();
                let hub = Memory::new();
                let effects = Arc::new(Effects { table: format!("{prefix}effects"), runs: AtomicU32::new(0) });
                let follow_ups = Arc::new(Mutex::new(Vec::<u32>::new()));
                let config = RelayConfig::default().poll_interval(Duration::from_millis(20));
                // Audit subscribes before the relays start: the memory transport drops what is
                // published before a subscription exists.
                let seen = follow_ups.clone();
                let audit = Bus::builder("audit")
                    .transport(hub.clone())
                    .subscribe(Subscription::to::<CatalogEvents>().with_shared_state(seen).on(
                        |e: StockChanged, cx: Context<Mutex<Vec<u32>>>| async move {
                            cx.state().lock().unwrap().push(e.n);
                            Ok(())
                        },
                    ))
                    .build()
                    .await
                    .unwrap();
                let catalog = Bus::builder("catalog")
                    .transport(hub.clone())
                    .publishes::<CatalogEvents>()
                    .subscribe(Subscription::to::<LendingEvents>().with_shared_state(effects.clone()).on(outbox.inbox().handler(apply)))
                    .with_relay(outbox.clone(), config.clone())
                    .build()
                    .await
                    .unwrap();
                let lending = relaying_lending(hub.clone(), &outbox, config).await;

                eventually("every follow-up arrives", || async { follow_ups.lock().unwrap().len() >= EVENTS as usize }).await;
                eventually("both outboxes are drained", || async { outbox.counts(None).await.unwrap().pending == 0 }).await;
                hub.idle().await;
                // Give a stray duplicate the chance to show up before counting.
                tokio::time::sleep(Duration::from_millis(200)).await;
                hub.idle().await;

                let e = format!("{prefix}effects");
                assert_eq!(count(pool, &format!("SELECT COUNT(*) FROM {prefix}loans")).await, i64::from(EVENTS));
                assert_eq!(count(pool, &format!("SELECT COUNT(*) FROM {e}")).await, i64::from(EVENTS), "an effect is missing or doubled");
                assert_eq!(count(pool, &format!("SELECT COUNT(DISTINCT n) FROM {e}")).await, i64::from(EVENTS));
                assert_eq!(count(pool, &format!("SELECT COUNT(DISTINCT event_id) FROM {e}")).await, i64::from(EVENTS));
                let mut follow = follow_ups.lock().unwrap().clone();
                follow.sort_unstable();
                assert_eq!(follow, (0..EVENTS).collect::<Vec<_>>(), "each follow-up event exactly once");

                lending.shutdown().await;
                catalog.shutdown().await;
                audit.shutdown().await;
                effects.runs.load(Ordering::SeqCst)
            }

            pub(crate) async fn after_commit_before_publish(pool: sqlx::Pool<Db>, db: &str) {
                let prefix = unique("crash_a");
                let _cleanup = cleanup(db, &prefix);
                let outbox = create_tables(&pool, &prefix).await;
                run_victim("enqueue", db, &prefix).await;
                // The victim's work is committed and nothing was published.
                assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {prefix}loans")).await, i64::from(EVENTS));
                assert_eq!(outbox.counts(Some("lending")).await.unwrap().pending, u64::from(EVENTS));
                let runs = restart_and_check(&pool, &prefix).await;
                assert_eq!(runs, EVENTS, "every event handled once after the restart");
            }

            pub(crate) async fn after_handling_before_ack(pool: sqlx::Pool<Db>, db: &str) {
                let prefix = unique("crash_b");
                let _cleanup = cleanup(db, &prefix);
                let outbox = create_tables(&pool, &prefix).await;
                let bus = lending(Memory::new()).await;
                for n in 0..EVENTS {
                    borrow(&pool, &outbox, &bus, &prefix, n).await;
                }
                run_victim("handle", db, &prefix).await;
                // The victim handled three events and committed their effects and
                // follow-ups; none was acknowledged and no row was marked published.
                assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {prefix}effects")).await, i64::from(HANDLED_BEFORE_KILL));
                assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {prefix}inbox")).await, i64::from(HANDLED_BEFORE_KILL));
                assert_eq!(outbox.counts(Some("lending")).await.unwrap().pending, u64::from(EVENTS));
                assert_eq!(outbox.counts(Some("catalog")).await.unwrap().pending, u64::from(HANDLED_BEFORE_KILL));
                let runs = restart_and_check(&pool, &prefix).await;
                assert_eq!(
                    runs,
                    EVENTS - HANDLED_BEFORE_KILL,
                    "the inbox must absorb the redelivered events the victim handled"
                );
            }
        }
    };
}

crash_suite!(sqlite_db, "sqlite", tidings_outbox::sqlx::Sqlite);
crash_suite!(postgres_db, "postgres", tidings_outbox::sqlx::Postgres);

/// Not a test of its own: the entry point of the victim process. Does nothing unless
/// `TIDINGS_CRASH_ROLE` is set (by the crash tests, for the child they start).
#[test]
fn crash_victim() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let db = std::env::var(DB).unwrap();
    let prefix = std::env::var(PREFIX).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        if let Some(path) = db.strip_prefix("sqlite:") {
            sqlite_db::victim(
                common::sqlite::pool_at(std::path::Path::new(path)).await,
                &role,
                &prefix,
            )
            .await;
        } else if db == "postgres" {
            #[cfg(feature = "postgres")]
            postgres_db::victim(
                common::postgres::pool("victim").await.unwrap(),
                &role,
                &prefix,
            )
            .await;
        }
        panic!("victim: unknown database {db}");
    });
}

fn sqlite_path() -> String {
    format!("sqlite:{}", common::sqlite::temp_path("crash").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_after_commit_before_publish() {
    let db = sqlite_path();
    let pool =
        common::sqlite::pool_at(std::path::Path::new(db.strip_prefix("sqlite:").unwrap())).await;
    sqlite_db::after_commit_before_publish(pool, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_after_handling_before_ack() {
    let db = sqlite_path();
    let pool =
        common::sqlite::pool_at(std::path::Path::new(db.strip_prefix("sqlite:").unwrap())).await;
    sqlite_db::after_handling_before_ack(pool, &db).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_after_commit_before_publish() {
    let Some(pool) = common::postgres::pool("postgres_crash_after_commit_before_publish").await
    else {
        return;
    };
    postgres_db::after_commit_before_publish(pool, "postgres").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_after_handling_before_ack() {
    let Some(pool) = common::postgres::pool("postgres_crash_after_handling_before_ack").await
    else {
        return;
    };
    postgres_db::after_handling_before_ack(pool, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rabbitmq_crash_after_handling_before_ack() {
    let Some(url) = rabbitmq_url("sqlite_rabbitmq_crash_after_handling_before_ack") else {
        return;
    };
    let db = sqlite_path();
    let pool =
        common::sqlite::pool_at(std::path::Path::new(db.strip_prefix("sqlite:").unwrap())).await;
    sqlite_db::after_handling_before_ack_rabbitmq(pool, &db, &url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rabbitmq_crash_after_handling_before_ack() {
    let test = "postgres_rabbitmq_crash_after_handling_before_ack";
    let Some(url) = rabbitmq_url(test) else {
        return;
    };
    let Some(pool) = common::postgres::pool(test).await else {
        return;
    };
    postgres_db::after_handling_before_ack_rabbitmq(pool, "postgres", &url).await;
}
