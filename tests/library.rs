//! The Library example's behaviour, on the test harness (memory transport + recording).

#![allow(unreachable_pub)]

#[path = "../examples/library/catalog.rs"]
#[allow(dead_code)]
mod catalog;
#[path = "../examples/library/contracts.rs"]
#[allow(dead_code)]
mod contracts;
#[path = "../examples/library/lending.rs"]
#[allow(dead_code)]
mod lending;
#[path = "../examples/library/persistent.rs"]
#[allow(dead_code)]
mod persistent;

use std::sync::Arc;

use tidings::Replay;
use tidings_testing::TestBus;

use catalog::Inventory;
use contracts::{BookBorrowed, BookId, BookReturned, LendingEvents, PatronId};
use lending::{Lending, LendingError, LendingStore};

async fn lending_on(harness: &TestBus) -> Lending {
    let bus = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .expect("lending bus");
    Lending::new(bus, Arc::new(LendingStore::default()))
}

/// The seed's `BorrowBook_PublishesIntegrationEvent`.
#[tokio::test]
async fn borrow_book_publishes_integration_event() {
    let harness = TestBus::new();
    let lending = lending_on(&harness).await;
    let (patron_id, book_id) = (PatronId::new(), BookId::new());
    lending.store.seed_patron(patron_id, "Diana");

    lending.borrow_book(patron_id, book_id).await.unwrap();

    let event = harness.assert_published::<BookBorrowed>();
    assert_eq!(event.book_id, book_id);
    assert_eq!(event.patron_id, patron_id);
    harness.assert_not_published::<BookReturned>();
    // The domain event stayed inside Lending and updated the patron's loan count.
    assert_eq!(lending.store.patron(patron_id).unwrap().loans, 1);
}

#[tokio::test]
async fn a_refused_command_publishes_nothing() {
    let harness = TestBus::new();
    let lending = lending_on(&harness).await;
    let err = lending
        .borrow_book(PatronId::new(), BookId::new())
        .await
        .unwrap_err();
    assert!(matches!(err, LendingError::UnknownPatron(_)), "{err}");
    harness.assert_not_published::<BookBorrowed>();
}

#[tokio::test]
async fn borrowing_and_returning_change_the_available_copies_in_catalog() {
    let harness = TestBus::new();
    let inventory = Arc::new(Inventory::default());
    let book_id = BookId::new();
    inventory.add_book(book_id, "Dune", 2);
    let _catalog = harness
        .builder("catalog")
        .subscribe(catalog::subscription(inventory.clone()))
        .build()
        .await
        .unwrap();
    let lending = lending_on(&harness).await;
    let patron_id = PatronId::new();
    lending.store.seed_patron(patron_id, "Diana");

    let loan = lending.borrow_book(patron_id, book_id).await.unwrap();
    harness.settle().await;
    assert_eq!(inventory.stock(book_id).unwrap().available, 1);

    lending.return_book(loan).await.unwrap();
    harness.settle().await;
    assert_eq!(inventory.stock(book_id).unwrap().available, 2);
    assert_eq!(lending.store.patron(patron_id).unwrap().loans, 0);
}

#[tokio::test]
async fn an_event_catalog_cannot_apply_is_dead_lettered_and_replayable() {
    let harness = TestBus::new();
    let inventory = Arc::new(Inventory::default());
    let catalog = harness
        .builder("catalog")
        .subscribe(catalog::subscription(inventory.clone()))
        .build()
        .await
        .unwrap();
    let lending = lending_on(&harness).await;
    let (patron_id, book_id) = (PatronId::new(), BookId::new());
    lending.store.seed_patron(patron_id, "Diana");

    // Catalog doesn't know the book yet: the update is refused permanently.
    lending.borrow_book(patron_id, book_id).await.unwrap();
    harness.settle().await;
    let dead = catalog.dead_letters::<LendingEvents>(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].info.reason.contains("the catalog has no book"),
        "{}",
        dead[0].info.reason
    );
    assert_eq!(dead[0].info.service.as_ref(), "catalog");
    assert_eq!(dead[0].info.topic.as_ref(), "lending");

    // Once the book is catalogued, replaying the dead letter applies it.
    inventory.add_book(book_id, "Dune", 1);
    assert_eq!(
        catalog
            .replay_dead_letters::<LendingEvents>(Replay::All)
            .await
            .unwrap(),
        1
    );
    harness.settle().await;
    assert_eq!(inventory.stock(book_id).unwrap().available, 0);
    assert!(catalog
        .dead_letters::<LendingEvents>(10)
        .await
        .unwrap()
        .is_empty());
}

/// Persistent mode: the flow through SQLite, the outbox and the inbox leaves the right
/// copies on the shelf, and every outbox row was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_mode_runs_the_flow_through_outbox_and_inbox() {
    let path =
        std::env::temp_dir().join(format!("tidings-library-test-{}.db", uuid::Uuid::new_v4()));
    persistent::run(format!("memory://{}", uuid::Uuid::new_v4()), &path)
        .await
        .expect("the persistent flow completes");
    let pool = persistent::open(&path).await.unwrap();
    let shelf: Vec<(String, i64)> =
        tidings_outbox::sqlx::query_as("SELECT title, available FROM inventory ORDER BY title")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        shelf,
        vec![("Dune".to_string(), 2), ("Solaris".to_string(), 0)]
    );
    let outbox = tidings_outbox::Outbox::sqlite(pool.clone()).await.unwrap();
    let counts = outbox.counts(Some("lending")).await.unwrap();
    assert_eq!((counts.pending, counts.published, counts.parked), (0, 3, 0));
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
