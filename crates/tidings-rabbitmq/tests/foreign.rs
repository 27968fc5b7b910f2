//! Messages that tidings did not write, sent with lapin to a real broker
//! (`TIDINGS_RABBITMQ_URL`): the core decides what is not an envelope and the bus
//! dead-letters it with the reason (without its payload when the dead letter would be too
//! large), and the consumer goes on.

mod common;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tidings_core::transport::wire::DLQ_PAYLOAD_OMITTED;
use tidings_core::{Bus, Envelope, Subscription};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

use common::{eventually, namespace, raw, record, OrderEvents, OrderPlaced, Seen, PATIENCE};

/// Publish `body` with `headers` to the exchange `exchange` with lapin, confirmed.
async fn inject(url: &str, exchange: &str, headers: FieldTable, body: &[u8]) {
    let conn = raw(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        exchange.into(),
        "orders.placed".into(),
        BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "injected".into()).await;
}

/// The headers tidings writes for `envelope`, as AMQP long strings.
fn headers_of(envelope: &Envelope) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in envelope.attributes() {
        table.insert(
            ShortString::from(String::from(name)),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    table
}

/// A subscriber of orders on `transport`, and a publisher.
async fn buses(url: &str, ns: &str, transport: RabbitMq, seen: &Seen) -> (Bus, Bus) {
    let sub = Bus::builder("catalog")
        .namespace(ns)
        .transport(transport)
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .unwrap();
    let bus = common::shop(url, ns).await;
    (sub, bus)
}

#[tokio::test]
async fn a_message_that_is_not_an_envelope_is_dead_lettered_at_once() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let (sub, bus) = buses(&url, &ns, RabbitMq::from_url(&url).unwrap(), &seen).await;

    // A foreign publisher: right routing key, no CloudEvents headers.
    let mut headers = FieldTable::default();
    headers.insert("ce_id".into(), AMQPValue::LongString("not-a-uuid".into()));
    headers.insert("origin".into(), AMQPValue::LongString("legacy".into()));
    inject(&url, &format!("{ns}.orders"), headers, b"garbage").await;

    bus.publish(OrderPlaced { n: 5 }).await.unwrap();
    eventually(PATIENCE, "the consumer went on to order 5", || {
        seen.runs(5).len() == 1
    })
    .await;

    let letters = sub.dead_letters::<OrderEvents>(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert!(letter.info.reason.contains("ce_id"), "{:?}", letter.info);
    assert_eq!(letter.info.attempts, 0);
    assert_eq!(letter.envelope.payload.as_ref(), b"garbage");
    assert_eq!(
        letter.envelope.header("tidings-original-origin"),
        Some("legacy")
    );
    assert_eq!(seen.distinct(), 1, "the handler never saw the garbage");
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn a_message_with_a_table_header_is_dead_lettered_naming_the_header() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let (sub, bus) = buses(&url, &ns, RabbitMq::from_url(&url).unwrap(), &seen).await;

    // Every envelope header right, plus a table no envelope header can carry.
    let envelope = Envelope::new(
        "orders.placed",
        1,
        "legacy",
        "application/json",
        &b"{\"n\":1}"[..],
    );
    let mut headers = headers_of(&envelope);
    let mut meta = FieldTable::default();
    meta.insert("region".into(), AMQPValue::LongString("north".into()));
    headers.insert("meta".into(), AMQPValue::FieldTable(meta));
    // The broker's own table headers are not the message's: never a defect.
    headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
    inject(&url, &format!("{ns}.orders"), headers, b"{\"n\":1}").await;

    bus.publish(OrderPlaced { n: 2 }).await.unwrap();
    eventually(PATIENCE, "the consumer went on to order 2", || {
        seen.runs(2).len() == 1
    })
    .await;
    let letters = sub.dead_letters::<OrderEvents>(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert!(
        letter.info.reason.contains("`meta`") && letter.info.reason.contains("table"),
        "the reason must name the header: {:?}",
        letter.info.reason
    );
    assert_eq!(letter.info.attempts, 0);
    assert_eq!(letter.envelope.id, envelope.id);
    assert!(
        seen.runs(1).is_empty(),
        "the handler ran for the table message"
    );
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn a_dead_letter_over_the_size_limit_is_parked_without_its_payload() {
    let Some(url) = common::url() else { return };
    let ns = namespace();
    let seen = Seen::default();
    let limit = 64 * 1024;
    let small = RabbitMq::new(RabbitMqConfig::new(&url).max_message_size(limit));
    let (sub, bus) = buses(&url, &ns, small, &seen).await;

    // Valid headers, a body over the subscriber transport's limit that is not JSON.
    let envelope = Envelope::new("orders.placed", 1, "legacy", "application/json", &b"x"[..]);
    let body = vec![b'x'; 2 * limit];
    inject(&url, &format!("{ns}.orders"), headers_of(&envelope), &body).await;

    bus.publish(OrderPlaced { n: 3 }).await.unwrap();
    eventually(PATIENCE, "the consumer went on to order 3", || {
        seen.runs(3).len() == 1
    })
    .await;
    let letters = sub.dead_letters::<OrderEvents>(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.envelope.id, envelope.id);
    assert!(letter.envelope.payload.is_empty(), "the payload was kept");
    assert_eq!(
        letter.envelope.header(DLQ_PAYLOAD_OMITTED),
        Some(body.len().to_string().as_str())
    );
    assert!(
        letter.info.reason.contains("undecodable"),
        "{:?}",
        letter.info.reason
    );
    assert_eq!(letter.info.attempts, 0);
    bus.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}
