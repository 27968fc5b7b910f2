//! Scheduled events through the outbox (`enqueue_with` and `PublishOptions::deliver_at`):
//! the row keeps the time, the relay publishes at once, and the subscriber's handler runs
//! no earlier than the time. SQLite always, PostgreSQL when `TIDINGS_POSTGRES_URL` is set.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::time::{Duration, SystemTime};

use common::suite::*;
use common::*;
use tidings_core::PublishOptions;
use tidings_memory::Memory;

macro_rules! suite {
    ($name:ident, $feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_scheduled_event_is_relayed_at_once_and_handled_at_its_time() {
                let Some((pool, outbox, _, _cleanup)) = common::suite::setup::<$db>(
                    "a_scheduled_event_is_relayed_at_once_and_handled_at_its_time",
                )
                .await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending = lending_with_relay(hub.clone(), &outbox, fast()).await;

                let due = SystemTime::now() + Duration::from_millis(2500);
                let mut tx = pool.begin().await.unwrap();
                let id = outbox
                    .enqueue_with(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "later".into(),
                            n: 1,
                        },
                        PublishOptions::new().deliver_at(due),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();

                eventually("the relay publishes the row", || async {
                    outbox.counts(None).await.unwrap().pending == 0
                })
                .await;
                // Watch every 10 ms: a handler run seen before the time is a run too early.
                loop {
                    let handled = !log.lock().unwrap().is_empty();
                    let now = SystemTime::now();
                    if handled {
                        assert!(
                            now >= due,
                            "handled {:?} before its time",
                            due.duration_since(now).unwrap()
                        );
                        break;
                    }
                    assert!(
                        now < due + Duration::from_secs(30),
                        "not handled 30 s after its time"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let seen = log.lock().unwrap().clone();
                assert_eq!(seen.len(), 1, "{seen:?}");
                assert_eq!(seen[0].id, id);
                lending.shutdown().await;
                observer.shutdown().await;
            }
        }
    };
}

suite!(sqlite, "sqlite", tidings_outbox::sqlx::Sqlite);
suite!(postgres, "postgres", tidings_outbox::sqlx::Postgres);
