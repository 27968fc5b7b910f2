//! The idempotent inbox against real databases: SQLite always, PostgreSQL when
//! `TIDINGS_POSTGRES_URL` is set. One suite, written once, instantiated per database.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use common::suite::*;
use common::*;
use tidings_core::{Bus, ErrorKind, HandlerError, PublishOptions, RetryPolicy, Subscription};
use tidings_memory::Memory;
use tidings_outbox::{BusBuilderExt, InboxContext, Outbox};
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
        }
    };
}

suite!(sqlite, "sqlite", tidings_outbox::sqlx::Sqlite);
suite!(postgres, "postgres", tidings_outbox::sqlx::Postgres);
