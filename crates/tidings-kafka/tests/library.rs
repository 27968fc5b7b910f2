//! The Library flow on Kafka: Lending publishes loans, Catalog keeps the stock and
//! publishes stock changes from its handlers, Notifications reacts to those. Events of
//! one book stay in order, correlation ids flow through the handlers, a loan of a book
//! the catalog does not know is dead-lettered, and replays once the book is added.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, eventually, namespace};
use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Context, HandlerError, Replay, Subscription};
use tidings_kafka::Kafka;
use tidings_macros::{Event, Topic};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 1, key = book)]
struct BookBorrowed {
    book: String,
    patron: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", version = 1, key = book)]
struct BookReturned {
    book: String,
    patron: String,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "catalog.stock-changed", version = 1, key = book)]
struct StockChanged {
    book: String,
    available: i64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "catalog")]
enum CatalogEvents {
    StockChanged(StockChanged),
}

#[derive(Default)]
struct Inventory {
    stock: Mutex<HashMap<String, i64>>,
    history: Mutex<Vec<(String, i64)>>,
}

impl Inventory {
    fn change(&self, book: &str, delta: i64) -> Result<i64, HandlerError> {
        let mut stock = self.stock.lock().unwrap();
        let Some(available) = stock.get_mut(book) else {
            return Err(HandlerError::permanent(std::io::Error::other(format!(
                "the catalog has no book {book}"
            ))));
        };
        *available += delta;
        self.history
            .lock()
            .unwrap()
            .push((book.to_string(), *available));
        Ok(*available)
    }
}

async fn borrowed(e: BookBorrowed, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = cx.state().change(&e.book, -1)?;
    cx.publish(StockChanged {
        book: e.book,
        available,
    })
    .await?;
    Ok(())
}

async fn returned(e: BookReturned, cx: Context<Inventory>) -> Result<(), HandlerError> {
    let available = cx.state().change(&e.book, 1)?;
    cx.publish(StockChanged {
        book: e.book,
        available,
    })
    .await?;
    Ok(())
}

type NoticeLog = Mutex<Vec<(StockChanged, Option<Uuid>, Option<Uuid>)>>;
type Notices = Arc<NoticeLog>;

async fn notice(e: StockChanged, cx: Context<NoticeLog>) -> Result<(), HandlerError> {
    cx.state()
        .lock()
        .unwrap()
        .push((e, cx.correlation_id(), cx.causation_id()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_flow_on_kafka() {
    let Some(brokers) = brokers("library_flow_on_kafka") else {
        return;
    };
    let ns = namespace("library");
    let kafka = || Kafka::new(common::config(&brokers)).unwrap();

    let inventory = Arc::new(Inventory::default());
    for book in ["dune", "emma", "ulysses"] {
        inventory.stock.lock().unwrap().insert(book.to_string(), 3);
    }
    let catalog = Bus::builder("catalog")
        .transport(kafka())
        .namespace(&ns)
        .publishes::<CatalogEvents>()
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(inventory.clone())
                .concurrency(8)
                .on(borrowed)
                .on(returned),
        )
        .build()
        .await
        .unwrap();
    let notices: Notices = Arc::default();
    let notifications = Bus::builder("notifications")
        .transport(kafka())
        .namespace(&ns)
        .subscribe(
            Subscription::to::<CatalogEvents>()
                .with_shared_state(notices.clone())
                .on(notice),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(kafka())
        .namespace(&ns)
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();

    // Per book: borrow, borrow, return, borrow -> 3, 2, 1, 2, 1.
    let mut ids = Vec::new();
    for round in 0..2 {
        for book in ["dune", "emma", "ulysses"] {
            let patron = format!("patron-{round}");
            ids.push(
                lending
                    .publish(BookBorrowed {
                        book: book.into(),
                        patron: patron.clone(),
                    })
                    .await
                    .unwrap(),
            );
            if round == 0 {
                ids.push(
                    lending
                        .publish(BookReturned {
                            book: book.into(),
                            patron,
                        })
                        .await
                        .unwrap(),
                );
            }
        }
    }
    // A loan of a book the catalog does not know yet.
    let stray = lending
        .publish(BookBorrowed {
            book: "odyssey".into(),
            patron: "p".into(),
        })
        .await
        .unwrap();

    eventually("nine stock changes", Duration::from_secs(60), || {
        notices.lock().unwrap().len() == 9
    })
    .await;
    for book in ["dune", "emma", "ulysses"] {
        let seen: Vec<i64> = inventory
            .history
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, _)| b == book)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(seen, vec![2, 3, 2], "{book} handled in publish order");
        assert_eq!(inventory.stock.lock().unwrap()[book], 2);
    }
    for (change, correlation, causation) in notices.lock().unwrap().iter() {
        let correlation = correlation.expect("a correlation id");
        assert!(
            ids.contains(&correlation),
            "{change:?} correlates to a lending event"
        );
        assert_eq!(
            Some(correlation),
            *causation,
            "caused by the lending event it correlates to"
        );
    }

    let mut letters = Vec::new();
    for _ in 0..300 {
        letters = catalog.dead_letters::<LendingEvents>(10).await.unwrap();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, stray);
    assert!(
        letters[0].info.reason.contains("no book odyssey"),
        "{}",
        letters[0].info.reason
    );

    inventory.stock.lock().unwrap().insert("odyssey".into(), 1);
    assert_eq!(
        catalog
            .replay_dead_letters::<LendingEvents>(Replay::Ids(vec![stray]))
            .await
            .unwrap(),
        1
    );
    eventually("the replayed loan", Duration::from_secs(60), || {
        notices
            .lock()
            .unwrap()
            .iter()
            .any(|(c, _, _)| c.book == "odyssey" && c.available == 0)
    })
    .await;
    assert!(catalog
        .dead_letters::<LendingEvents>(10)
        .await
        .unwrap()
        .is_empty());

    lending.shutdown().await;
    catalog.shutdown().await;
    notifications.shutdown().await;
}
