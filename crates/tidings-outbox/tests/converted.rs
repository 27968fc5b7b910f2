//! Domain events converted to integration events inside the domain change's transaction
//! (`Outbox::enqueue_converted`): published when it commits, never when it rolls back, and
//! nothing at all for a domain event whose converter returns `None`. SQLite always,
//! PostgreSQL when `TIDINGS_POSTGRES_URL` is set.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use common::suite::*;
use common::*;
use tidings_core::domain::Converters;
use tidings_core::PublishOptions;
use tidings_memory::Memory;
use uuid::Uuid;

/// Lending's domain events: a loan other contexts hear of, and an internal one.
#[derive(Debug, Clone)]
enum LendingDomainEvent {
    Borrowed { book: String, n: u32 },
    ShelfTidied,
}

fn converters() -> Converters<LendingDomainEvent> {
    Converters::new().convert(|e: &LendingDomainEvent| match e {
        LendingDomainEvent::Borrowed { book, n } => Some(BookBorrowed {
            book: book.clone(),
            n: *n,
        }),
        LendingDomainEvent::ShelfTidied => None,
    })
}

macro_rules! suite {
    ($name:ident, $feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn converted_events_commit_with_the_domain_change() {
                let Some((pool, outbox, _, _cleanup)) =
                    common::suite::setup::<$db>("converted_events_commit_with_the_domain_change")
                        .await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending = lending_with_relay(hub.clone(), &outbox, fast()).await;
                let converters = converters();
                let borrowed = |book: &str, n| LendingDomainEvent::Borrowed {
                    book: book.into(),
                    n,
                };

                let mut tx = pool.begin().await.unwrap();
                let ids = outbox
                    .enqueue_converted(
                        &mut tx,
                        &lending,
                        &converters,
                        &borrowed("a", 1),
                        PublishOptions::new(),
                    )
                    .await
                    .unwrap();
                assert_eq!(ids.len(), 1);
                tx.rollback().await.unwrap();

                let correlation = Uuid::new_v4();
                let options = PublishOptions::new().correlation_id(correlation);
                let mut tx = pool.begin().await.unwrap();
                let internal = outbox
                    .enqueue_converted(
                        &mut tx,
                        &lending,
                        &converters,
                        &LendingDomainEvent::ShelfTidied,
                        options.clone(),
                    )
                    .await
                    .unwrap();
                assert!(
                    internal.is_empty(),
                    "a converter returning None writes nothing"
                );
                let ids = outbox
                    .enqueue_converted(&mut tx, &lending, &converters, &borrowed("b", 2), options)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();

                eventually("the committed event arrives", || async {
                    !log.lock().unwrap().is_empty()
                })
                .await;
                eventually("the outbox is drained", || async {
                    outbox.counts(None).await.unwrap().pending == 0
                })
                .await;
                hub.idle().await;
                let seen = log.lock().unwrap().clone();
                assert_eq!(seen.len(), 1, "only the committed conversion: {seen:?}");
                assert_eq!((seen[0].id, seen[0].n), (ids[0], 2));
                assert_eq!(seen[0].correlation, Some(correlation));
                let counts = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!((counts.pending, counts.published, counts.parked), (0, 1, 0));
                lending.shutdown().await;
                observer.shutdown().await;
            }
        }
    };
}

suite!(sqlite, "sqlite", tidings_outbox::sqlx::Sqlite);
suite!(postgres, "postgres", tidings_outbox::sqlx::Postgres);
