//! The memory transport through the `Transport`, `Subscriber` and `Acker` traits.

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use common::{env, spec, topology};
use futures::FutureExt;
use tidings_core::{
    transport::{attrs, Acker, Subscriber, Transport},
    DeadLetterInfo, ErrorKind, Replay,
};
use tidings_memory::{Memory, MemoryConfig};

const A: &str = "lending.book-borrowed";
const B: &str = "lending.book-returned";

fn info(reason: &str) -> DeadLetterInfo {
    DeadLetterInfo::new(
        reason,
        3,
        "catalog".into(),
        "catalog".into(),
        "lending".into(),
    )
}

#[tokio::test]
async fn every_subscription_gets_every_event_published_after_provisioning() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    let billing = spec("billing", "lending", &[A]);
    memory
        .provision(&topology(&[&catalog, &billing]))
        .await
        .unwrap();

    // Published before anyone subscribes: the queues exist from provisioning on.
    let sent: Vec<_> = (0..3).map(|_| env(A)).collect();
    let ids: Vec<_> = sent.iter().map(|e| e.id).collect();
    memory.publish("lending", sent).await.unwrap();
    assert_eq!(memory.pending(), 6, "one copy per subscription");

    for s in [&catalog, &billing] {
        let mut sub = memory.subscribe(s).await.unwrap();
        for id in &ids {
            let d = sub.next().await.unwrap().unwrap();
            assert_eq!(d.envelope.id, *id, "FIFO per queue");
            assert_eq!((d.attempt, d.redelivered), (1, false));
            d.acker.ack().await.unwrap();
        }
    }
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn queues_of_one_topic_share_one_envelope_allocation() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    let billing = spec("billing", "lending", &[A]);
    memory
        .provision(&topology(&[&catalog, &billing]))
        .await
        .unwrap();
    memory.publish("lending", vec![env(A)]).await.unwrap();
    let a = memory
        .subscribe(&catalog)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let b = memory
        .subscribe(&billing)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&a.envelope, &b.envelope));
    a.acker.ack().await.unwrap();
    b.acker.ack().await.unwrap();
}

#[tokio::test]
async fn subscribers_of_one_subscription_compete() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let (first, second) = (env(A), env(A));
    let ids = [first.id, second.id];
    memory
        .publish("lending", vec![first, second])
        .await
        .unwrap();

    let mut one = memory.subscribe(&catalog).await.unwrap();
    let mut two = memory.subscribe(&catalog).await.unwrap();
    let d1 = one.next().await.unwrap().unwrap();
    // The first is taken (and not settled): the other instance gets the second.
    let d2 = two.next().await.unwrap().unwrap();
    assert_eq!([d1.envelope.id, d2.envelope.id], ids);
    d1.acker.ack().await.unwrap();
    d2.acker.ack().await.unwrap();
    assert_eq!(memory.pending(), 0);
    assert!(
        one.next().now_or_never().is_none(),
        "nothing left for anyone"
    );
}

#[tokio::test]
async fn queues_take_only_their_wire_names_and_provisioning_again_changes_that() {
    let memory = Memory::new();
    let only_a = spec("catalog", "lending", &[A]);
    let everything = spec("audit", "lending", &[]);
    memory
        .provision(&topology(&[&only_a, &everything]))
        .await
        .unwrap();
    let (b, a) = (env(B), env(A));
    let (b_id, a_id) = (b.id, a.id);
    memory.publish("lending", vec![b, a]).await.unwrap();
    assert_eq!(memory.pending(), 3, "B skipped the catalog queue");

    let mut catalog = memory.subscribe(&only_a).await.unwrap();
    let d = catalog.next().await.unwrap().unwrap();
    assert_eq!(d.envelope.id, a_id);
    d.acker.ack().await.unwrap();
    let mut audit = memory.subscribe(&everything).await.unwrap();
    for id in [b_id, a_id] {
        let d = audit.next().await.unwrap().unwrap();
        assert_eq!(
            d.envelope.id, id,
            "an empty event list takes the whole topic"
        );
        d.acker.ack().await.unwrap();
    }

    // The catalog now handles B only.
    let only_b = spec("catalog", "lending", &[B]);
    memory.provision(&topology(&[&only_b])).await.unwrap();
    let (a, b) = (env(A), env(B));
    let b_id = b.id;
    memory.publish("lending", vec![a, b]).await.unwrap();
    let d = catalog.next().await.unwrap().unwrap();
    assert_eq!(d.envelope.id, b_id);
    d.acker.ack().await.unwrap();
    assert_eq!(
        memory.queues().len(),
        2,
        "provisioning again made no new queue"
    );
}

#[tokio::test]
async fn a_full_queue_makes_publish_wait_for_the_consumer() {
    let memory = Memory::with_config(MemoryConfig::default().queue_capacity(2));
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory
        .publish("lending", vec![env(A), env(A)])
        .await
        .unwrap();

    let third = env(A);
    let third_id = third.id;
    let mut publish = pin!(memory.publish("lending", vec![third]));
    assert!(
        futures::poll!(publish.as_mut()).is_pending(),
        "publish waits while the queue is full"
    );
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    d.acker.ack().await.unwrap();
    publish.await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = sub.next().await.unwrap().unwrap();
        ids.push(d.envelope.id);
        d.acker.ack().await.unwrap();
    }
    assert_eq!(ids[1], third_id);
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn a_cancelled_publish_leaves_the_pending_count_right() {
    let memory = Memory::with_config(MemoryConfig::default().queue_capacity(1));
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory.publish("lending", vec![env(A)]).await.unwrap();
    // Waits for room, then is dropped.
    assert!(memory
        .publish("lending", vec![env(A)])
        .now_or_never()
        .is_none());
    assert_eq!(memory.pending(), 1);
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    sub.next()
        .await
        .unwrap()
        .unwrap()
        .acker
        .ack()
        .await
        .unwrap();
    assert_eq!(memory.pending(), 0);
    memory.idle().await;
}

#[tokio::test]
async fn oversized_envelopes_are_refused_and_nothing_of_the_batch_is_published() {
    let memory = Memory::with_config(MemoryConfig::default().max_message_size(1_000));
    assert_eq!(memory.capabilities().max_message_size, 1_000);
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let mut big = env(A);
    big.payload = vec![0u8; 2_000].into();
    let err = memory
        .publish("lending", vec![env(A), big])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    assert!(
        err.message().contains(A) && err.message().contains("1000"),
        "{err}"
    );
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn publishing_to_a_topic_nobody_subscribes_to_succeeds() {
    let memory = Memory::new();
    memory
        .publish("nobody-listens", vec![env(A)])
        .await
        .unwrap();
    assert_eq!(memory.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_redelivers_after_the_delay_with_the_next_attempt() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory.publish("lending", vec![env(A)]).await.unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    let id = d.envelope.id;
    d.acker
        .retry(d.envelope.clone(), 3, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        memory.pending(),
        1,
        "a retry waiting out its delay is pending"
    );

    // Virtual time: nothing before the delay is over.
    let early = tokio::time::timeout(Duration::from_secs(4), sub.next()).await;
    assert!(early.is_err(), "redelivered before its delay");
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!((d.envelope.id, d.attempt, d.redelivered), (id, 3, true));
    d.acker.ack().await.unwrap();
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn a_dropped_delivery_comes_back_first_with_its_attempt_raised() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let (first, second) = (env(A), env(A));
    let ids = [first.id, second.id];
    memory
        .publish("lending", vec![first, second])
        .await
        .unwrap();

    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    drop(d); // a consumer that died mid-delivery
    assert_eq!(memory.pending(), 2, "nothing lost");
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (again.envelope.id, again.attempt, again.redelivered),
        (ids[0], 2, true)
    );
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!(
        next.envelope.id, ids[1],
        "the redelivery went ahead of the queue"
    );
    again.acker.ack().await.unwrap();
    next.acker.ack().await.unwrap();
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn a_subscriber_waiting_on_an_empty_queue_wakes_for_a_redelivery() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory.publish("lending", vec![env(A)]).await.unwrap();
    let mut one = memory.subscribe(&catalog).await.unwrap();
    let mut two = memory.subscribe(&catalog).await.unwrap();
    let d = one.next().await.unwrap().unwrap();
    let id = d.envelope.id;
    let waiting = tokio::spawn(async move {
        let d = two.next().await.unwrap().unwrap();
        let seen = (d.envelope.id, d.attempt);
        d.acker.ack().await.unwrap();
        seen
    });
    tokio::task::yield_now().await;
    drop(d);
    // A lost wake-up would hang here; fail instead.
    let seen = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting subscriber was never woken for the redelivery");
    assert_eq!(seen.unwrap(), (id, 2));
    assert_eq!(memory.pending(), 0);
    assert_eq!(memory.queues()[0].waiting, 0, "wake tokens are not counted");
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    {
        let mut next = pin!(sub.next());
        assert!(futures::poll!(next.as_mut()).is_pending());
    } // dropped while waiting
    let e = env(A);
    let id = e.id;
    memory.publish("lending", vec![e]).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(d.envelope.id, id);
    d.acker.ack().await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_stamped_kept_oldest_first_and_listed_without_removal() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let sent: Vec<_> = (0..3).map(|_| env(A)).collect();
    let ids: Vec<_> = sent.iter().map(|e| e.id).collect();
    memory.publish("lending", sent).await.unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    for n in 0..3 {
        let d = sub.next().await.unwrap().unwrap();
        d.acker
            .dead_letter(d.envelope.clone(), info(&format!("boom {n}")))
            .await
            .unwrap();
    }
    assert_eq!(memory.pending(), 0, "dead-lettering settles");

    let two = memory.dead_letters(&catalog, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!([two[0].envelope.id, two[1].envelope.id], [ids[0], ids[1]]);
    assert_eq!(two[0].info.reason, "boom 0");
    assert_eq!(two[0].info.attempts, 3);
    assert_eq!(two[0].envelope.header(attrs::DLQ_TOPIC), Some("lending"));
    assert_eq!(
        memory.dead_letters(&catalog, 10).await.unwrap().len(),
        3,
        "listing removes nothing"
    );
    assert_eq!(memory.queues()[0].dead_letters, 3);
}

#[tokio::test]
async fn a_full_dead_letter_list_refuses_and_hands_the_delivery_back() {
    let memory = Memory::with_config(MemoryConfig::default().dead_letter_capacity(1));
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory
        .publish("lending", vec![env(A), env(A)])
        .await
        .unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    d.acker
        .dead_letter(d.envelope.clone(), info("first"))
        .await
        .unwrap();

    let d = sub.next().await.unwrap().unwrap();
    let (err, acker) = d
        .acker
        .dead_letter(d.envelope.clone(), info("second"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(
        err.message()
            .contains("dead-letter list of `catalog.lending` is full"),
        "{err}"
    );
    assert_eq!(memory.pending(), 1, "the delivery is still the consumer's");
    // The acker handed back still settles the delivery.
    acker.ack().await.unwrap();
    assert_eq!(memory.pending(), 0);
    assert_eq!(memory.dead_letters(&catalog, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn replay_moves_the_selected_dead_letters_back_cleared_as_first_attempts() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let mut sent: Vec<_> = (0..3).map(|_| env(A)).collect();
    sent[0].set_header("tenant", "north");
    let ids: Vec<_> = sent.iter().map(|e| e.id).collect();
    memory.publish("lending", sent).await.unwrap();
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    for _ in 0..3 {
        let d = sub.next().await.unwrap().unwrap();
        d.acker
            .dead_letter(d.envelope.clone(), info("boom"))
            .await
            .unwrap();
    }

    let moved = memory
        .replay_dead_letters(&catalog, &Replay::Ids(vec![ids[0]]))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(memory.pending(), 1);
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (d.envelope.id, d.attempt, d.redelivered),
        (ids[0], 1, false)
    );
    assert_eq!(
        d.envelope.header(attrs::DLQ_REASON),
        None,
        "dead-letter headers cleared"
    );
    assert_eq!(
        d.envelope.header("tenant"),
        Some("north"),
        "custom headers kept"
    );
    d.acker.ack().await.unwrap();

    let left = memory.dead_letters(&catalog, 10).await.unwrap();
    assert_eq!(
        left.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        ids[1..]
    );
    assert_eq!(
        memory
            .replay_dead_letters(&catalog, &Replay::All)
            .await
            .unwrap(),
        2
    );
    assert!(memory.dead_letters(&catalog, 10).await.unwrap().is_empty());
    for id in &ids[1..] {
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.envelope.id, *id);
        d.acker.ack().await.unwrap();
    }
}

#[tokio::test]
async fn idle_waits_for_queued_unsettled_and_retrying_envelopes() {
    let memory = Memory::new();
    memory.idle().await; // idle from the start
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    memory.publish("lending", vec![env(A)]).await.unwrap();

    let mut idle = pin!(memory.idle());
    assert!(futures::poll!(idle.as_mut()).is_pending(), "queued");
    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert!(
        futures::poll!(idle.as_mut()).is_pending(),
        "delivered, not settled"
    );
    d.acker
        .retry(d.envelope.clone(), 2, Duration::from_millis(1))
        .await
        .unwrap();
    assert!(
        futures::poll!(idle.as_mut()).is_pending(),
        "waiting to be retried"
    );
    let d = sub.next().await.unwrap().unwrap();
    assert!(futures::poll!(idle.as_mut()).is_pending());
    d.acker.ack().await.unwrap();
    idle.await;
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn unprovisioned_subscriptions_are_not_found() {
    let memory = Memory::new();
    let ghost = spec("ghost", "lending", &[A]);
    let err = memory.subscribe(&ghost).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.message().contains("`ghost` to topic `lending`"),
        "{err}"
    );
    assert_eq!(
        memory.dead_letters(&ghost, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        memory
            .replay_dead_letters(&ghost, &Replay::All)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn urls_name_process_wide_hubs() {
    let a = Memory::from_url("memory://url-test").unwrap();
    let b = Memory::from_url("memory://url-test/").unwrap();
    assert!(a.same_hub(&b));
    assert!(!a.same_hub(&Memory::from_url("memory://url-test-2").unwrap()));
    assert!(Memory::from_url("memory://")
        .unwrap()
        .same_hub(&Memory::from_url("memory://").unwrap()));
    assert!(!Memory::new().same_hub(&Memory::new()));

    // What one handle provisions and publishes, another handle of the hub receives.
    let catalog = spec("catalog", "lending", &[A]);
    a.provision(&topology(&[&catalog])).await.unwrap();
    b.publish("lending", vec![env(A)]).await.unwrap();
    let d = a
        .subscribe(&catalog)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    d.acker.ack().await.unwrap();

    let sized = Memory::from_url("memory://url-sized?queue_capacity=7").unwrap();
    assert!(Memory::from_url("memory://url-sized")
        .unwrap()
        .same_hub(&sized));
    assert!(Memory::from_url("memory://url-sized?queue_capacity=7").is_ok());
    let err = Memory::from_url("memory://url-sized?queue_capacity=8").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("already exists"), "{err}");
    assert_eq!(
        Memory::from_url("kafka://x").unwrap_err().kind(),
        ErrorKind::Config
    );
}

#[test]
fn capabilities_say_what_the_memory_transport_does() {
    let c = Memory::new().capabilities();
    assert!(c.delayed_redelivery && c.ordering_key && c.competing_consumers);
    assert_eq!(c.max_message_size, 1024 * 1024);
}
