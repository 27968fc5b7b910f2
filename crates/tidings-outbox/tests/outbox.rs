//! Outbox and relay against real databases: SQLite always, PostgreSQL when
//! `TIDINGS_POSTGRES_URL` is set. One suite, written once, instantiated per database.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::suite::*;
use common::*;
use tidings_core::{Bus, ErrorKind, PublishOptions};
use tidings_memory::Memory;
use tidings_outbox::Outbox;
use uuid::Uuid;

macro_rules! suite {
    ($name:ident, $feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;
            use tidings_outbox::sqlx;

            type Db = $db;
            type Pool = sqlx::Pool<Db>;

            async fn setup(test: &str) -> Option<(Pool, Outbox<Db>, String, Cleanup)> {
                common::suite::setup::<Db>(test).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn committed_events_are_published_rolled_back_ones_never() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("committed_events_are_published_rolled_back_ones_never").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending = lending_with_relay(hub.clone(), &outbox, fast()).await;

                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "a".into(),
                            n: 1,
                        },
                    )
                    .await
                    .unwrap();
                tx.rollback().await.unwrap();

                let correlation = Uuid::new_v4();
                let mut tx = pool.begin().await.unwrap();
                let id = outbox
                    .enqueue_with(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "b".into(),
                            n: 2,
                        },
                        PublishOptions::new()
                            .correlation_id(correlation)
                            .header("tenant", "north"),
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(
                    log.lock().unwrap().is_empty(),
                    "published before the commit"
                );
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
                assert_eq!(
                    seen,
                    vec![Seen {
                        id,
                        n: 2,
                        correlation: Some(correlation),
                        causation: None,
                        tenant: Some("north".into())
                    }]
                );
                let counts = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!((counts.pending, counts.published, counts.parked), (0, 1, 0));
                lending.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_backlog_says_how_long_the_oldest_pending_row_has_waited() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("the_backlog_says_how_long_the_oldest_pending_row_has_waited").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                // No relay yet: the rows wait.
                let lending = lending_bus(hub.clone()).await;
                let empty = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!((empty.pending, empty.oldest_pending), (0, None));
                for n in 0..3 {
                    let mut tx = pool.begin().await.unwrap();
                    outbox
                        .enqueue(
                            &mut tx,
                            &lending,
                            BookBorrowed {
                                book: "a".into(),
                                n,
                            },
                        )
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let waiting = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!(waiting.pending, 3);
                let age = waiting.oldest_pending.expect("an oldest pending row");
                assert!(
                    age >= Duration::from_millis(250) && age < Duration::from_secs(60),
                    "the oldest row waited {age:?}"
                );
                // Another service's backlog is its own.
                let other = outbox.counts(Some("catalog")).await.unwrap();
                assert_eq!((other.pending, other.oldest_pending), (0, None));

                assert_eq!(outbox.relay_pending(&lending, &fast()).await.unwrap(), 3);
                let drained = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!((drained.pending, drained.oldest_pending), (0, None));
                eventually("the events arrive", || async {
                    log.lock().unwrap().len() == 3
                })
                .await;
                lending.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_relay_run_by_the_bus_starts_with_build_and_stops_with_shutdown() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("a_relay_run_by_the_bus_starts_with_build_and_stops_with_shutdown").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending = lending_with_relay(hub.clone(), &outbox, fast()).await;
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "a".into(),
                            n: 1,
                        },
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                eventually("the bus's relay publishes the committed event", || async {
                    ns(&log) == vec![1]
                })
                .await;

                lending.shutdown().await;
                // The relay stopped with the bus: a row another instance of the service
                // commits now stays pending.
                let other = lending_bus(hub.clone()).await;
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue(
                        &mut tx,
                        &other,
                        BookBorrowed {
                            book: "b".into(),
                            n: 2,
                        },
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let counts = outbox.counts(Some("lending")).await.unwrap();
                assert_eq!((counts.pending, counts.published), (1, 1));
                assert_eq!(ns(&log), vec![1]);
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relay_publishes_in_order_and_in_batches() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("relay_publishes_in_order_and_in_batches").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let transport = Switchable::new(hub.clone());
                let calls = transport.publish_calls.clone();
                let lending = lending_bus(transport.clone()).await;
                for chunk in 0..3u32 {
                    let mut tx = pool.begin().await.unwrap();
                    let events = (chunk * 100..chunk * 100 + 100).map(|n| BookBorrowed {
                        book: format!("b{n}"),
                        n,
                    });
                    outbox
                        .enqueue_batch(&mut tx, &lending, events)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
                let relay = lending_with_relay(transport, &outbox, fast().batch_size(16)).await;
                eventually("300 events arrive", || async {
                    log.lock().unwrap().len() >= 300
                })
                .await;
                hub.idle().await;
                assert_eq!(ns(&log), (0..300).collect::<Vec<_>>());
                let calls = calls.load(Ordering::SeqCst);
                assert!(
                    (19..=40).contains(&calls),
                    "300 rows in batches of 16 took {calls} transport calls"
                );
                relay.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relay_backs_off_while_the_broker_is_down_then_catches_up() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("relay_backs_off_while_the_broker_is_down_then_catches_up").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let transport = Switchable::new(hub.clone());
                let down = transport.down.clone();
                let failed = transport.failed_calls.clone();
                down.store(true, Ordering::SeqCst);
                let lending = lending_bus(transport.clone()).await;
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue_batch(
                        &mut tx,
                        &lending,
                        (0..5).map(|n| BookBorrowed {
                            book: "x".into(),
                            n,
                        }),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let relay = lending_with_relay(transport, &outbox, fast()).await;
                eventually("the relay tried a few times", || async {
                    failed.load(Ordering::SeqCst) >= 3
                })
                .await;
                assert!(log.lock().unwrap().is_empty());
                assert_eq!(
                    outbox.counts(None).await.unwrap().pending,
                    5,
                    "rows stay pending while the broker is down"
                );
                down.store(false, Ordering::SeqCst);
                eventually("the events arrive once the broker is back", || async {
                    log.lock().unwrap().len() >= 5
                })
                .await;
                hub.idle().await;
                assert_eq!(ns(&log), vec![0, 1, 2, 3, 4]);
                eventually("the rows are marked", || async {
                    outbox.counts(None).await.unwrap().pending == 0
                })
                .await;
                relay.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refused_row_is_parked_and_does_not_block_the_rest() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("a_refused_row_is_parked_and_does_not_block_the_rest").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending =
                    lending_with_relay(Switchable::new(hub.clone()), &outbox, fast()).await;
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "a".into(),
                            n: 1,
                        },
                    )
                    .await
                    .unwrap();
                let bad = outbox
                    .enqueue_with(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "p".into(),
                            n: 2,
                        },
                        PublishOptions::new().header("poison", "yes"),
                    )
                    .await
                    .unwrap();
                outbox
                    .enqueue(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "c".into(),
                            n: 3,
                        },
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                eventually("the good rows arrive", || async {
                    log.lock().unwrap().len() >= 2
                })
                .await;
                eventually("the bad row is parked", || async {
                    outbox.counts(None).await.unwrap().parked == 1
                })
                .await;
                hub.idle().await;
                assert_eq!(ns(&log), vec![1, 3]);
                let parked = outbox.parked("lending", 10).await.unwrap();
                assert_eq!(parked.len(), 1);
                assert_eq!(parked[0].id, bad);
                assert!(
                    parked[0].error.contains("refuses poison"),
                    "{}",
                    parked[0].error
                );
                // Requeued, it is refused and parked again; nothing is lost or duplicated.
                assert_eq!(outbox.requeue_parked("lending").await.unwrap(), 1);
                eventually("the row is parked again", || async {
                    let c = outbox.counts(None).await.unwrap();
                    (c.pending, c.published, c.parked) == (0, 2, 1)
                })
                .await;
                assert_eq!(ns(&log), vec![1, 3]);
                lending.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn published_rows_are_deleted_after_the_retention() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("published_rows_are_deleted_after_the_retention").await
                else {
                    return;
                };
                let hub = Memory::new();
                let (observer, log) = recorder(&hub).await;
                let lending = lending_bus(hub.clone()).await;
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue_batch(
                        &mut tx,
                        &lending,
                        (0..4).map(|n| BookBorrowed {
                            book: "r".into(),
                            n,
                        }),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                // Kept for a day: marked, not deleted.
                assert_eq!(outbox.relay_pending(&lending, &fast()).await.unwrap(), 4);
                let counts = outbox.counts(None).await.unwrap();
                assert_eq!((counts.pending, counts.published), (0, 4));
                assert_eq!(
                    outbox
                        .purge_published(Duration::from_secs(3600))
                        .await
                        .unwrap(),
                    0
                );
                assert_eq!(outbox.purge_published(Duration::ZERO).await.unwrap(), 4);
                // Zero retention: deleted as soon as published.
                let mut tx = pool.begin().await.unwrap();
                outbox
                    .enqueue_batch(
                        &mut tx,
                        &lending,
                        (4..6).map(|n| BookBorrowed {
                            book: "r".into(),
                            n,
                        }),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let relay =
                    lending_with_relay(hub.clone(), &outbox, fast().retention(Duration::ZERO))
                        .await;
                eventually("all six arrive", || async {
                    log.lock().unwrap().len() >= 6
                })
                .await;
                eventually("the rows are gone", || async {
                    let c = outbox.counts(None).await.unwrap();
                    (c.pending, c.published, c.parked) == (0, 0, 0)
                })
                .await;
                relay.shutdown().await;
                observer.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tables_are_created_once_and_a_newer_schema_is_refused() {
                let Some((pool, outbox, prefix, _cleanup)) =
                    setup("tables_are_created_once_and_a_newer_schema_is_refused").await
                else {
                    return;
                };
                assert_eq!(outbox.table(), format!("{prefix}outbox"));
                // A second outbox on the same tables migrates nothing and works.
                let again = Outbox::builder(pool.clone())
                    .table_prefix(prefix.clone())
                    .build()
                    .await
                    .unwrap();
                assert_eq!(again.counts(None).await.unwrap().pending, 0);
                let bad = Outbox::builder(pool.clone())
                    .table_prefix("1; DROP TABLE x")
                    .build()
                    .await
                    .unwrap_err();
                assert_eq!(bad.kind(), ErrorKind::Config);
                sqlx::query(&format!("UPDATE {prefix}schema SET version = 99"))
                    .execute(&pool)
                    .await
                    .unwrap();
                let newer = Outbox::builder(pool.clone())
                    .table_prefix(prefix.clone())
                    .build()
                    .await
                    .unwrap_err();
                assert_eq!(newer.kind(), ErrorKind::Config);
                assert!(newer.message().contains("newer"), "{newer}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn enqueue_refuses_an_undeclared_topic() {
                let Some((pool, outbox, _, _cleanup)) =
                    setup("enqueue_refuses_an_undeclared_topic").await
                else {
                    return;
                };
                let bus = Bus::builder("lending")
                    .transport(Memory::new())
                    .build()
                    .await
                    .unwrap();
                let mut tx = pool.begin().await.unwrap();
                let err = outbox
                    .enqueue(
                        &mut tx,
                        &bus,
                        BookBorrowed {
                            book: "x".into(),
                            n: 1,
                        },
                    )
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotDeclared);
            }
        }
    };
}

suite!(sqlite, "sqlite", tidings_outbox::sqlx::Sqlite);
suite!(postgres, "postgres", tidings_outbox::sqlx::Postgres);
