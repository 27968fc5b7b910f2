//! The Library's persistent mode (`--persistent`): Lending's loans and patrons and
//! Catalog's inventory live in SQLite; Lending's integration events go through the
//! transactional outbox (written in the command's own transaction, published by a relay
//! that the bus runs), and Catalog handles them through the idempotent inbox (the inbox
//! record and the inventory change commit together, so a redelivered event changes
//! nothing twice).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tidings::prelude::*;
use tidings_outbox::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tidings_outbox::sqlx::{self, Sqlite, SqlitePool};
use tidings_outbox::{BusBuilderExt, InboxContext, Outbox, RelayConfig, SqliteOutbox};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::contracts::{BookBorrowed, BookId, BookReturned, LendingEvents, PatronId};
use crate::lending::LendingDomainEvent;
use tidings::domain::Converters;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Open (or create) the library's database at `path` with its tables.
pub async fn open(path: &Path) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    for ddl in [
        "CREATE TABLE IF NOT EXISTS patrons (id TEXT PRIMARY KEY, name TEXT NOT NULL, loans INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS loans (id TEXT PRIMARY KEY, book_id TEXT NOT NULL, patron_id TEXT NOT NULL, returned INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE IF NOT EXISTS inventory (book_id TEXT PRIMARY KEY, title TEXT NOT NULL, available INTEGER NOT NULL, total INTEGER NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    Ok(pool)
}

/// Lending on SQLite: each command is one transaction holding the loan, the patron's loan
/// count (the domain event's effect) and the outbox row of the integration event that
/// Lending's [`converters`](crate::lending::converters) make of the domain event.
pub struct SqlLending {
    pool: SqlitePool,
    outbox: SqliteOutbox,
    bus: Bus,
    converters: Converters<LendingDomainEvent>,
}

impl SqlLending {
    /// Lending with its store in `pool` and its events through `outbox` on `bus`.
    pub fn new(pool: SqlitePool, outbox: SqliteOutbox, bus: Bus) -> Self {
        SqlLending {
            pool,
            outbox,
            bus,
            converters: crate::lending::converters(),
        }
    }

    /// Write the integration events of the domain event `raised` in `tx`.
    async fn raise(
        &self,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        raised: LendingDomainEvent,
    ) -> Result<(), Error> {
        self.outbox
            .enqueue_converted(
                tx,
                &self.bus,
                &self.converters,
                &raised,
                PublishOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// Add a patron.
    pub async fn seed_patron(&self, id: PatronId, name: &str) -> Result<(), Error> {
        sqlx::query("INSERT OR IGNORE INTO patrons (id, name) VALUES (?, ?)")
            .bind(id.to_string())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Books a patron holds.
    pub async fn loans_of(&self, id: PatronId) -> Result<i64, Error> {
        Ok(sqlx::query_scalar("SELECT loans FROM patrons WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?)
    }

    /// Lend a book: save the loan, count it on the patron, enqueue `lending.book-borrowed`;
    /// all or nothing.
    pub async fn borrow_book(&self, patron_id: PatronId, book_id: BookId) -> Result<Uuid, Error> {
        // Reads then writes: take SQLite's write lock first.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let on_loan: bool = sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM loans WHERE book_id = ? AND returned = 0)",
        )
        .bind(book_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if on_loan {
            return Err(format!("book {book_id} is already on loan").into());
        }
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO loans (id, book_id, patron_id) VALUES (?, ?, ?)")
            .bind(id.to_string())
            .bind(book_id.to_string())
            .bind(patron_id.to_string())
            .execute(&mut *tx)
            .await?;
        let patron = sqlx::query("UPDATE patrons SET loans = loans + 1 WHERE id = ?")
            .bind(patron_id.to_string())
            .execute(&mut *tx)
            .await?;
        if patron.rows_affected() == 0 {
            return Err(format!("no patron {patron_id}").into());
        }
        self.raise(
            &mut tx,
            LendingDomainEvent::BookBorrowed { patron_id, book_id },
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Take a book back: close the loan, uncount it, enqueue `lending.book-returned`.
    pub async fn return_book(&self, loan_id: Uuid) -> Result<(), Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT book_id, patron_id FROM loans WHERE id = ? AND returned = 0")
                .bind(loan_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((book, patron)) = row else {
            return Err(format!("no open loan {loan_id}").into());
        };
        sqlx::query("UPDATE loans SET returned = 1 WHERE id = ?")
            .bind(loan_id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE patrons SET loans = loans - 1 WHERE id = ?")
            .bind(&patron)
            .execute(&mut *tx)
            .await?;
        let returned = LendingDomainEvent::BookReturned {
            book_id: BookId(Uuid::parse_str(&book)?),
            patron_id: PatronId(Uuid::parse_str(&patron)?),
        };
        self.raise(&mut tx, returned).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Catalog's subscription state in persistent mode: tells waiters about applied updates.
#[derive(Debug, Default)]
pub struct Applied {
    count: std::sync::Mutex<u64>,
    changed: Notify,
}

impl Applied {
    fn bump(&self) {
        *self.count.lock().unwrap() += 1;
        self.changed.notify_waiters();
    }

    /// Wait until `n` updates were applied.
    pub async fn wait_for(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            if *self.count.lock().unwrap() >= n {
                return;
            }
            changed.await;
        }
    }
}

async fn update_inventory(
    cx: &InboxContext<Applied, Sqlite>,
    book_id: BookId,
    delta: i64,
) -> Result<(), HandlerError> {
    let (title, available, total): (String, i64, i64) = {
        let mut tx = cx.tx()?;
        sqlx::query_as(
            "UPDATE inventory SET available = available + ? WHERE book_id = ? AND available + ? BETWEEN 0 AND total RETURNING title, available, total",
        )
        .bind(delta)
        .bind(book_id.to_string())
        .bind(delta)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| HandlerError::permanent(format!("cannot change book {book_id} by {delta}")))?
    };
    println!(
        "catalog: {title} {} -> {available} of {total} on the shelf (in SQLite)",
        if delta < 0 { "borrowed" } else { "returned" }
    );
    Ok(())
}

/// `lending.book-borrowed`, idempotently: the inbox record and the inventory change commit
/// together.
pub async fn book_borrowed(
    e: BookBorrowed,
    cx: InboxContext<Applied, Sqlite>,
) -> Result<(), HandlerError> {
    update_inventory(&cx, e.book_id, -1).await?;
    cx.state().bump();
    Ok(())
}

/// `lending.book-returned`, idempotently.
pub async fn book_returned(
    e: BookReturned,
    cx: InboxContext<Applied, Sqlite>,
) -> Result<(), HandlerError> {
    update_inventory(&cx, e.book_id, 1).await?;
    cx.state().bump();
    Ok(())
}

/// Run the Library flow with SQLite at `path` on the transport at `url`.
pub async fn run(url: String, path: &Path) -> Result<(), Error> {
    println!("library: persistent mode, SQLite at {}", path.display());
    let pool = open(path).await?;
    let outbox = Outbox::sqlite(pool.clone()).await?;
    let (dune, solaris) = (BookId::new(), BookId::new());
    for (id, title, copies) in [(dune, "Dune", 2), (solaris, "Solaris", 1)] {
        sqlx::query("INSERT INTO inventory (book_id, title, available, total) VALUES (?, ?, ?, ?)")
            .bind(id.to_string())
            .bind(title)
            .bind(copies)
            .bind(copies)
            .execute(&pool)
            .await?;
    }

    let applied = Arc::new(Applied::default());
    let catalog = Bus::builder("catalog")
        .transport_url(url.clone())
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(applied.clone())
                .on(outbox.inbox().handler(book_borrowed))
                .on(outbox.inbox().handler(book_returned)),
        )
        .build()
        .await?;
    let lending_bus = Bus::builder("lending")
        .transport_url(url)
        .publishes::<LendingEvents>()
        .with_relay(outbox.clone(), RelayConfig::default())
        .build()
        .await?;
    let lending = SqlLending::new(pool.clone(), outbox.clone(), lending_bus.clone());
    let (diana, tomas) = (PatronId::new(), PatronId::new());
    lending.seed_patron(diana, "Diana").await?;
    lending.seed_patron(tomas, "Tomás").await?;

    let loan = lending.borrow_book(diana, dune).await?;
    println!(
        "lending: Diana borrowed Dune (loans: {}; event in the outbox)",
        lending.loans_of(diana).await?
    );
    lending.borrow_book(tomas, solaris).await?;
    println!(
        "lending: Tomás borrowed Solaris (loans: {})",
        lending.loans_of(tomas).await?
    );
    lending.return_book(loan).await?;
    println!(
        "lending: Diana returned Dune (loans: {})",
        lending.loans_of(diana).await?
    );

    tokio::time::timeout(Duration::from_secs(30), applied.wait_for(3)).await?;
    lending_bus.shutdown().await;
    catalog.shutdown().await;

    let shelf: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT title, available, total FROM inventory WHERE book_id IN (?, ?) ORDER BY title",
    )
    .bind(dune.to_string())
    .bind(solaris.to_string())
    .fetch_all(&pool)
    .await?;
    let shelf: Vec<String> = shelf
        .into_iter()
        .map(|(t, a, n)| format!("{t} {a}/{n}"))
        .collect();
    println!("inventory: {}", shelf.join(", "));
    Ok(())
}
