//! The memory transport under the bus: handlers, retries, dead letters, shutdown.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{borrowed, Borrowed, Lending, Returned};
use tidings_core::{Bus, Context, HandlerError, PublishOptions, Replay, RetryPolicy, Subscription};
use tidings_memory::{Memory, MemoryConfig};
use uuid::Uuid;

/// Wait for the hub to go idle, failing the test instead of hanging.
async fn settle(memory: &Memory) {
    tokio::time::timeout(Duration::from_secs(30), memory.idle())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "hub not idle: {} pending, {:?}",
                memory.pending(),
                memory.queues()
            )
        });
}

type Seen = Arc<Mutex<Vec<(String, Uuid)>>>;

async fn record(e: Borrowed, cx: Context<(String, Seen)>) -> Result<(), HandlerError> {
    let _ = e;
    let (instance, seen) = cx.state();
    seen.lock().unwrap().push((instance.clone(), cx.id()));
    Ok(())
}

async fn subscriber(memory: &Memory, service: &str, instance: &str, seen: &Seen) -> Bus {
    Bus::builder(service)
        .transport(memory.clone())
        .subscribe(
            Subscription::to::<Lending>()
                .with_state((instance.to_string(), seen.clone()))
                .on(record),
        )
        .build()
        .await
        .unwrap()
}

async fn publisher(memory: &Memory) -> Bus {
    Bus::builder("lending")
        .transport(memory.clone())
        .publishes::<Lending>()
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_gets_each_event_and_instances_of_one_service_share_them() {
    let memory = Memory::new();
    let (catalog_seen, billing_seen) = (Seen::default(), Seen::default());
    let catalog_1 = subscriber(&memory, "catalog", "c1", &catalog_seen).await;
    let catalog_2 = subscriber(&memory, "catalog", "c2", &catalog_seen).await;
    let billing = subscriber(&memory, "billing", "b", &billing_seen).await;
    let lending = publisher(&memory).await;

    let mut ids = HashSet::new();
    for n in 0..200 {
        ids.insert(lending.publish(borrowed(n)).await.unwrap());
    }
    settle(&memory).await;

    let catalog_ids: Vec<_> = catalog_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(
        catalog_ids.len(),
        200,
        "each event handled once by the catalog"
    );
    assert_eq!(catalog_ids.into_iter().collect::<HashSet<_>>(), ids);
    let billing_ids: HashSet<_> = billing_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(billing_ids, ids, "billing got every event too");

    for bus in [lending, catalog_1, catalog_2, billing] {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn an_event_published_by_a_handler_keeps_the_hub_busy_until_handled() {
    let memory = Memory::new();
    let returned = Arc::new(AtomicU32::new(0));
    // Catalog answers each borrow with a return (same topic, for the test's sake).
    async fn on_borrowed(e: Borrowed, cx: Context<()>) -> Result<(), HandlerError> {
        cx.publish(Returned { book: e.book }).await?;
        Ok(())
    }
    async fn on_returned(_: Returned, cx: Context<Arc<AtomicU32>>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cx.state().fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let catalog = Bus::builder("catalog")
        .transport(memory.clone())
        .publishes::<Lending>()
        .subscribe(Subscription::to::<Lending>().on(on_borrowed))
        .build()
        .await
        .unwrap();
    let audit = Bus::builder("audit")
        .transport(memory.clone())
        .subscribe(
            Subscription::to::<Lending>()
                .with_state(returned.clone())
                .on(on_returned),
        )
        .build()
        .await
        .unwrap();
    let lending = publisher(&memory).await;
    lending.publish(borrowed(1)).await.unwrap();
    settle(&memory).await;
    assert_eq!(
        returned.load(Ordering::SeqCst),
        1,
        "idle only after the follow-up was handled"
    );
    for bus in [lending, catalog, audit] {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_failing_handler_is_retried_then_dead_lettered_and_replay_handles_it() {
    let memory = Memory::new();
    struct Flaky {
        failing: AtomicBool,
        runs: AtomicU32,
        handled: AtomicU32,
    }
    async fn flaky(_: Borrowed, cx: Context<Flaky>) -> Result<(), HandlerError> {
        let s = cx.state();
        s.runs.fetch_add(1, Ordering::SeqCst);
        if s.failing.load(Ordering::SeqCst) {
            return Err(HandlerError::msg("inventory service down"));
        }
        s.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let state = Arc::new(Flaky {
        failing: AtomicBool::new(true),
        runs: AtomicU32::new(0),
        handled: AtomicU32::new(0),
    });
    let policy = RetryPolicy::default().immediate(2).redeliveries(2).backoff(
        Duration::from_millis(5),
        2.0,
        Duration::from_millis(20),
    );
    let catalog = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(
            Subscription::to::<Lending>()
                .with_shared_state(state.clone())
                .on(flaky)
                .retry(policy),
        )
        .build()
        .await
        .unwrap();
    let lending = publisher(&memory).await;
    let id = lending.publish(borrowed(7)).await.unwrap();
    settle(&memory).await;

    assert_eq!(
        state.runs.load(Ordering::SeqCst),
        6,
        "2 runs per delivery, 3 deliveries"
    );
    let dead = catalog.dead_letters::<Lending>(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.id, id);
    assert_eq!(dead[0].info.attempts, 6);
    assert!(
        dead[0].info.reason.contains("inventory service down"),
        "{}",
        dead[0].info.reason
    );
    assert_eq!(&*dead[0].info.topic, "lending");

    state.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        catalog
            .replay_dead_letters::<Lending>(Replay::All)
            .await
            .unwrap(),
        1
    );
    settle(&memory).await;
    assert_eq!(state.handled.load(Ordering::SeqCst), 1);
    assert!(catalog
        .dead_letters::<Lending>(10)
        .await
        .unwrap()
        .is_empty());
    lending.shutdown().await;
    catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_a_stopped_instance_had_taken_go_to_the_next_one_in_order() {
    let memory = Memory::new();
    struct Gate {
        release: tokio::sync::Semaphore,
        seen: Mutex<Vec<(u32, u32, bool)>>,
    }
    async fn gated(e: Borrowed, cx: Context<Gate>) -> Result<(), HandlerError> {
        if e.book == 1 {
            cx.state().release.acquire().await.unwrap().forget();
        }
        cx.state()
            .seen
            .lock()
            .unwrap()
            .push((e.book, cx.attempt(), cx.redelivered()));
        Ok(())
    }
    let gate = Arc::new(Gate {
        release: tokio::sync::Semaphore::new(0),
        seen: Mutex::default(),
    });
    let subscription = || {
        Subscription::to::<Lending>()
            .with_shared_state(gate.clone())
            .on(gated)
            .concurrency(4)
            // One run per delivery, so the handler's attempt is the delivery count.
            .retry(RetryPolicy::default().immediate(1))
    };
    let first = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(subscription())
        .build()
        .await
        .unwrap();
    let lending = publisher(&memory).await;
    let key = PublishOptions::new().ordering_key("book");
    for book in 1..=3 {
        lending
            .publish_with(borrowed(book), key.clone())
            .await
            .unwrap();
    }
    // Wait until the consumer has taken all three (1 in its handler, 2 and 3 queued
    // behind it on the ordering key).
    tokio::time::timeout(Duration::from_secs(30), async {
        while memory.queues()[0].waiting > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the consumer never took the deliveries");

    let stopping = tokio::spawn({
        let first = first.clone();
        async move { first.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.release.add_permits(1);
    stopping.await.unwrap();
    assert_eq!(*gate.seen.lock().unwrap(), vec![(1, 1, false)]);
    assert_eq!(memory.pending(), 2, "2 and 3 went back to the queue");

    let second = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(subscription())
        .build()
        .await
        .unwrap();
    settle(&memory).await;
    let seen = gate.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(1, 1, false), (2, 2, true), (3, 2, true)]);
    lending.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn services_configured_with_one_url_meet_on_one_hub() {
    let seen = Seen::default();
    let catalog = subscriber(
        &Memory::from_url("memory://bus-url-test").unwrap(),
        "catalog",
        "c",
        &seen,
    )
    .await;
    let lending = publisher(&Memory::from_url("memory://bus-url-test").unwrap()).await;
    let id = lending.publish(borrowed(3)).await.unwrap();
    settle(&Memory::from_url("memory://bus-url-test").unwrap()).await;
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, id)| *id)
            .collect::<Vec<_>>(),
        vec![id]
    );
    lending.shutdown().await;
    catalog.shutdown().await;
}

#[tokio::test]
async fn the_bus_refuses_oversized_events_by_the_transport_limit() {
    let memory = Memory::with_config(MemoryConfig::default().max_message_size(300));
    let lending = publisher(&memory).await;
    let err = lending
        .publish_with(
            borrowed(1),
            PublishOptions::new().header("padding", "x".repeat(400)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tidings_core::ErrorKind::MessageTooLarge);
}
