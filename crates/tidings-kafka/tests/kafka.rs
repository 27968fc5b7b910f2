//! Kafka-specific behaviour, against the broker at `TIDINGS_KAFKA_BROKERS` (tansu in
//! `scripts/test`): the record layout, undecodable records, dead letters with their
//! origin and replay, delayed retries through the retry topic, in-order commits, and
//! rebalances that let handlers finish. Tests that need a broker print a line and pass
//! when the variable is unset.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, committed, eventually, namespace, read_raw, BookBorrowed, Lending, Note};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tidings_core::{
    transport::{attrs, Transport},
    Bus, Context, Envelope, ErrorKind, HandlerError, Replay, RetryPolicy, Subscription,
};
use tidings_kafka::{Kafka, KafkaConfig, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER};

const PATIENCE: Duration = Duration::from_secs(60);

fn kafka(brokers: &str) -> Kafka {
    Kafka::new(common::config(brokers)).unwrap()
}

#[derive(Default)]
struct Seen {
    notes: Mutex<Vec<(u64, u32)>>,
}

impl Seen {
    fn notes(&self) -> Vec<(u64, u32)> {
        self.notes.lock().unwrap().clone()
    }
}

async fn record_note(e: Note, cx: Context<Arc<Seen>>) -> Result<(), HandlerError> {
    cx.state().notes.lock().unwrap().push((e.n, cx.attempt()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_cloudevents_headers_and_the_ordering_key() {
    let Some(brokers) = brokers("records_carry_cloudevents_headers_and_the_ordering_key") else {
        return;
    };
    let ns = namespace("kt-layout");
    let bus = common::publisher(&brokers, &ns).await;
    let id = bus
        .publish(BookBorrowed {
            book: "book-7".into(),
            n: 1,
        })
        .await
        .unwrap();
    let raw = read_raw(&brokers, &format!("{ns}.lending"), 1);
    let r = &raw[0];
    assert_eq!(r.key.as_deref(), Some("book-7"));
    assert_eq!(r.header(attrs::ID), Some(id.to_string().as_str()));
    assert_eq!(r.header(attrs::TYPE), Some("kt.book-borrowed"));
    assert_eq!(r.header(attrs::SOURCE), Some("lending"));
    assert_eq!(r.header(attrs::SPECVERSION), Some("1.0"));
    assert_eq!(r.header(attrs::VERSION), Some("1"));
    assert_eq!(r.header(attrs::PARTITION_KEY), Some("book-7"));
    assert!(r
        .header(attrs::CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("application/")));
    assert!(r.header(attrs::TIME).is_some());
    assert!(!r.payload.is_empty());
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_dead_lettered_at_once_and_the_consumer_goes_on() {
    let Some(brokers) =
        brokers("undecodable_records_are_dead_lettered_at_once_and_the_consumer_goes_on")
    else {
        return;
    };
    let ns = namespace("kt-poison");
    let seen = Arc::new(Seen::default());
    let catalog = Bus::builder("catalog")
        .transport(kafka(&brokers))
        .namespace(&ns)
        .subscribe(
            Subscription::to::<Lending>()
                .with_state(seen.clone())
                .on(record_note),
        )
        .build()
        .await
        .unwrap();
    // A record another producer wrote: a type but no id, and a header that is not UTF-8.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let topic = format!("{ns}.lending");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: attrs::TYPE,
            value: Some("kt.note"),
        })
        .insert(Header {
            key: "tenant",
            value: Some(&[0xff_u8, 0xfe][..]),
        });
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&topic)
                .payload(&b"not an envelope"[..])
                .headers(headers)
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let no_id = OwnedHeaders::new().insert(Header {
        key: attrs::TYPE,
        value: Some("kt.note"),
    });
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&topic)
                .payload(&b"no id"[..])
                .headers(no_id)
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let lending = common::publisher(&brokers, &ns).await;
    lending.publish(Note { n: 42 }).await.unwrap();
    eventually("the valid note after the bad records", PATIENCE, || {
        seen.notes().iter().any(|(n, _)| *n == 42)
    })
    .await;
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = catalog.dead_letters::<Lending>(10).await.unwrap();
        if letters.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 2, "{letters:?}");
    let reasons: Vec<&str> = letters.iter().map(|d| d.info.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("not UTF-8")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("ce_id")), "{reasons:?}");
    for d in &letters {
        assert_eq!(d.info.attempts, 0);
        assert_eq!(d.envelope.header(ORIGIN_PARTITION_HEADER), Some("0"));
        assert!(d.envelope.header(ORIGIN_OFFSET_HEADER).is_some());
    }
    assert_eq!(
        seen.notes().len(),
        1,
        "the handler ran only for the valid note"
    );
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_their_origin_and_replay_once() {
    let Some(brokers) = brokers("dead_letters_carry_their_origin_and_replay_once") else {
        return;
    };
    let ns = namespace("kt-dlq");
    let healed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (h, d) = (healed.clone(), handled.clone());
    let catalog = Bus::builder("catalog")
        .transport(kafka(&brokers))
        .namespace(&ns)
        .retry(RetryPolicy::none())
        .subscribe(
            Subscription::to::<Lending>().on(move |e: Note, cx: Context| {
                let (h, d) = (h.clone(), d.clone());
                async move {
                    if !h.load(Ordering::SeqCst) {
                        return Err(HandlerError::msg(format!(
                            "note {} is not welcome yet",
                            e.n
                        )));
                    }
                    d.lock().unwrap().push((e.n, cx.id()));
                    Ok(())
                }
            }),
        )
        .build()
        .await
        .unwrap();
    let lending = common::publisher(&brokers, &ns).await;
    let id = lending.publish(Note { n: 7 }).await.unwrap();
    let mut letters = Vec::new();
    for _ in 0..600 {
        letters = catalog.dead_letters::<Lending>(10).await.unwrap();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
    let d = &letters[0];
    assert_eq!(d.envelope.id, id);
    assert!(d.info.reason.contains("not welcome"), "{}", d.info.reason);
    assert_eq!(d.info.attempts, 1);
    assert_eq!(d.info.service.as_ref(), "catalog");
    assert_eq!(d.info.topic.as_ref(), format!("{ns}.lending"));
    assert!(d.envelope.header(ORIGIN_PARTITION_HEADER).is_some());
    assert!(d.envelope.header(ORIGIN_OFFSET_HEADER).is_some());
    // The dead-letter topic is named after the subscription and the topic.
    let raw = read_raw(&brokers, &format!("{ns}.catalog.{ns}.lending.dlq"), 1);
    assert_eq!(
        raw[0].header(attrs::DLQ_REASON),
        Some(d.info.reason.as_str())
    );

    healed.store(true, Ordering::SeqCst);
    assert_eq!(
        catalog
            .replay_dead_letters::<Lending>(Replay::All)
            .await
            .unwrap(),
        1
    );
    eventually("the replayed note", PATIENCE, || {
        handled.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(handled.lock().unwrap()[0], (7, id));
    assert!(
        catalog
            .dead_letters::<Lending>(10)
            .await
            .unwrap()
            .is_empty(),
        "a replayed dead letter is not listed again"
    );
    assert_eq!(
        catalog
            .replay_dead_letters::<Lending>(Replay::All)
            .await
            .unwrap(),
        0
    );
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_retries_go_through_the_retry_topic() {
    let Some(brokers) = brokers("delayed_retries_go_through_the_retry_topic") else {
        return;
    };
    let ns = namespace("kt-retry");
    let runs = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (r, a) = (runs.clone(), attempts.clone());
    let catalog = Bus::builder("catalog")
        .transport(kafka(&brokers))
        .namespace(&ns)
        .retry(
            RetryPolicy::default()
                .immediate(1)
                .redeliveries(3)
                .backoff(Duration::from_millis(300), 2.0, Duration::from_secs(2))
                .jitter(false),
        )
        .subscribe(
            Subscription::to::<Lending>().on(move |_: Note, cx: Context| {
                let (r, a) = (r.clone(), a.clone());
                async move {
                    a.lock().unwrap().push((cx.attempt(), cx.redelivered()));
                    if r.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(HandlerError::msg("not yet"))
                    } else {
                        Ok(())
                    }
                }
            }),
        )
        .build()
        .await
        .unwrap();
    let lending = common::publisher(&brokers, &ns).await;
    lending.publish(Note { n: 1 }).await.unwrap();
    eventually("three runs", PATIENCE, || runs.load(Ordering::SeqCst) >= 3).await;
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![(1, false), (2, true), (3, true)]
    );
    let retries = read_raw(&brokers, &format!("{ns}.catalog.{ns}.lending.retry"), 2);
    let mut next: Vec<&str> = retries
        .iter()
        .filter_map(|r| r.header(attrs::ATTEMPT))
        .collect();
    next.sort();
    assert_eq!(next, vec!["2", "3"]);
    assert!(retries
        .iter()
        .all(|r| r.header(tidings_kafka::DUE_HEADER).is_some()));
    assert!(catalog
        .dead_letters::<Lending>(10)
        .await
        .unwrap()
        .is_empty());
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_pass_an_unhandled_record() {
    let Some(brokers) = brokers("commits_never_pass_an_unhandled_record") else {
        return;
    };
    let ns = namespace("kt-commit");
    let release = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let (rel, d) = (release.clone(), done.clone());
    let one_partition = || {
        Kafka::new(
            common::config(&brokers)
                .partitions(1)
                .commit_interval(Duration::from_millis(100)),
        )
        .unwrap()
    };
    let catalog =
        Bus::builder("catalog")
            .transport(one_partition())
            .namespace(&ns)
            .subscribe(Subscription::to::<Lending>().concurrency(4).on(
                move |e: Note, _cx: Context| {
                    let (rel, d) = (rel.clone(), d.clone());
                    async move {
                        while e.n == 0 && !rel.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        d.lock().unwrap().push(e.n);
                        Ok(())
                    }
                },
            ))
            .build()
            .await
            .unwrap();
    let lending = Bus::builder("lending")
        .transport(one_partition())
        .namespace(&ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap();
    for n in 0..10 {
        lending.publish(Note { n }).await.unwrap();
    }
    eventually("notes 1..9 handled while note 0 is held", PATIENCE, || {
        done.lock().unwrap().len() == 9
    })
    .await;
    // The consumer group is named after the subscription and the topic.
    let group = format!("{ns}.catalog.{ns}.lending");
    let topic = format!("{ns}.lending");
    // Several commit intervals pass; the commit point must stay at note 0 (offset 0).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = committed(&brokers, &group, &topic, 1);
    assert!(
        matches!(held[0].1, None | Some(0)),
        "committed {held:?} while the record at offset 0 was still being handled"
    );
    release.store(true, Ordering::SeqCst);
    eventually("all ten handled", PATIENCE, || {
        done.lock().unwrap().len() == 10
    })
    .await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = committed(&brokers, &group, &topic, 1);
        if now[0].1 == Some(10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "commit point never reached 10: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    catalog.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_lets_handlers_in_flight_finish_and_commits_them() {
    let Some(brokers) = brokers("a_rebalance_lets_handlers_in_flight_finish_and_commits_them")
    else {
        return;
    };
    let ns = namespace("kt-rebalance");
    let counts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let handler = |counts: Arc<Mutex<HashMap<u64, u32>>>| {
        move |e: Note, _cx: Context| {
            let counts = counts.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                *counts.lock().unwrap().entry(e.n).or_default() += 1;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let instance = || {
        Bus::builder("catalog")
            .transport(kafka(&brokers))
            .namespace(&ns)
            .subscribe(Subscription::to::<Lending>().on(handler(counts.clone())))
            .build()
    };
    let first = instance().await.unwrap();
    let lending = common::publisher(&brokers, &ns).await;
    const N: u64 = 30;
    lending
        .publish_batch((0..N).map(|n| Note { n }))
        .await
        .unwrap();
    eventually("the first instance at work", PATIENCE, || {
        counts.lock().unwrap().len() >= 3
    })
    .await;
    // A second instance joins: the group rebalances while the first is mid-handler.
    let second = instance().await.unwrap();
    eventually("every note handled", PATIENCE, || {
        counts.lock().unwrap().len() as u64 == N
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let twice: Vec<(u64, u32)> = counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    assert!(
        twice.is_empty(),
        "handled more than once across the rebalance: {twice:?}"
    );
    first.shutdown().await;
    second.shutdown().await;
    lending.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_the_publish() {
    // No broker needed: nothing listens on port 1.
    let kafka = Kafka::new(
        KafkaConfig::new("127.0.0.1:1")
            .message_timeout(Duration::from_millis(1500))
            .request_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let env = Envelope::new("kt.note", 1, "lending", "application/json", &b"{}"[..]);
    let err = kafka.publish("nowhere", vec![env]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn an_oversized_envelope_is_refused_before_anything_is_sent() {
    let kafka = Kafka::new(KafkaConfig::new("127.0.0.1:1").max_message_size(10_000)).unwrap();
    let small = Envelope::new("kt.note", 1, "lending", "application/json", &b"{}"[..]);
    let big = Envelope::new(
        "kt.note",
        1,
        "lending",
        "application/json",
        vec![b'x'; 20_000],
    );
    let err = kafka
        .publish("nowhere", vec![small, big])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge, "{err}");
    assert!(
        err.message().contains("nothing of this batch was sent"),
        "{err}"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let kafka = Kafka::from_url(
        "kafka://alice:s3cret-pw@127.0.0.1:1?sasl_mechanism=SCRAM-SHA-256&tls=true",
    )
    .unwrap();
    let shown = format!("{kafka:?}");
    assert!(shown.contains("alice"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}
