//! Outbox, relay and inbox against real databases: SQLite always, PostgreSQL when
//! `TIDINGS_POSTGRES_URL` is set. One suite, written once, instantiated per database.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tidings_core::{
    Bus, Context, ErrorKind, HandlerError, PublishOptions, RetryPolicy, Subscription,
};
use tidings_memory::Memory;
use tidings_outbox::{Backend, BusBuilderExt, InboxContext, Outbox, RelayConfig};
use uuid::Uuid;

/// What a plain subscriber saw of one event.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: Uuid,
    n: u32,
    correlation: Option<Uuid>,
    causation: Option<Uuid>,
    tenant: Option<String>,
}

type Log = Mutex<Vec<Seen>>;

async fn record_borrowed(e: BookBorrowed, cx: Context<Log>) -> Result<(), HandlerError> {
    cx.state().lock().unwrap().push(Seen {
        id: cx.id(),
        n: e.n,
        correlation: cx.correlation_id(),
        causation: cx.causation_id(),
        tenant: cx.header("tenant").map(str::to_string),
    });
    Ok(())
}

async fn record_stock(e: StockChanged, cx: Context<Log>) -> Result<(), HandlerError> {
    cx.state().lock().unwrap().push(Seen {
        id: cx.id(),
        n: e.n,
        correlation: cx.correlation_id(),
        causation: cx.causation_id(),
        tenant: None,
    });
    Ok(())
}

fn fast() -> RelayConfig {
    RelayConfig::default()
        .poll_interval(Duration::from_millis(20))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
}

async fn lending_bus(transport: impl tidings_core::transport::Transport) -> Bus {
    Bus::builder("lending")
        .transport(transport)
        .publishes::<LendingEvents>()
        .build()
        .await
        .unwrap()
}

/// Lending with a relay run by the bus.
async fn lending_with_relay<DB: Backend>(
    transport: impl tidings_core::transport::Transport,
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

async fn recorder(hub: &Memory) -> (Bus, Arc<Log>) {
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

fn ns(log: &Log) -> Vec<u32> {
    log.lock().unwrap().iter().map(|s| s.n).collect()
}

#[cfg(feature = "sqlite")]
async fn sqlite_pool(
    _test: &str,
    _prefix: &str,
) -> Option<(tidings_outbox::sqlx::SqlitePool, Cleanup)> {
    let path = common::sqlite::temp_path("t");
    let pool = common::sqlite::pool_at(&path).await;
    Some((
        pool,
        Cleanup {
            sqlite_file: Some(path),
            postgres_prefix: None,
        },
    ))
}

#[cfg(feature = "postgres")]
async fn postgres_pool(
    test: &str,
    prefix: &str,
) -> Option<(tidings_outbox::sqlx::PgPool, Cleanup)> {
    let pool = common::postgres::pool(test).await?;
    Some((
        pool,
        Cleanup {
            sqlite_file: None,
            postgres_prefix: Some(prefix.to_string()),
        },
    ))
}

macro_rules! suite {
    ($name:ident, $feature:literal, $db:ty, $pool:path) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;
            use tidings_outbox::sqlx;

            type Db = $db;
            type Pool = sqlx::Pool<Db>;

            async fn setup(test: &str) -> Option<(Pool, Outbox<Db>, String, Cleanup)> {
                let prefix = unique("t");
                let (pool, cleanup) = $pool(test, &prefix).await?;
                let outbox = Outbox::builder(pool.clone())
                    .table_prefix(prefix.clone())
                    .build()
                    .await
                    .unwrap();
                Some((pool, outbox, prefix, cleanup))
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

            /// Catalog's inbox handler: one effect row and one follow-up event per event.
            async fn apply(
                e: BookBorrowed,
                cx: InboxContext<Effects, Db>,
            ) -> Result<(), HandlerError> {
                let run = cx.state().runs.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut tx = cx.tx()?;
                    sqlx::query(&format!(
                        "INSERT INTO {} (book, n) VALUES ($1, $2)",
                        cx.state().table
                    ))
                    .bind(&e.book)
                    .bind(i64::from(e.n))
                    .execute(&mut *tx)
                    .await?;
                }
                cx.publish(StockChanged {
                    book: e.book.clone(),
                    n: e.n,
                })
                .await?;
                if run <= cx.state().fail_first {
                    return Err(HandlerError::msg(
                        "failing after the writes, to prove they roll back",
                    ));
                }
                Ok(())
            }

            struct Effects {
                table: String,
                runs: AtomicU32,
                fail_first: u32,
            }

            async fn effect_count(pool: &Pool, table: &str) -> i64 {
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }

            async fn catalog(hub: &Memory, outbox: &Outbox<Db>, effects: Arc<Effects>) -> Bus {
                Bus::builder("catalog")
                    .transport(hub.clone())
                    .publishes::<CatalogEvents>()
                    .retry(RetryPolicy::default().immediate(3))
                    .subscribe(
                        Subscription::to::<LendingEvents>()
                            .with_shared_state(effects)
                            .on(outbox.inbox().handler(apply)),
                    )
                    .with_relay(outbox.clone(), fast())
                    .build()
                    .await
                    .unwrap()
            }

            async fn auditor(hub: &Memory) -> (Bus, Arc<Log>) {
                let log = Arc::new(Log::default());
                let bus = Bus::builder("audit")
                    .transport(hub.clone())
                    .subscribe(
                        Subscription::to::<CatalogEvents>()
                            .with_shared_state(log.clone())
                            .on(record_stock),
                    )
                    .build()
                    .await
                    .unwrap();
                (bus, log)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_inbox_absorbs_a_redelivered_event() {
                let Some((pool, outbox, prefix, _cleanup)) =
                    setup("the_inbox_absorbs_a_redelivered_event").await
                else {
                    return;
                };
                let table = format!("{prefix}effects");
                sqlx::query(&format!(
                    "CREATE TABLE {table} (book TEXT NOT NULL, n BIGINT NOT NULL)"
                ))
                .execute(&pool)
                .await
                .unwrap();
                let hub = Memory::new();
                let effects = Arc::new(Effects {
                    table: table.clone(),
                    runs: AtomicU32::new(0),
                    fail_first: 0,
                });
                let catalog = catalog(&hub, &outbox, effects.clone()).await;
                let (audit, seen) = auditor(&hub).await;
                let lending = lending_bus(hub.clone()).await;

                let env = lending
                    .envelope(
                        &BookBorrowed {
                            book: "dune".into(),
                            n: 7,
                        },
                        PublishOptions::new(),
                    )
                    .unwrap();
                let topic = lending.topic_name::<LendingEvents>().unwrap().to_string();
                lending
                    .publish_envelopes_to(&topic, vec![env.clone()])
                    .await
                    .unwrap();
                eventually("the follow-up arrives", || async {
                    !seen.lock().unwrap().is_empty()
                })
                .await;
                // The broker delivers the same envelope again (same id), twice.
                lending
                    .publish_envelopes_to(&topic, vec![env.clone(), env.clone()])
                    .await
                    .unwrap();
                hub.idle().await;
                eventually("the outbox is drained", || async {
                    outbox.counts(None).await.unwrap().pending == 0
                })
                .await;
                hub.idle().await;

                assert_eq!(
                    effects.runs.load(Ordering::SeqCst),
                    1,
                    "the handler ran again for a redelivery"
                );
                assert_eq!(effect_count(&pool, &table).await, 1);
                let seen = seen.lock().unwrap().clone();
                assert_eq!(seen.len(), 1, "{seen:?}");
                assert_eq!(seen[0].n, 7);
                assert_eq!(
                    seen[0].causation,
                    Some(env.id),
                    "the follow-up names its cause"
                );
                assert_eq!(
                    seen[0].correlation,
                    Some(env.id),
                    "the flow starts at the first event"
                );
                assert!(outbox.inbox().was_handled("catalog", env.id).await.unwrap());
                assert!(!outbox
                    .inbox()
                    .was_handled("catalog", Uuid::new_v4())
                    .await
                    .unwrap());
                catalog.shutdown().await;
                audit.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failed_handler_leaves_no_effect_no_record_and_no_event() {
                let Some((pool, outbox, prefix, _cleanup)) =
                    setup("a_failed_handler_leaves_no_effect_no_record_and_no_event").await
                else {
                    return;
                };
                let table = format!("{prefix}effects");
                sqlx::query(&format!(
                    "CREATE TABLE {table} (book TEXT NOT NULL, n BIGINT NOT NULL)"
                ))
                .execute(&pool)
                .await
                .unwrap();
                let hub = Memory::new();
                // Two failed runs (each wrote a row and enqueued an event, then failed), then success.
                let effects = Arc::new(Effects {
                    table: table.clone(),
                    runs: AtomicU32::new(0),
                    fail_first: 2,
                });
                let catalog = catalog(&hub, &outbox, effects.clone()).await;
                let (audit, seen) = auditor(&hub).await;
                let lending = lending_bus(hub.clone()).await;
                let id = lending
                    .publish(BookBorrowed {
                        book: "emma".into(),
                        n: 1,
                    })
                    .await
                    .unwrap();
                eventually("the follow-up arrives", || async {
                    !seen.lock().unwrap().is_empty()
                })
                .await;
                hub.idle().await;
                eventually("the outbox is drained", || async {
                    outbox.counts(None).await.unwrap().pending == 0
                })
                .await;
                hub.idle().await;
                assert_eq!(effects.runs.load(Ordering::SeqCst), 3);
                assert_eq!(
                    effect_count(&pool, &table).await,
                    1,
                    "the failed runs' writes rolled back"
                );
                assert_eq!(
                    seen.lock().unwrap().len(),
                    1,
                    "the failed runs' events rolled back"
                );
                assert_eq!(outbox.counts(None).await.unwrap().published, 1);
                assert!(outbox.inbox().was_handled("catalog", id).await.unwrap());
                catalog.shutdown().await;
                audit.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn holding_the_transaction_while_publishing_is_an_error_not_a_deadlock() {
                let Some((_pool, outbox, _, _cleanup)) =
                    setup("holding_the_transaction_while_publishing_is_an_error_not_a_deadlock")
                        .await
                else {
                    return;
                };
                async fn misuse(
                    e: BookBorrowed,
                    cx: InboxContext<AtomicBool, Db>,
                ) -> Result<(), HandlerError> {
                    let tx = cx.tx()?;
                    let second = cx.tx().map(|_| ()).unwrap_err();
                    let publish = cx
                        .publish(StockChanged {
                            book: e.book,
                            n: e.n,
                        })
                        .await
                        .unwrap_err();
                    assert_eq!(second.kind(), ErrorKind::Config);
                    assert!(publish.message().contains("drop the guard"), "{publish}");
                    drop(tx);
                    cx.state().store(true, Ordering::SeqCst);
                    Ok(())
                }
                let hub = Memory::new();
                let flag = Arc::new(AtomicBool::new(false));
                let catalog = Bus::builder("catalog")
                    .transport(hub.clone())
                    .publishes::<CatalogEvents>()
                    .subscribe(
                        Subscription::to::<LendingEvents>()
                            .with_shared_state(flag.clone())
                            .on(outbox.inbox().handler(misuse)),
                    )
                    .build()
                    .await
                    .unwrap();
                let lending = lending_bus(hub.clone()).await;
                lending
                    .publish(BookBorrowed {
                        book: "x".into(),
                        n: 1,
                    })
                    .await
                    .unwrap();
                hub.idle().await;
                assert!(flag.load(Ordering::SeqCst));
                catalog.shutdown().await;
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

suite!(sqlite, "sqlite", tidings_outbox::sqlx::Sqlite, sqlite_pool);
suite!(
    postgres,
    "postgres",
    tidings_outbox::sqlx::Postgres,
    postgres_pool
);

/// PostgreSQL only: several relays of one service on one database.
#[cfg(feature = "postgres")]
mod postgres_relays {
    use super::*;
    use std::collections::HashSet;

    async fn two_relays(exclusive: bool) {
        let test = if exclusive {
            "two_exclusive_relays"
        } else {
            "two_sharing_relays"
        };
        let Some(pool_a) = common::postgres::pool(test).await else {
            return;
        };
        let pool_b = common::postgres::pool(test).await.unwrap();
        let prefix = unique("t");
        let _cleanup = Cleanup {
            sqlite_file: None,
            postgres_prefix: Some(prefix.clone()),
        };
        let outbox_a = Outbox::builder(pool_a.clone())
            .table_prefix(prefix.clone())
            .build()
            .await
            .unwrap();
        let outbox_b = Outbox::builder(pool_b.clone())
            .table_prefix(prefix.clone())
            .build()
            .await
            .unwrap();
        let hub = Memory::new();
        let (observer, log) = recorder(&hub).await;
        // Two instances of the lending service, each with its own pool and relay; their
        // transports count what each relay published.
        let (transport_a, transport_b) =
            (Switchable::new(hub.clone()), Switchable::new(hub.clone()));
        let (published_a, published_b) =
            (transport_a.published.clone(), transport_b.published.clone());
        let config = fast().batch_size(8).exclusive(exclusive);
        let lending_a = lending_with_relay(transport_a, &outbox_a, config.clone()).await;
        let lending_b = lending_with_relay(transport_b, &outbox_b, config).await;
        for chunk in 0..20u32 {
            let mut tx = pool_a.begin().await.unwrap();
            outbox_a
                .enqueue_batch(
                    &mut tx,
                    &lending_a,
                    (chunk * 25..chunk * 25 + 25).map(|n| BookBorrowed {
                        book: "m".into(),
                        n,
                    }),
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        eventually("500 events arrive", || async {
            log.lock().unwrap().len() >= 500
        })
        .await;
        eventually("the outbox is drained", || async {
            outbox_a.counts(None).await.unwrap().pending == 0
        })
        .await;
        hub.idle().await;
        let seen = log.lock().unwrap().clone();
        let ids: HashSet<Uuid> = seen.iter().map(|s| s.id).collect();
        assert_eq!(seen.len(), 500, "a row was published twice");
        assert_eq!(ids.len(), 500);
        let (published_a, published_b) = (
            published_a.load(Ordering::SeqCst),
            published_b.load(Ordering::SeqCst),
        );
        assert!(
            published_a > 0 && published_b > 0 || exclusive,
            "both relays worked"
        );
        assert_eq!(published_a + published_b, 500);
        if exclusive {
            assert_eq!(
                ns(&log),
                (0..500).collect::<Vec<_>>(),
                "exclusive relays keep the order"
            );
        }
        lending_a.shutdown().await;
        lending_b.shutdown().await;
        observer.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_exclusive_relays_never_publish_a_row_twice_and_keep_the_order() {
        two_relays(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sharing_relays_never_publish_a_row_twice() {
        two_relays(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_in_another_process_wakes_the_relay_through_listen() {
        let test = "a_commit_in_another_process_wakes_the_relay_through_listen";
        let Some(pool_a) = common::postgres::pool(test).await else {
            return;
        };
        let pool_b = common::postgres::pool(test).await.unwrap();
        let prefix = unique("t");
        let _cleanup = Cleanup {
            sqlite_file: None,
            postgres_prefix: Some(prefix.clone()),
        };
        let outbox_a = Outbox::builder(pool_a.clone())
            .table_prefix(prefix.clone())
            .build()
            .await
            .unwrap();
        // Another process: its own pool and outbox (so its in-process wake-up cannot reach
        // the relay).
        let outbox_b = Outbox::builder(pool_b.clone())
            .table_prefix(prefix.clone())
            .build()
            .await
            .unwrap();
        let hub = Memory::new();
        let (observer, log) = recorder(&hub).await;
        let lending = lending_bus(hub.clone()).await;
        let enqueue = |n: u32| {
            let (pool_b, outbox_b, lending) = (pool_b.clone(), outbox_b.clone(), lending.clone());
            async move {
                let mut tx = pool_b.begin().await.unwrap();
                outbox_b
                    .enqueue(
                        &mut tx,
                        &lending,
                        BookBorrowed {
                            book: "l".into(),
                            n,
                        },
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        };
        enqueue(1).await;
        // Polls once an hour: only NOTIFY can bring the second event in time.
        let relay = lending_with_relay(
            hub.clone(),
            &outbox_a,
            RelayConfig::default().poll_interval(Duration::from_secs(3600)),
        )
        .await;
        eventually("the first event arrives", || async {
            !log.lock().unwrap().is_empty()
        })
        .await;
        // Let the relay's short look-again phase after that batch pass.
        tokio::time::sleep(Duration::from_secs(1)).await;
        enqueue(2).await;
        eventually("the second event arrives without polling", || async {
            log.lock().unwrap().len() >= 2
        })
        .await;
        assert_eq!(ns(&log), vec![1, 2]);
        relay.shutdown().await;
        observer.shutdown().await;
    }
}
