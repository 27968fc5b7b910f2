//! The TestBus harness with several services on one hub: recording, assertions, settle.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::Transport, Bus, Context, Envelope, ErrorKind, Event, EventInfo, HandlerError,
    Replay, RetryPolicy, Subscription, Topic, TopicMember, MSGPACK,
};
use tidings_testing::{Recording, TestBus};

// Events written by hand (applications derive them with the `tidings` macros).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BookBorrowed {
    book_id: u32,
    patron_id: u32,
}
impl Event for BookBorrowed {
    const NAME: &'static str = "lending.book-borrowed";
    const VERSION: u32 = 1;
}
impl TopicMember for BookBorrowed {
    type Topic = LendingEvents;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BookReturned {
    book_id: u32,
}
impl Event for BookReturned {
    const NAME: &'static str = "lending.book-returned";
    const VERSION: u32 = 1;
}
impl TopicMember for BookReturned {
    type Topic = LendingEvents;
}

struct LendingEvents;
impl Topic for LendingEvents {
    const NAME: &'static str = "lending";
    fn events() -> &'static [EventInfo] {
        &[
            EventInfo {
                name: BookBorrowed::NAME,
                version: 1,
                type_name: "BookBorrowed",
            },
            EventInfo {
                name: BookReturned::NAME,
                version: 1,
                type_name: "BookReturned",
            },
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InventoryChanged {
    book_id: u32,
    available: i32,
}
impl Event for InventoryChanged {
    const NAME: &'static str = "catalog.inventory-changed";
    const VERSION: u32 = 1;
}
impl TopicMember for InventoryChanged {
    type Topic = CatalogEvents;
}

struct CatalogEvents;
impl Topic for CatalogEvents {
    const NAME: &'static str = "catalog";
    fn events() -> &'static [EventInfo] {
        &[EventInfo {
            name: InventoryChanged::NAME,
            version: 1,
            type_name: "InventoryChanged",
        }]
    }
}

/// Catalog: on a borrow, take a copy off the shelf (slowly) and tell the world.
async fn on_borrowed(e: BookBorrowed, cx: Context<AtomicU32>) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let left = cx.state().fetch_sub(1, Ordering::SeqCst) - 1;
    cx.publish(InventoryChanged {
        book_id: e.book_id,
        available: left as i32,
    })
    .await?;
    Ok(())
}

/// Reporting: remembers every inventory change, slowly.
async fn on_inventory(
    e: InventoryChanged,
    cx: Context<Mutex<Vec<InventoryChanged>>>,
) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    cx.state().lock().unwrap().push(e);
    Ok(())
}

/// Audit: counts borrows.
async fn count(_: BookBorrowed, cx: Context<AtomicU32>) -> Result<(), HandlerError> {
    cx.state().fetch_add(1, Ordering::SeqCst);
    Ok(())
}

struct Services {
    harness: TestBus,
    lending: Bus,
    catalog: Bus,
    reporting: Bus,
    audit: Bus,
    shelf: Arc<AtomicU32>,
    changes: Arc<Mutex<Vec<InventoryChanged>>>,
    borrows: Arc<AtomicU32>,
}

async fn services(harness: TestBus) -> Services {
    let shelf = Arc::new(AtomicU32::new(10));
    let changes = Arc::new(Mutex::default());
    let borrows = Arc::new(AtomicU32::new(0));
    let lending = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();
    let catalog = harness
        .builder("catalog")
        .publishes::<CatalogEvents>()
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(shelf.clone())
                .on(on_borrowed),
        )
        .build()
        .await
        .unwrap();
    let reporting = harness
        .builder("reporting")
        .subscribe(
            Subscription::to::<CatalogEvents>()
                .with_shared_state(changes.clone())
                .on(on_inventory),
        )
        .build()
        .await
        .unwrap();
    let audit = harness
        .builder("audit")
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(borrows.clone())
                .on(count),
        )
        .build()
        .await
        .unwrap();
    Services {
        harness,
        lending,
        catalog,
        reporting,
        audit,
        shelf,
        changes,
        borrows,
    }
}

impl Services {
    async fn shutdown(self) {
        for bus in [self.lending, self.catalog, self.reporting, self.audit] {
            bus.shutdown().await;
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_waits_for_every_service_including_events_published_by_handlers() {
    let s = services(TestBus::new()).await;
    s.lending
        .publish(BookBorrowed {
            book_id: 1,
            patron_id: 9,
        })
        .await
        .unwrap();
    s.lending
        .publish(BookBorrowed {
            book_id: 2,
            patron_id: 9,
        })
        .await
        .unwrap();
    s.harness.settle().await;

    // Both hops happened: catalog handled the borrows and reporting its follow-ups.
    assert_eq!(s.shelf.load(Ordering::SeqCst), 8);
    assert_eq!(s.borrows.load(Ordering::SeqCst), 2);
    assert_eq!(
        *s.changes.lock().unwrap(),
        vec![
            InventoryChanged {
                book_id: 1,
                available: 9
            },
            InventoryChanged {
                book_id: 2,
                available: 8
            }
        ]
    );
    assert_eq!(s.harness.memory().pending(), 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_holds_every_service_s_events_in_publish_order() {
    let s = services(TestBus::new()).await;
    let borrowed_id = s
        .lending
        .publish(BookBorrowed {
            book_id: 1,
            patron_id: 9,
        })
        .await
        .unwrap();
    s.harness.settle().await;

    let envelopes = s.harness.envelopes();
    let names: Vec<_> = envelopes.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(names, [BookBorrowed::NAME, InventoryChanged::NAME]);
    // The follow-up was published through the handler's context.
    assert_eq!(envelopes[1].causation_id, Some(borrowed_id));
    assert_eq!(envelopes[1].correlation_id, Some(borrowed_id));
    assert_eq!(&*envelopes[1].source, "catalog");
    assert_eq!(
        s.harness.recording().envelopes_to("catalog").len(),
        1,
        "by broker topic"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn assert_published_returns_the_latest_and_published_returns_all_in_order() {
    let s = services(TestBus::new()).await;
    for book_id in [3, 1, 2] {
        s.lending
            .publish(BookBorrowed {
                book_id,
                patron_id: 7,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        s.harness.assert_published::<BookBorrowed>(),
        BookBorrowed {
            book_id: 2,
            patron_id: 7
        }
    );
    let ids: Vec<_> = s
        .harness
        .published::<BookBorrowed>()
        .iter()
        .map(|e| e.book_id)
        .collect();
    assert_eq!(ids, [3, 1, 2]);
    s.harness.assert_not_published::<BookReturned>();
    assert!(s.harness.published::<BookReturned>().is_empty());
    s.harness.settle().await;
    s.shutdown().await;
}

#[tokio::test]
async fn assert_published_panics_listing_what_was_published() {
    let harness = TestBus::new();
    let nothing = catch_unwind(AssertUnwindSafe(|| {
        harness.assert_published::<BookReturned>()
    }));
    let msg = panic_message(nothing.unwrap_err());
    assert!(
        msg.contains("`lending.book-returned`") && msg.contains("nothing was published"),
        "{msg}"
    );

    let lending = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();
    lending
        .publish(BookBorrowed {
            book_id: 1,
            patron_id: 2,
        })
        .await
        .unwrap();
    let missing = catch_unwind(AssertUnwindSafe(|| {
        harness.assert_published::<BookReturned>()
    }));
    let msg = panic_message(missing.unwrap_err());
    assert!(
        msg.contains("expected `lending.book-returned`")
            && msg.contains("`lending.book-borrowed` to `lending`"),
        "{msg}"
    );
    lending.shutdown().await;
}

#[tokio::test]
async fn assert_not_published_panics_when_it_was() {
    let harness = TestBus::new();
    let lending = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();
    let id = lending.publish(BookReturned { book_id: 4 }).await.unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        harness.assert_not_published::<BookReturned>()
    }));
    let msg = panic_message(result.unwrap_err());
    assert!(
        msg.contains("but 1 was published") && msg.contains(&id.to_string()),
        "{msg}"
    );
    harness.assert_not_published::<BookBorrowed>();
    lending.shutdown().await;
}

#[tokio::test]
async fn clear_forgets_what_was_recorded() {
    let harness = TestBus::new();
    let lending = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();
    lending.publish(BookReturned { book_id: 4 }).await.unwrap();
    assert_eq!(harness.envelopes().len(), 1);
    harness.clear();
    assert!(harness.envelopes().is_empty());
    harness.assert_not_published::<BookReturned>();
    lending.publish(BookReturned { book_id: 5 }).await.unwrap();
    assert_eq!(harness.assert_published::<BookReturned>().book_id, 5);
    lending.shutdown().await;
}

#[tokio::test]
async fn a_recorded_event_that_does_not_decode_panics_with_the_reason() {
    let harness = TestBus::new();
    let transport = harness.recording();
    let mut env = Envelope::new(BookReturned::NAME, 1, "lending", MSGPACK, &b"\xc1"[..]);
    env.set_header("x", "y");
    transport.publish("lending", vec![env]).await.unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| harness.published::<BookReturned>()));
    let msg = panic_message(result.unwrap_err());
    assert!(msg.contains("does not decode as"), "{msg}");
}

#[tokio::test]
async fn a_failed_publish_is_not_recorded() {
    let memory = tidings_memory::Memory::with_config(
        tidings_memory::MemoryConfig::default().max_message_size(200),
    );
    let recording = Recording::new(memory);
    let mut big = Envelope::new(BookReturned::NAME, 1, "lending", MSGPACK, vec![0u8; 500]);
    big.set_header("x", "y");
    let err = recording.publish("lending", vec![big]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    assert!(recording.envelopes().is_empty());
}

#[tokio::test]
async fn settle_returns_at_once_when_nothing_is_pending() {
    let harness = TestBus::new().settle_timeout(Duration::from_secs(30));
    harness.settle().await;
}

#[tokio::test]
async fn settle_panics_after_its_timeout_saying_what_is_pending() {
    let harness = TestBus::new().settle_timeout(Duration::from_millis(50));
    let s = services(harness.clone()).await;
    // The catalog is gone: its queue fills and nobody drains it.
    s.catalog.shutdown().await;
    s.lending
        .publish(BookBorrowed {
            book_id: 1,
            patron_id: 2,
        })
        .await
        .unwrap();
    let settling = tokio::spawn(async move { harness.settle().await });
    let msg = panic_message(settling.await.unwrap_err().into_panic());
    assert!(msg.contains("not idle after 50ms"), "{msg}");
    assert!(msg.contains("envelope(s) pending"), "{msg}");
    assert!(msg.contains("`catalog.lending` has 1 waiting"), "{msg}");
    s.shutdown().await;
}

#[tokio::test]
async fn dead_letters_and_replay_go_through_the_recording_transport() {
    let harness = TestBus::new();
    async fn refuse(_: BookReturned, _: Context<()>) -> Result<(), HandlerError> {
        Err(HandlerError::msg("no shelf for it"))
    }
    let catalog = harness
        .builder("catalog")
        .subscribe(
            Subscription::to::<LendingEvents>()
                .on(refuse)
                .retry(RetryPolicy::none()),
        )
        .build()
        .await
        .unwrap();
    let lending = harness
        .builder("lending")
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap();
    lending.publish(BookReturned { book_id: 1 }).await.unwrap();
    harness.settle().await;
    let dead = catalog.dead_letters::<LendingEvents>(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].info.reason.contains("no shelf for it"));
    assert_eq!(
        catalog
            .replay_dead_letters::<LendingEvents>(Replay::All)
            .await
            .unwrap(),
        1
    );
    harness.settle().await;
    let again = catalog.dead_letters::<LendingEvents>(10).await.unwrap();
    assert_eq!(again.len(), 1, "replayed, handled, refused again");
    assert_eq!(again[0].envelope.id, dead[0].envelope.id);
    lending.shutdown().await;
    catalog.shutdown().await;
}
