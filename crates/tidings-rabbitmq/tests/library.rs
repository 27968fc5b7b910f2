//! A Library-style flow on RabbitMQ: Lending publishes, Catalog handles and publishes a
//! follow-up from its handler, Notifications handles that; the correlation id set by
//! Lending and the causation chain arrive intact.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Context, HandlerError, PublishOptions, Subscription};
use tidings_macros::{Event, Topic};
use tidings_rabbitmq::RabbitMq;
use uuid::Uuid;

use common::{eventually, namespace};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 1, key = book_id)]
struct BookBorrowed {
    book_id: u64,
    patron: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", version = 1, key = book_id)]
struct BookReturned {
    book_id: u64,
}

#[derive(Debug, Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "catalog.copies-changed", version = 1)]
struct CopiesChanged {
    book_id: u64,
    available: i64,
}

#[derive(Debug, Topic)]
#[topic(name = "catalog")]
enum CatalogEvents {
    CopiesChanged(CopiesChanged),
}

#[derive(Default)]
struct Inventory {
    copies: Mutex<std::collections::HashMap<u64, i64>>,
    borrowed_ids: Mutex<Vec<Uuid>>,
}

async fn borrowed(e: BookBorrowed, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = {
        let mut copies = cx.state().copies.lock().unwrap();
        let c = copies.entry(e.book_id).or_insert(2);
        *c -= 1;
        *c
    };
    cx.state().borrowed_ids.lock().unwrap().push(cx.id());
    cx.publish(CopiesChanged {
        book_id: e.book_id,
        available,
    })
    .await?;
    Ok(())
}

async fn returned(e: BookReturned, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = {
        let mut copies = cx.state().copies.lock().unwrap();
        let c = copies.entry(e.book_id).or_insert(2);
        *c += 1;
        *c
    };
    cx.publish(CopiesChanged {
        book_id: e.book_id,
        available,
    })
    .await?;
    Ok(())
}

type Notes = Arc<Mutex<Vec<(CopiesChanged, Option<Uuid>, Option<Uuid>, String)>>>;

async fn notify(e: CopiesChanged, cx: Context<Notes>) -> Result<(), HandlerError> {
    cx.state().lock().unwrap().push((
        e,
        cx.correlation_id(),
        cx.causation_id(),
        cx.source().to_string(),
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lending_catalog_notifications_on_rabbitmq() {
    let Some(url) = common::url() else { return };
    let ns = namespace();

    let inventory = Arc::new(Inventory::default());
    let catalog = Bus::builder("catalog")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .publishes::<CatalogEvents>()
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(inventory.clone())
                .on(borrowed)
                .on(returned),
        )
        .build()
        .await
        .expect("catalog");
    let notes: Notes = Arc::default();
    let notifications = Bus::builder("notifications")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .subscribe(
            Subscription::to::<CatalogEvents>()
                .with_state(notes.clone())
                .on(notify),
        )
        .build()
        .await
        .expect("notifications");
    let lending = Bus::builder("lending")
        .namespace(&ns)
        .transport(RabbitMq::from_url(&url).unwrap())
        .publishes::<LendingEvents>()
        .build()
        .await
        .expect("lending");

    let flow = Uuid::new_v4();
    let borrow_id = lending
        .publish_with(
            BookBorrowed {
                book_id: 7,
                patron: "Diana".into(),
            },
            PublishOptions::new().correlation_id(flow),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the borrow noticed", || {
        notes.lock().unwrap().len() == 1
    })
    .await;
    lending.publish(BookReturned { book_id: 7 }).await.unwrap();
    eventually(Duration::from_secs(30), "the return noticed", || {
        notes.lock().unwrap().len() == 2
    })
    .await;

    let notes = notes.lock().unwrap().clone();
    let (first, correlation, causation, source) = &notes[0];
    assert_eq!((first.book_id, first.available), (7, 1));
    assert_eq!(
        *correlation,
        Some(flow),
        "correlation carried from Lending through Catalog"
    );
    assert_eq!(*causation, Some(borrow_id), "caused by the borrow event");
    assert_eq!(source, "catalog");
    assert_eq!(
        inventory.borrowed_ids.lock().unwrap().as_slice(),
        &[borrow_id]
    );
    let (second, correlation, _, _) = &notes[1];
    assert_eq!((second.book_id, second.available), (7, 2));
    assert!(
        correlation.is_some(),
        "a flow started by the return has its own correlation id"
    );

    lending.teardown().await.unwrap();
    catalog.teardown().await.unwrap();
    notifications.teardown().await.unwrap();
}
