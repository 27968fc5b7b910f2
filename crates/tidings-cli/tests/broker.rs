//! The `tidings` binary against real brokers: `dead-letters list|show|replay|purge` and
//! `tail --count` (`publish` and Ctrl-C: publish.rs, tail.rs), on RabbitMQ (`TIDINGS_RABBITMQ_URL`), Kafka
//! (`TIDINGS_KAFKA_BROKERS`) and the local Service Bus server (started in this process).
//! A broker whose variable is unset is skipped with a line; one whose variable is set but
//! that does not answer fails. Bad input gives one line on stderr and exit status 2.
//!
//! The test parks dead letters itself through the transport SPI (subscribe, then
//! `Acker::dead_letter`), so it needs no handler code, and checks each command's effect
//! on the broker through the SPI again.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::brokers::*;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tidings_core::transport::{
    Acker, DynTransport, Subscriber, SubscriptionSpec, TopicSpec, Topology, Transport,
};
use tidings_core::{Codec, DeadLetterInfo, Envelope, ErrorKind, Replay};
use uuid::Uuid;

/// Publish events with JSON payloads encoded as MessagePack; their ids.
async fn publish(t: &dyn DynTransport, topic: &str, payloads: &[Value]) -> Vec<Uuid> {
    let envelopes: Vec<Envelope> = payloads
        .iter()
        .map(|p| {
            Envelope::new(
                "cli.thing-happened",
                1,
                "cli-test",
                tidings_core::MSGPACK,
                Codec::MessagePack.encode(p).unwrap(),
            )
        })
        .collect();
    let ids = envelopes.iter().map(|e| e.id).collect();
    t.publish_dyn(topic, envelopes).await.expect("publishing");
    ids
}

/// Receive `n` deliveries of `spec` and dead-letter each with `reason(i)`.
async fn park<T: Transport>(
    t: &T,
    spec: &SubscriptionSpec,
    n: usize,
    reason: impl Fn(Uuid) -> String,
) {
    let mut sub = t.subscribe(spec).await.expect("subscribing");
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("a delivery within 30 s")
            .expect("the subscription goes on")
            .expect("a delivery");
        let info = DeadLetterInfo::new(
            reason(d.envelope.id),
            3,
            Arc::from(spec.service.as_str()),
            Arc::from(spec.name.as_str()),
            Arc::from(spec.topic.as_str()),
        );
        let envelope = d.envelope.clone();
        if d.acker.dead_letter(envelope, info).await.is_err() {
            panic!("dead-lettering failed");
        }
    }
    // Some transports finish the move in the subscriber (Service Bus re-sends the dead
    // letter to the subscription, whose subscriber parks it): keep it running until the
    // dead letters are listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parked = t
            .dead_letters(spec, usize::MAX)
            .await
            .expect("listing")
            .len();
        if parked >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{parked} of {n} dead letters parked"
        );
        if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        {
            panic!("an unexpected delivery: {:?}", d.envelope);
        }
    }
}

/// How many dead letters the subscription has (listed through the SPI).
async fn count(t: &dyn DynTransport, spec: &SubscriptionSpec) -> usize {
    t.dead_letters_dyn(spec, usize::MAX)
        .await
        .expect("listing")
        .len()
}

/// The whole `dead-letters` and `tail` scenario on one broker.
fn scenario<T: Transport>(name: &str, url: &str, transport: T) {
    let rt = runtime();
    let t: Arc<T> = Arc::new(transport);
    let dynt: Arc<dyn DynTransport> = t.clone();
    let topic = fresh("cli");
    let service = "cli-svc";
    let sub_name = format!("{topic}-sub");
    let spec = SubscriptionSpec::new(
        service,
        &sub_name,
        &topic,
        vec!["cli.thing-happened".into()],
    );
    let mut topology = Topology::new(service);
    topology.publishes.push(TopicSpec::new(&topic, Vec::new()));
    topology.subscriptions.push(spec.clone());
    let payloads = [
        json!({"n": 1, "title": "Dune"}),
        json!({"n": 2}),
        json!({"n": 3}),
    ];
    let ids = rt.block_on(async {
        dynt.provision_dyn(&topology).await.expect("provisioning");
        let ids = publish(&*dynt, &topic, &payloads).await;
        let doomed_b = ids[2];
        park(&*t, &spec, 3, |id| {
            if id == doomed_b {
                "boom-b: the second kind".into()
            } else {
                format!("boom-a: {id}")
            }
        })
        .await;
        let n = count(&*dynt, &spec).await;
        assert_eq!(n, 3, "{name}: the SPI lists {n} of 3 dead letters parked");
        ids
    });
    let target = [
        "--transport",
        url,
        "--service",
        service,
        "--subscription",
        &sub_name,
        "--topic",
        &topic,
    ];
    let with = |cmd: &[&str], extra: &[&str]| -> Run {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(target);
        args.extend(extra);
        tidings_run(&args)
    };

    // list: oldest first, reason, attempts, time.
    let listed = with(&["dead-letters", "list"], &["--json"]);
    assert_eq!(listed.code, 0, "{name}: {listed:?}");
    let lines: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "{name}: three dead letters: {}",
        listed.stdout
    );
    let listed_ids: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed_ids,
        ids.iter().map(|i| i.to_string()).collect(),
        "{name}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["attempts"] == 3 && l["time"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "{name}: {lines:?}"
    );
    let text = with(&["dead-letters", "list"], &[]);
    assert_eq!(text.stdout.lines().count(), 3, "{name}: {text:?}");
    assert!(
        text.stdout.contains("boom-b: the second kind"),
        "{name}: {text:?}"
    );

    // show: the payload decoded from MessagePack; an unknown id is one line, exit 2.
    let first = ids[0].to_string();
    let shown = with(&["dead-letters", "show", &first], &[]);
    assert_eq!(shown.code, 0, "{name}: {shown:?}");
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["payload"], payloads[0], "{name}: {shown}");
    assert_eq!(shown["attributes"]["ce_id"], first, "{name}: {shown}");
    let unknown = Uuid::new_v4().to_string();
    let missing = with(&["dead-letters", "show", &unknown], &[]);
    assert_eq!(missing.code, 2, "{name}: {missing:?}");
    assert_eq!(missing.stderr.lines().count(), 1, "{name}: {missing:?}");
    assert!(
        missing.stderr.contains("no dead letter"),
        "{name}: {missing:?}"
    );

    // replay one by id: it comes back to the subscription and leaves the list.
    let replayed = with(&["dead-letters", "replay"], &["--id", &first]);
    assert_eq!(
        (replayed.code, replayed.stdout.as_str()),
        (0, "replayed 1 dead letters\n"),
        "{name}: {replayed:?}"
    );
    rt.block_on(async {
        let mut sub = t.subscribe(&spec).await.expect("subscribing");
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the replayed event")
            .unwrap()
            .unwrap();
        assert_eq!(d.envelope.id, ids[0], "{name}: another envelope came back");
        if d.acker.ack().await.is_err() {
            panic!("ack failed");
        }
        assert_eq!(count(&*dynt, &spec).await, 2, "{name}: after replaying one");
    });

    // purge: refused without --yes outside a terminal (nothing deleted), then by reason.
    let refused = with(&["dead-letters", "purge"], &["--all"]);
    assert_eq!(refused.code, 2, "{name}: {refused:?}");
    assert!(refused.stderr.contains("--yes"), "{name}: {refused:?}");
    assert_eq!(
        rt.block_on(count(&*dynt, &spec)),
        2,
        "{name}: a refused purge deleted"
    );
    let by_reason = with(&["dead-letters", "purge"], &["--reason", "boom-b", "--yes"]);
    assert_eq!(
        by_reason.stdout, "purged 1 dead letters\n",
        "{name}: {by_reason:?}"
    );
    rt.block_on(async {
        let left = dynt.dead_letters_dyn(&spec, 10).await.unwrap();
        assert_eq!(left.len(), 1, "{name}: {left:?}");
        assert_eq!(
            left[0].envelope.id, ids[1],
            "{name}: the purge took the wrong one"
        );
    });
    let rest = with(&["dead-letters", "purge"], &["--all", "--yes"]);
    assert_eq!(rest.stdout, "purged 1 dead letters\n", "{name}: {rest:?}");
    let empty = with(&["dead-letters", "list"], &[]);
    assert_eq!(
        (empty.code, empty.stdout.as_str()),
        (0, ""),
        "{name}: {empty:?}"
    );
    assert_eq!(
        rt.block_on(dynt.replay_dead_letters_dyn(&spec, &Replay::All))
            .unwrap(),
        0,
        "{name}: purged came back"
    );

    // An unknown subscription: one line naming it, exit 2.
    let nobody = tidings_run(&[
        "dead-letters",
        "list",
        "--transport",
        url,
        "--service",
        "nobody",
        "--topic",
        &topic,
    ]);
    assert_eq!(nobody.code, 2, "{name}: {nobody:?}");
    assert_eq!(nobody.stderr.lines().count(), 1, "{name}: {nobody:?}");
    assert!(nobody.stderr.contains("not-found"), "{name}: {nobody:?}");

    tail(name, url, &rt, &dynt, &topic, &spec);
    rt.block_on(dynt.teardown_dyn(&topology)).expect("teardown");
}

/// `tail --count 2`: prints the events as JSON lines while the subscription keeps getting
/// them, then removes its temporary subscription.
fn tail(
    name: &str,
    url: &str,
    rt: &tokio::runtime::Runtime,
    t: &Arc<dyn DynTransport>,
    topic: &str,
    spec: &SubscriptionSpec,
) {
    let bin = assert_cmd::cargo::cargo_bin("tidings");
    let mut child = std::process::Command::new(bin)
        .current_dir(std::env::temp_dir())
        .args([
            "tail",
            topic,
            "--transport",
            url,
            "--event",
            "cli.thing-happened",
            "--count",
            "2",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidings tail starts");
    // Publish until the tail has seen two (it may subscribe after the first ones).
    let started = Instant::now();
    let mut published = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{name}: tail never ended"
        );
        rt.block_on(publish(&**t, topic, &[json!({"tail": published})]));
        published += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{name}: tail failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{name}: {stdout}");
    for l in &lines {
        assert_eq!(
            l["attributes"]["ce_type"], "cli.thing-happened",
            "{name}: {l}"
        );
        assert!(
            l["payload"]["tail"].is_u64(),
            "{name}: the payload is not decoded: {l}"
        );
    }
    // The temporary subscription is gone; the other one got every event (none was taken).
    let temp = stderr
        .split('`')
        .find(|s| s.starts_with("tidings-tail-"))
        .unwrap_or_else(|| panic!("{name}: tail did not name its subscription: {stderr}"))
        .to_string();
    rt.block_on(async {
        let gone = SubscriptionSpec::new("tidings-tail", temp, topic, Vec::new());
        let after = t.dead_letters_dyn(&gone, 1).await;
        assert!(
            matches!(&after, Err(e) if e.kind() == ErrorKind::NotFound),
            "{name}: the temporary subscription is left: {after:?}"
        );
        let mut watched = t.watch_dyn(spec).await.unwrap();
        let mut got = 0;
        while got < published {
            let next = tokio::time::timeout(Duration::from_secs(30), watched.next()).await;
            match next {
                Ok(Some(Ok(_))) => got += 1,
                other => {
                    panic!("{name}: the subscription got {got} of {published} events: {other:?}")
                }
            }
        }
    });
}

#[test]
fn rabbitmq() {
    let Ok(url) = std::env::var("TIDINGS_RABBITMQ_URL") else {
        println!("skipped: TIDINGS_RABBITMQ_URL is not set");
        return;
    };
    scenario(
        "rabbitmq",
        &url,
        tidings_rabbitmq::RabbitMq::from_url(&url).unwrap(),
    );
}

#[test]
fn kafka() {
    let Ok(brokers) = std::env::var("TIDINGS_KAFKA_BROKERS") else {
        println!("skipped: TIDINGS_KAFKA_BROKERS is not set");
        return;
    };
    let url = format!("kafka://{brokers}");
    scenario("kafka", &url, tidings_kafka::Kafka::from_url(&url).unwrap());
}

#[test]
fn servicebus() {
    let url = servicebus_url();
    scenario(
        "servicebus",
        url,
        tidings_servicebus::ServiceBus::from_url(url).unwrap(),
    );
}

#[test]
fn unreachable_broker_and_memory_are_one_line_errors() {
    for url in [
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "kafka://127.0.0.1:1",
        "memory://",
        "carrier-pigeon://coop",
    ] {
        let r = tidings_run(&[
            "dead-letters",
            "list",
            "--transport",
            url,
            "--service",
            "s",
            "--topic",
            "t",
        ]);
        assert_eq!(r.code, 2, "{url}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{url}: {r:?}");
        assert!(r.stderr.starts_with("tidings: "), "{url}: {r:?}");
    }
    let r = tidings_run(&["tail", "t", "--transport", "memory://", "--event", "e"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("inside one process"), "{r:?}");
    let r = tidings_run(&[
        "dead-letters",
        "show",
        "not-a-uuid",
        "--transport",
        "kafka://x",
        "--service",
        "s",
        "--topic",
        "t",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
}
