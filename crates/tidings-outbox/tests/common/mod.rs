//! Shared test fixtures: events, databases, a transport that can be switched off; the
//! suites' buses and setup in [`suite`].
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod suite;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::{Capabilities, SubscriptionSpec, Topology, Transport},
    DeadLetter, Envelope, Error, ErrorKind, Event, EventInfo, Replay, Result, Topic, TopicMember,
};
use tidings_memory::{Memory, MemorySubscriber};

/// Lending publishes these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BookBorrowed {
    pub book: String,
    pub n: u32,
}
impl Event for BookBorrowed {
    const NAME: &'static str = "lending.book-borrowed";
    const VERSION: u32 = 1;
}
impl TopicMember for BookBorrowed {
    type Topic = LendingEvents;
}
pub struct LendingEvents;
impl Topic for LendingEvents {
    const NAME: &'static str = "lending";
    fn events() -> &'static [EventInfo] {
        &[EventInfo {
            name: BookBorrowed::NAME,
            version: 1,
            type_name: "BookBorrowed",
        }]
    }
}

/// Catalog publishes these from its handlers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StockChanged {
    pub book: String,
    pub n: u32,
}
impl Event for StockChanged {
    const NAME: &'static str = "catalog.stock-changed";
    const VERSION: u32 = 1;
}
impl TopicMember for StockChanged {
    type Topic = CatalogEvents;
}
pub struct CatalogEvents;
impl Topic for CatalogEvents {
    const NAME: &'static str = "catalog";
    fn events() -> &'static [EventInfo] {
        &[EventInfo {
            name: StockChanged::NAME,
            version: 1,
            type_name: "StockChanged",
        }]
    }
}

/// Removes what a test created when dropped: its SQLite file, or its tables in the shared
/// PostgreSQL database (all tables whose name starts with the prefix).
#[derive(Debug, Default)]
pub struct Cleanup {
    pub sqlite_file: Option<std::path::PathBuf>,
    pub postgres_prefix: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.sqlite_file.take() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        #[cfg(feature = "postgres")]
        if let (Some(prefix), Ok(url)) = (
            self.postgres_prefix.take(),
            std::env::var("TIDINGS_POSTGRES_URL"),
        ) {
            // Drop runs inside the test's runtime: clean up from a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    use tidings_outbox::sqlx::{self, Connection};
                    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else { return };
                    let tables: Vec<String> = sqlx::query_scalar(
                        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
                    )
                    .bind(&prefix)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
                    if !tables.is_empty() {
                        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {}", tables.join(", "))).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}

/// A short unique name for tables of one test (PostgreSQL tests share a database).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}_",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Memory behind a switch: while `down`, publishing fails as an unreachable broker does;
/// envelopes with the header `poison` are refused for good. Counts publish calls, failed
/// calls and the envelopes it published.
#[derive(Clone)]
pub struct Switchable {
    pub inner: Memory,
    pub down: Arc<AtomicBool>,
    pub publish_calls: Arc<AtomicUsize>,
    pub failed_calls: Arc<AtomicUsize>,
    pub published: Arc<AtomicUsize>,
}

impl Switchable {
    pub fn new(inner: Memory) -> Self {
        Switchable {
            inner,
            down: Arc::default(),
            publish_calls: Arc::default(),
            failed_calls: Arc::default(),
            published: Arc::default(),
        }
    }
}

impl Transport for Switchable {
    type Subscriber = MemorySubscriber;
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn provision(&self, topology: &Topology) -> Result<()> {
        self.inner.provision(topology).await
    }
    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        self.publish_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            self.failed_calls.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable("the test broker is down"));
        }
        if envelopes.iter().any(|e| e.header("poison").is_some()) {
            return Err(Error::new(
                ErrorKind::Rejected,
                "the test broker refuses poison",
            ));
        }
        let n = envelopes.len();
        self.inner.publish(topic, envelopes).await?;
        self.published.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<MemorySubscriber> {
        self.inner.subscribe(spec).await
    }
    async fn dead_letters(&self, spec: &SubscriptionSpec, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(spec, limit).await
    }
    async fn replay_dead_letters(&self, spec: &SubscriptionSpec, which: &Replay) -> Result<usize> {
        self.inner.replay_dead_letters(spec, which).await
    }
    fn broker_objects(&self, topology: &Topology) -> Vec<tidings_core::BrokerObject> {
        self.inner.broker_objects(topology)
    }
    async fn teardown(&self, topology: &Topology) -> Result<()> {
        self.inner.teardown(topology).await
    }
}

/// Wait until `cond` holds, checking every 10 ms, for at most 30 s (a deadline for a
/// stuck test, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(feature = "sqlite")]
pub mod sqlite {
    use std::path::PathBuf;
    use std::str::FromStr;

    use tidings_outbox::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    };
    use tidings_outbox::sqlx::SqlitePool;

    /// A file in the temp dir for one test.
    pub fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "tidings-outbox-{name}-{}.db",
            uuid::Uuid::new_v4().simple()
        ))
    }

    pub async fn pool_at(path: &std::path::Path) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap()
    }

    pub async fn pool() -> SqlitePool {
        pool_at(&temp_path("t")).await
    }
}

#[cfg(feature = "postgres")]
pub mod postgres {
    use tidings_outbox::sqlx::postgres::PgPoolOptions;
    use tidings_outbox::sqlx::PgPool;

    /// The test database from `TIDINGS_POSTGRES_URL`; `None` (with a printed line) when
    /// the variable is unset. Panics when it is set but the database is unreachable.
    pub async fn pool(test: &str) -> Option<PgPool> {
        let Ok(url) = std::env::var("TIDINGS_POSTGRES_URL") else {
            println!("skipping {test}: TIDINGS_POSTGRES_URL is not set");
            return None;
        };
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!("TIDINGS_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
            });
        Some(pool)
    }
}
