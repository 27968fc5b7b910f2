//! `tidings publish` with the Library's catalog: what the schema accepts arrives on the
//! broker (the local Service Bus server, and RabbitMQ from `TIDINGS_RABBITMQ_URL`), what
//! it refuses is one line and exit status 2, and nothing is sent.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::brokers::*;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tidings_core::transport::{DynTransport, SubscriptionSpec, TopicSpec, Topology};
use tidings_core::Codec;
use uuid::Uuid;

/// `publish` with the Library's catalog: a payload valid against the schema of
/// `lending.book-borrowed` arrives on a subscription of `lending`, encoded with the
/// service's codec (MessagePack) and stamped with its version and source.
fn publish_on(name: &str, url: &str, t: Arc<dyn DynTransport>) {
    let rt = runtime();
    let spec = SubscriptionSpec::new(
        "cli-publish",
        fresh("cli-publish"),
        "lending",
        vec!["lending.book-borrowed".into()],
    );
    let mut topology = Topology::new("cli-publish");
    topology
        .publishes
        .push(TopicSpec::new("lending", Vec::new()));
    topology.subscriptions.push(spec.clone());
    let mut watched = rt.block_on(async {
        t.provision_dyn(&topology).await.expect("provisioning");
        t.watch_dyn(&spec).await.expect("watching")
    });
    let payload = json!({
        "book_id": "0b0f1c1e-8d57-4c4e-9a57-0d6f3c0e6c11",
        "patron_id": "4a7e2f9c-61b5-4a8e-bb0e-54f0b5a0d2f3"
    });
    let text = payload.to_string();
    let sent = run(
        &library(),
        &[
            "publish",
            "lending.book-borrowed",
            "--json",
            &text,
            "--service",
            "lending",
            "--transport",
            url,
        ],
    );
    assert_eq!(sent.code, 0, "{name}: {sent:?}");
    let id: Uuid = sent
        .stdout
        .trim()
        .parse()
        .expect("publish prints the envelope id");
    rt.block_on(async {
        let got = tokio::time::timeout(Duration::from_secs(30), watched.next())
            .await
            .expect("the published event within 30 s")
            .unwrap()
            .unwrap();
        assert_eq!(got.envelope.id, id, "{name}");
        assert_eq!(got.envelope.source.as_ref(), "lending", "{name}");
        assert_eq!(got.envelope.version, 1, "{name}");
        assert_eq!(got.envelope.content_type, tidings_core::MSGPACK, "{name}");
        let decoded: Value = Codec::MessagePack
            .decode(&got.envelope.payload, Default::default())
            .unwrap();
        assert_eq!(decoded, payload, "{name}");
        drop(watched);
        t.remove_subscription_dyn(&spec).await.expect("removing");
    });
}

#[test]
fn publish_to_rabbitmq_and_servicebus() {
    let url = servicebus_url();
    let sb = tidings_servicebus::ServiceBus::from_url(url).unwrap();
    publish_on("servicebus", url, Arc::new(sb));
    match std::env::var("TIDINGS_RABBITMQ_URL") {
        Ok(url) => publish_on(
            "rabbitmq",
            &url,
            Arc::new(tidings_rabbitmq::RabbitMq::from_url(&url).unwrap()),
        ),
        Err(_) => println!("skipped on rabbitmq: TIDINGS_RABBITMQ_URL is not set"),
    }
}

/// A payload that breaks the schema, malformed JSON, an unknown event or service: one
/// line, exit 2, and nothing is sent (the broker address is never contacted).
#[test]
fn publish_refuses_what_the_schema_refuses() {
    let nowhere = "amqp://guest:guest@127.0.0.1:1/%2f";
    let cases: [(&[&str], &str); 5] = [
        (
            &["--json", r#"{"book_id": "b"}"#, "--service", "lending"],
            "\"patron_id\" is a required property",
        ),
        (
            &[
                "--json",
                r#"{"book_id": 7, "patron_id": "p"}"#,
                "--service",
                "lending",
            ],
            "at /book_id",
        ),
        (
            &["--json", "{book_id", "--service", "lending"],
            "not valid JSON",
        ),
        (
            &["--json", "{}", "--service", "catalog"],
            "does not publish",
        ),
        (
            &["--json", "{}", "--service", "nobody"],
            "no catalog for service `nobody`",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["publish", "lending.book-borrowed", "--transport", nowhere];
        args.extend(extra);
        let r = run(&library(), &args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(says),
            "{args:?} should say {says:?}: {r:?}"
        );
        assert!(
            !r.stderr.contains("connect"),
            "{args:?} contacted the broker: {r:?}"
        );
    }
}
