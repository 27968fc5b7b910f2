//! Scheduled events on Kafka, against the broker at `TIDINGS_KAFKA_BROKERS`: an event
//! that arrives early waits in the subscription's retry topic, and the poll thread holds
//! it until due, earliest first, so an event due soon is never held behind one due later
//! on the same retry partition. Tests that need a broker print a line and pass when the
//! variable is unset.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{brokers, eventually, namespace, Lending, Note};
use tidings_core::{
    transport::Transport, Bus, Context, HandlerError, PublishOptions, Subscription,
};
use tidings_kafka::Kafka;

const PATIENCE: Duration = Duration::from_secs(60);

/// Topics of one partition: every retry of the subscription shares one retry partition.
fn kafka(brokers: &str) -> Kafka {
    Kafka::new(common::config(brokers).partitions(1)).unwrap()
}

/// What was handled: the note's number and when.
type Handled = Arc<Mutex<Vec<(u64, SystemTime)>>>;

async fn catalog(brokers: &str, ns: &str, handled: &Handled, concurrency: usize) -> Bus {
    let h = handled.clone();
    Bus::builder("catalog")
        .transport(kafka(brokers))
        .namespace(ns)
        .subscribe(Subscription::to::<Lending>().concurrency(concurrency).on(
            move |e: Note, _: Context| {
                let h = h.clone();
                async move {
                    h.lock().unwrap().push((e.n, SystemTime::now()));
                    Ok::<_, HandlerError>(())
                }
            },
        ))
        .build()
        .await
        .unwrap()
}

async fn lending(brokers: &str, ns: &str) -> Bus {
    Bus::builder("lending")
        .transport(kafka(brokers))
        .namespace(ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap()
}

fn late(handled: SystemTime, due: SystemTime) -> Duration {
    match handled.duration_since(due) {
        Ok(late) => late,
        Err(early) => panic!("handled {:?} before its time", early.duration()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_are_not_held_behind_later_ones() {
    let Some(brokers) = brokers("scheduled_events_are_not_held_behind_later_ones") else {
        return;
    };
    let ns = namespace("kt-sched");
    let handled = Handled::default();
    let catalog = catalog(&brokers, &ns, &handled, 1).await;
    let lending = lending(&brokers, &ns).await;
    let scheduling = kafka(&brokers).capabilities().scheduling;
    println!("scheduling: {scheduling:?}");

    let later = SystemTime::now() + Duration::from_secs(8);
    lending
        .publish_with(Note { n: 1 }, PublishOptions::new().deliver_at(later))
        .await
        .unwrap();
    let sooner = SystemTime::now() + Duration::from_millis(1500);
    lending
        .publish_with(Note { n: 2 }, PublishOptions::new().deliver_at(sooner))
        .await
        .unwrap();

    eventually("both handled", PATIENCE, || {
        handled.lock().unwrap().len() >= 2
    })
    .await;
    let seen = handled.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![2, 1],
        "the event due sooner is handled first"
    );
    let (sooner_late, later_late) = (late(seen[0].1, sooner), late(seen[1].1, later));
    println!("late: the sooner by {sooner_late:?}, the later by {later_late:?}");
    assert!(
        sooner_late < Duration::from_secs(2),
        "the event due sooner waited behind the later one: {sooner_late:?} late"
    );
    assert!(later_late < Duration::from_secs(2), "{later_late:?} late");
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_scheduled_in_random_order_are_handled_on_time() {
    let Some(brokers) = brokers("events_scheduled_in_random_order_are_handled_on_time") else {
        return;
    };
    let ns = namespace("kt-sched-many");
    let handled = Handled::default();
    let catalog = catalog(&brokers, &ns, &handled, 16).await;
    let lending = lending(&brokers, &ns).await;

    // 300 events due between 4 and 12 s from now, published in an order unrelated to
    // their due time (a fixed permutation: 97 is prime to 300).
    const COUNT: u64 = 300;
    let start = SystemTime::now() + Duration::from_secs(4);
    let due_of = |n: u64| start + Duration::from_millis((n * 97 % COUNT) * 8_000 / COUNT);
    let mut dues = Vec::new();
    for n in 0..COUNT {
        let due = due_of(n);
        dues.push(due);
        lending
            .publish_with(Note { n }, PublishOptions::new().deliver_at(due))
            .await
            .unwrap();
    }
    assert!(
        SystemTime::now() < start,
        "publishing took too long to test anything"
    );

    eventually("all handled", PATIENCE, || {
        handled.lock().unwrap().len() as u64 >= COUNT
    })
    .await;
    let mut lateness: Vec<Duration> = (handled.lock().unwrap().iter())
        .map(|(n, at)| late(*at, dues[*n as usize]))
        .collect();
    lateness.sort();
    let pct = |p: usize| lateness[(lateness.len() - 1) * p / 100];
    println!(
        "lateness of {COUNT} events: p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        pct(100)
    );
    assert!(
        pct(100) < Duration::from_secs(2),
        "an event was {:?} late",
        pct(100)
    );
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_point_stays_below_a_held_event_across_a_restart() {
    let Some(brokers) = brokers("the_commit_point_stays_below_a_held_event_across_a_restart")
    else {
        return;
    };
    let ns = namespace("kt-sched-restart");
    let handled = Handled::default();
    let first = catalog(&brokers, &ns, &handled, 1).await;
    let lending = lending(&brokers, &ns).await;
    // Written to the retry partition in this order: the later at offset 0, the sooner at 1.
    let later = SystemTime::now() + Duration::from_secs(10);
    lending
        .publish_with(Note { n: 1 }, PublishOptions::new().deliver_at(later))
        .await
        .unwrap();
    let sooner = SystemTime::now() + Duration::from_secs(1);
    lending
        .publish_with(Note { n: 2 }, PublishOptions::new().deliver_at(sooner))
        .await
        .unwrap();
    eventually("the sooner handled", PATIENCE, || {
        handled.lock().unwrap().iter().any(|(n, _)| *n == 2)
    })
    .await;
    // Several commit intervals: the sooner is settled, the later still held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (group, retry) = (
        format!("{ns}.catalog.{ns}.lending"),
        format!("{ns}.catalog.{ns}.lending.retry"),
    );
    let committed = common::committed(&brokers, &group, &retry, 1);
    assert!(
        committed[0].1.is_none_or(|o| o <= 0),
        "the retry partition's commit point passed the record still held: {committed:?}"
    );
    first.shutdown().await;
    assert!(
        !handled.lock().unwrap().iter().any(|(n, _)| *n == 1),
        "handled before its time"
    );

    // A new subscriber reads the retry partition again from the commit point: the held
    // event is handled once due (the one after it, settled already, may come again).
    let again = Handled::default();
    let second = catalog(&brokers, &ns, &again, 1).await;
    eventually("the later handled after the restart", PATIENCE, || {
        again.lock().unwrap().iter().any(|(n, _)| *n == 1)
    })
    .await;
    let at = again
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| *n == 1)
        .unwrap()
        .1;
    println!(
        "after the restart the held event was {:?} late",
        late(at, later)
    );
    second.shutdown().await;
    lending.shutdown().await;
}
