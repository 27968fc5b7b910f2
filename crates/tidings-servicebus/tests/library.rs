//! The Library flow of the facade's example on Service Bus (local development server):
//! Lending publishes book-borrowed and book-returned, keyed by book; Catalog keeps its
//! inventory from them, and its follow-up event carries the correlation on.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_macros::{Event, Topic};
use tidings_servicebus::ServiceBus;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct BookId(Uuid);

impl std::fmt::Display for BookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 1, key = book_id)]
struct BookBorrowed {
    book_id: BookId,
    patron: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", version = 1, key = book_id)]
struct BookReturned {
    book_id: BookId,
    patron: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "catalog.shelf-changed", version = 1)]
struct ShelfChanged {
    book_id: BookId,
    available: u32,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "catalog")]
enum CatalogEvents {
    ShelfChanged(ShelfChanged),
}

#[derive(Default)]
struct Inventory {
    available: Mutex<HashMap<BookId, u32>>,
    updates: Mutex<Vec<(Uuid, Option<Uuid>)>>,
    changed: Notify,
}

impl Inventory {
    fn adjust(&self, book: BookId, by: i32) -> u32 {
        let mut shelf = self.available.lock().unwrap();
        let n = shelf.entry(book).or_insert(0);
        *n = (*n as i32 + by).max(0) as u32;
        *n
    }
}

async fn book_borrowed(e: BookBorrowed, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = cx.state().adjust(e.book_id, -1);
    cx.publish(ShelfChanged {
        book_id: e.book_id,
        available,
    })
    .await?;
    Ok(())
}

async fn book_returned(e: BookReturned, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = cx.state().adjust(e.book_id, 1);
    cx.publish(ShelfChanged {
        book_id: e.book_id,
        available,
    })
    .await?;
    Ok(())
}

async fn shelf_changed(_e: ShelfChanged, cx: Context<Inventory>) -> Result<(), HandlerError> {
    cx.state()
        .updates
        .lock()
        .unwrap()
        .push((cx.id(), cx.correlation_id()));
    cx.state().changed.notify_waiters();
    Ok(())
}

#[tokio::test]
async fn lending_and_catalog_run_on_service_bus() {
    let ns = support::unique("library");
    let transport = || ServiceBus::new(support::config()).unwrap();
    let inventory = Arc::new(Inventory::default());
    let (dune, solaris) = (BookId(Uuid::new_v4()), BookId(Uuid::new_v4()));
    inventory
        .available
        .lock()
        .unwrap()
        .extend([(dune, 2), (solaris, 1)]);

    let catalog = Bus::builder("catalog")
        .transport(transport())
        .namespace(ns.clone())
        .publishes::<CatalogEvents>()
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(inventory.clone())
                .on(book_borrowed)
                .on(book_returned),
        )
        .build()
        .await
        .unwrap();
    // A reporting service that follows the catalog's shelf.
    let reports = Bus::builder("reports")
        .transport(transport())
        .namespace(ns.clone())
        .subscribe(
            Subscription::to::<CatalogEvents>()
                .with_shared_state(inventory.clone())
                .on(shelf_changed),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(transport())
        .namespace(ns.clone())
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();

    let borrowed = lending
        .publish(BookBorrowed {
            book_id: dune,
            patron: "Diana".into(),
        })
        .await
        .unwrap();
    lending
        .publish(BookBorrowed {
            book_id: solaris,
            patron: "Tomás".into(),
        })
        .await
        .unwrap();
    lending
        .publish(BookReturned {
            book_id: dune,
            patron: "Diana".into(),
        })
        .await
        .unwrap();

    let wait = async {
        loop {
            let changed = inventory.changed.notified();
            if inventory.updates.lock().unwrap().len() >= 3 {
                return;
            }
            changed.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("three shelf changes");
    let shelf = inventory.available.lock().unwrap().clone();
    assert_eq!(shelf[&dune], 2);
    assert_eq!(shelf[&solaris], 0);
    let updates = inventory.updates.lock().unwrap().clone();
    assert!(
        updates
            .iter()
            .any(|(_, correlation)| *correlation == Some(borrowed)),
        "the follow-up of Diana's borrowing carries its correlation id: {updates:?}"
    );
    lending.shutdown().await;
    catalog.shutdown().await;
    reports.shutdown().await;
}
