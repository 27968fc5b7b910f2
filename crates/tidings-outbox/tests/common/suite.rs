//! What the outbox, inbox and relay suites share: an observer of what was published, the
//! lending bus with and without a relay, and a fresh outbox per test on each database.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_core::{transport::Transport, Bus, Context, HandlerError, Subscription};
use tidings_memory::Memory;
use tidings_outbox::{sqlx, Backend, BusBuilderExt, Outbox, RelayConfig};
use uuid::Uuid;

use super::{unique, BookBorrowed, Cleanup, LendingEvents, StockChanged};

/// What a plain subscriber saw of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: Uuid,
    pub n: u32,
    pub correlation: Option<Uuid>,
    pub causation: Option<Uuid>,
    pub tenant: Option<String>,
}

pub type Log = Mutex<Vec<Seen>>;

pub async fn record_borrowed(e: BookBorrowed, cx: Context<Log>) -> Result<(), HandlerError> {
    cx.state().lock().unwrap().push(Seen {
        id: cx.id(),
        n: e.n,
        correlation: cx.correlation_id(),
        causation: cx.causation_id(),
        tenant: cx.header("tenant").map(str::to_string),
    });
    Ok(())
}

pub async fn record_stock(e: StockChanged, cx: Context<Log>) -> Result<(), HandlerError> {
    cx.state().lock().unwrap().push(Seen {
        id: cx.id(),
        n: e.n,
        correlation: cx.correlation_id(),
        causation: cx.causation_id(),
        tenant: None,
    });
    Ok(())
}

pub fn fast() -> RelayConfig {
    RelayConfig::default()
        .poll_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
}

pub async fn lending_bus(transport: impl Transport) -> Bus {
    Bus::builder("lending")
        .transport(transport)
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap()
}

/// Lending with a relay run by the bus.
pub async fn lending_with_relay<DB: Backend>(
    transport: impl Transport,
    outbox: &Outbox<DB>,
    config: RelayConfig,
) -> Bus {
    Bus::builder("lending")
        .transport(transport)
        .publishes::<LendingEvents>()
        .with_relay(outbox.clone(), config)
        .build()
        .await
        .unwrap()
}

pub async fn recorder(hub: &Memory) -> (Bus, Arc<Log>) {
    let log = Arc::new(Log::default());
    let bus = Bus::builder("observer")
        .transport(hub.clone())
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(log.clone())
                .on(record_borrowed),
        )
        .build()
        .await
        .unwrap();
    (bus, log)
}

pub fn ns(log: &Log) -> Vec<u32> {
    log.lock().unwrap().iter().map(|s| s.n).collect()
}

/// A database the suites run on.
pub trait TestDb: Backend {
    /// A pool for `test`, whose tables start with `prefix`, and what removes them when
    /// dropped; `None` (the test is skipped) when the database is not configured.
    fn pool(test: &str, prefix: &str) -> impl Future<Output = Option<(sqlx::Pool<Self>, Cleanup)>>;
}

#[cfg(feature = "sqlite")]
impl TestDb for sqlx::Sqlite {
    async fn pool(_test: &str, _prefix: &str) -> Option<(sqlx::SqlitePool, Cleanup)> {
        let path = super::sqlite::temp_path("t");
        let pool = super::sqlite::pool_at(&path).await;
        Some((
            pool,
            Cleanup {
                sqlite_file: Some(path),
                postgres_prefix: None,
            },
        ))
    }
}

#[cfg(feature = "postgres")]
impl TestDb for sqlx::Postgres {
    async fn pool(test: &str, prefix: &str) -> Option<(sqlx::PgPool, Cleanup)> {
        let pool = super::postgres::pool(test).await?;
        Some((
            pool,
            Cleanup {
                sqlite_file: None,
                postgres_prefix: Some(prefix.to_string()),
            },
        ))
    }
}

/// A fresh outbox for `test` on `DB`, with tables of its own: the pool, the outbox, the
/// table prefix, and what removes the tables.
pub async fn setup<DB: TestDb>(
    test: &str,
) -> Option<(sqlx::Pool<DB>, Outbox<DB>, String, Cleanup)> {
    let prefix = unique("t");
    let (pool, cleanup) = DB::pool(test, &prefix).await?;
    let outbox = Outbox::builder(pool.clone())
        .table_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    Some((pool, outbox, prefix, cleanup))
}
