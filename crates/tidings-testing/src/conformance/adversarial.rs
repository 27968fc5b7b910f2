//! Adversarial cases: input and faults from outside tidings. Raw messages sent with the
//! broker's own client, custom headers that would forge the envelope, user code that
//! panics wherever it runs, and connections dropped mid-stream. Each checks the documented
//! outcome and that the next valid event (same ordering key, same partition) is handled.

use std::time::Duration;

use tidings_core::{
    transport::attrs, Bus, Codec, DeadLetter, Envelope, ErrorKind, Event, PublishOptions,
    Subscription,
};
use uuid::Uuid;

use super::events::Ping;
use super::failure::{dead_letters_until, quick};
use super::support::{describe, Must, Probe, Scene, Seen, Tap};
use super::volatile::{
    Volatile, VolatileEvents, VolatileEventsV1, VolatileHandler, VolatileV1, PANIC_MARK,
};
use super::{Adversary, RawMessage, TransportFactory};

/// Header pairs as an injector sends them.
type Headers = Vec<(String, String)>;

/// The key every raw message and the valid event after them share.
const KEY: &str = "adversarial";

pub(super) fn adversary(f: &dyn TransportFactory, case: &str) -> std::sync::Arc<dyn Adversary> {
    f.adversary().unwrap_or_else(|| {
        panic!(
            "{case}: the {} factory provides no Adversary (raw injection with the broker's own client and a fault hook); every transport must",
            f.name()
        )
    })
}

/// The headers tidings would write for `envelope` (CloudEvents binary mode).
pub(super) fn headers_of(envelope: &Envelope) -> Headers {
    envelope
        .attributes()
        .into_iter()
        .map(|(n, v)| (n.into_owned(), v))
        .collect()
}

/// A payload of `Ping`'s shape in `codec` whose field `field` holds arrays nested
/// `depth` deep.
fn deeply_nested(codec: Codec, field: &str, depth: usize) -> Vec<u8> {
    match codec {
        Codec::Json => format!(
            "{{\"n\":1,\"key\":\"{KEY}\",\"{field}\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes(),
        _ => {
            // MessagePack: a map of 3: n, key, field -> [[[...]]].
            let mut out = vec![0x83, 0xa1, b'n', 0x01, 0xa3, b'k', b'e', b'y'];
            out.push(0xa0 | KEY.len() as u8);
            out.extend_from_slice(KEY.as_bytes());
            out.push(0xa0 | field.len() as u8);
            out.extend_from_slice(field.as_bytes());
            out.extend(std::iter::repeat_n(0x91, depth));
            out.push(0x90);
            out
        }
    }
}

/// Messages sent with the broker's own client, bypassing tidings, are classified by the
/// core alike on every transport: each one that is not a valid envelope for the
/// subscription (garbage payload, newer version, oversized, nesting too deep in a known
/// or an unknown field, no headers, an invalid id, no type, a content type no codec reads)
/// is dead-lettered at once with a reason naming the cause and attempts 0 (an oversized one
/// at least with its headers: the payload may be cut if the broker would not take it
/// whole); an unknown wire name is skipped; and the valid event after them, same ordering
/// key and partition, is handled.
pub async fn raw_messages(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "raw_messages");
    let adversary = adversary(f, scene.case);
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let topic = scene.topic();
    let codec = Codec::default();
    let ping = |n: u64| {
        let mut env = Envelope::new(
            Ping::NAME,
            Ping::VERSION,
            "alpha",
            codec.content_type(),
            codec.encode(&Ping::keyed(n, KEY)).must("encoding a ping"),
        );
        env.ordering_key = Some(KEY.to_string());
        env
    };
    let mut expected: Vec<(&str, Option<Uuid>, Vec<u8>, &str)> = Vec::new();
    let mut send = Vec::new();
    let mut add =
        |what: &'static str, reason: &'static str, env: &Envelope, tweak: &dyn Fn(&mut Headers)| {
            let mut headers = headers_of(env);
            tweak(&mut headers);
            let id = headers
                .iter()
                .find(|(n, _)| n == attrs::ID)
                .and_then(|(_, v)| Uuid::parse_str(v).ok());
            expected.push((what, id, env.payload.to_vec(), reason));
            send.push(RawMessage {
                headers,
                payload: env.payload.to_vec(),
                key: Some(KEY.to_string()),
            });
        };
    let keep = |_: &mut Headers| {};
    let set = |name: &'static str, value: &'static str| {
        move |h: &mut Headers| {
            h.retain(|(n, _)| n != name);
            h.push((name.to_string(), value.to_string()));
        }
    };

    let mut garbage = ping(1);
    garbage.payload = vec![0xc1u8, 0xc1, 0xc1, 0xc1].into();
    add("a garbage payload", "undecodable", &garbage, &keep);
    add(
        "a newer version",
        "unsupported version",
        &ping(2),
        &set(attrs::VERSION, "3"),
    );
    let mut oversized = ping(3);
    oversized.payload = codec
        .encode(&Ping::keyed(3, "x".repeat(1536 * 1024)))
        .must("encoding a 1.5 MiB ping")
        .into();
    add("a 1.5 MiB payload", "oversized", &oversized, &keep);
    let mut deep_known = ping(4);
    deep_known.payload = deeply_nested(codec, "key", 100_000).into();
    add(
        "nesting 100,000 deep in a known field",
        "undecodable",
        &deep_known,
        &keep,
    );
    let mut deep_unknown = ping(5);
    deep_unknown.payload = deeply_nested(codec, "extra", 100_000).into();
    add(
        "nesting 100,000 deep in an unknown field",
        "undecodable",
        &deep_unknown,
        &keep,
    );
    let mut bare = ping(6);
    bare.payload = b"a message without headers".to_vec().into();
    add(
        "a message without headers",
        "not a valid tidings envelope",
        &bare,
        &|h| h.clear(),
    );
    let mut bad_id = ping(7);
    bad_id.payload = b"a message with an invalid id".to_vec().into();
    add(
        "an invalid ce_id",
        "ce_id",
        &bad_id,
        &set(attrs::ID, "not-a-uuid"),
    );
    add("no ce_type", "ce_type", &ping(8), &|h| {
        h.retain(|(n, _)| n != attrs::TYPE)
    });
    add(
        "an unknown content type",
        "text/x-adversarial",
        &ping(9),
        &set(attrs::CONTENT_TYPE, "text/x-adversarial"),
    );
    // Skipped, not dead-lettered: an event this subscription has no handler for.
    let unknown = ping(10);
    let mut unknown_headers = headers_of(&unknown);
    unknown_headers.retain(|(n, _)| n != attrs::TYPE);
    unknown_headers.push((attrs::TYPE.into(), "conformance.nobody-handles-this".into()));
    send.push(RawMessage {
        headers: unknown_headers,
        payload: unknown.payload.to_vec(),
        key: Some(KEY.to_string()),
    });

    for message in send {
        adversary
            .inject(&topic, message)
            .await
            .must("injecting a raw message with the broker's own client");
    }
    alpha
        .publish(Ping::keyed(900, KEY))
        .await
        .must("publishing the valid ping after the raw messages");
    probe.wait_for_ns("beta", [900], scene.patience()).await;

    let dead = dead_letters_until(
        &scene,
        &beta,
        "every raw message that is not an envelope in the dead letters",
        |d| d.len() >= expected.len(),
    )
    .await;
    for (what, id, payload, reason) in &expected {
        let letter = dead
            .iter()
            .find(|d| match id {
                Some(id) => d.envelope.id == *id,
                None => d.envelope.payload.as_ref() == payload.as_slice(),
            })
            .unwrap_or_else(|| {
                panic!(
                    "{what} was not dead-lettered; dead letters: {}",
                    list(&dead)
                )
            });
        assert!(
            letter
                .info
                .reason
                .to_lowercase()
                .contains(&reason.to_lowercase()),
            "the dead-letter reason for {what} should say {reason:?}: {:?}",
            letter.info.reason
        );
        assert_eq!(
            letter.info.attempts, 0,
            "{what}: the handler must not have run"
        );
        assert_eq!(letter.info.service.as_ref(), "beta", "{what}: service");
    }
    assert!(
        !dead.iter().any(|d| d.envelope.id == unknown.id),
        "an event without a handler must be skipped, not dead-lettered: {}",
        list(&dead)
    );
    scene.quiet().await;
    let ran: Vec<Seen> = probe
        .snapshot()
        .into_iter()
        .filter(|s| s.n != 900)
        .collect();
    assert!(
        ran.is_empty(),
        "the handler ran for raw messages: {}",
        describe(&ran)
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

fn list(dead: &[DeadLetter]) -> String {
    dead.iter()
        .map(|d| {
            format!(
                "{} {}: {}",
                d.envelope.event_type, d.envelope.id, d.info.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A custom header named like an envelope attribute (`ce_*`, `content-type`,
/// `tidings-*`) or with a prefix the broker keeps for itself is refused on publish with a
/// `Config` error naming it, and nothing is sent; an ordinary header arrives intact.
pub async fn reserved_headers(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "reserved_headers");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let mut names: Vec<String> = [
        "ce_source",
        "ce_id",
        "CE_TYPE",
        "content-type",
        "tidings-dlq-reason",
        "tidings-attempt",
    ]
    .map(String::from)
    .to_vec();
    for prefix in scene.capabilities().await.reserved_header_prefixes {
        names.push(format!("{prefix}conformance"));
    }
    for (n, name) in names.iter().enumerate() {
        let result = alpha
            .publish_with(
                Ping::unkeyed(n as u64 + 1),
                PublishOptions::new().header(name.clone(), "forged"),
            )
            .await;
        let err = result.expect_err(&format!(
            "publishing with a custom header `{name}` must fail"
        ));
        assert_eq!(err.kind(), ErrorKind::Config, "header `{name}`: {err}");
        assert!(
            err.to_string().contains(&format!("`{name}`")),
            "the error must name the header `{name}`: {err}"
        );
    }
    alpha
        .publish_with(
            Ping::unkeyed(900),
            PublishOptions::new().header("tenant", "north"),
        )
        .await
        .must("publishing with an ordinary custom header");
    let seen = probe.wait_for_ns("beta", [900], scene.patience()).await;
    assert_eq!(
        seen[0].envelope.header("tenant"),
        Some("north"),
        "the custom header `tenant` must arrive intact"
    );
    assert_eq!(seen[0].envelope.source.as_ref(), "alpha");
    scene.quiet().await;
    assert_eq!(
        probe.len(),
        1,
        "refused events arrived: {}",
        describe(&probe.snapshot())
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// A panic anywhere user code runs (the event's `Deserialize`, an upcaster's `From`, the
/// synchronous part of `handle`, the handler's future) is a handler failure: retried by
/// the policy, then dead-lettered with the panic message and the number of runs; the
/// consumer goes on, and later events of the same ordering key are handled.
pub async fn panics_anywhere(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "panics_anywhere");
    let probe = Probe::new();
    let policy = quick(2, 1);
    let beta = scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<VolatileEvents>()
                    .with_state(Tap::new(&probe, "beta"))
                    .on(VolatileHandler)
                    .upcast::<VolatileV1, Volatile>()
                    .retry(policy),
            ),
            "`beta` with a handler that panics on demand",
        )
        .await;
    let alpha = scene
        .build(
            scene.builder("alpha").publishes::<VolatileEvents>(),
            "the publisher `alpha`",
        )
        .await;
    let alpha_v1 = scene
        .build(
            scene.builder("alpha-v1").publishes::<VolatileEventsV1>(),
            "the v1 publisher `alpha-v1`",
        )
        .await;
    let volatile = |n: u64, fault: &str| Volatile {
        n,
        key: KEY.into(),
        fault: fault.into(),
    };
    let mut faulty = Vec::new();
    for (n, fault) in [(1, "deserialize"), (2, "sync"), (3, "future")] {
        let id = alpha
            .publish(volatile(n, fault))
            .await
            .must("publishing a volatile event");
        faulty.push((fault, id));
    }
    let id = alpha_v1
        .publish(VolatileV1 {
            n: 4,
            key: KEY.into(),
            fault: "upcast".into(),
        })
        .await
        .must("publishing a v1 volatile event");
    faulty.push(("upcast", id));
    alpha
        .publish(volatile(5, ""))
        .await
        .must("publishing a good event");
    alpha_v1
        .publish(VolatileV1 {
            n: 6,
            key: KEY.into(),
            fault: String::new(),
        })
        .await
        .must("publishing a good v1 event");

    probe.wait_for_ns("beta", [5, 6], scene.patience()).await;
    let runs = policy.max_handler_runs();
    let dead = scene
        .poll("the four panicking events in the dead letters", || async {
            let dead = beta
                .dead_letters::<VolatileEvents>(100)
                .await
                .must("listing dead letters");
            if dead.len() >= faulty.len() {
                Ok(dead)
            } else {
                Err(list(&dead))
            }
        })
        .await;
    for (fault, id) in &faulty {
        let letter = dead
            .iter()
            .find(|d| d.envelope.id == *id)
            .unwrap_or_else(|| {
                panic!(
                    "the panic in {fault} was not dead-lettered: {}",
                    list(&dead)
                )
            });
        assert!(
            letter.info.reason.contains("panicked") && letter.info.reason.contains(PANIC_MARK),
            "the reason for a panic in {fault} must carry the panic message: {:?}",
            letter.info.reason
        );
        assert_eq!(
            letter.info.attempts, runs,
            "a panic in {fault} must be retried like a failure ({runs} runs)"
        );
    }
    alpha.shutdown().await;
    alpha_v1.shutdown().await;
    beta.shutdown().await;
}

/// Connections dropped mid-stream (by the broker or the network): the publisher's errors
/// are retryable and publishing again succeeds once the transport reconnected, and every
/// confirmed event is handled, none lost. `Bus::health` follows: ready before, live
/// throughout, and ready again after the reconnect, also when connections drop while no
/// event is flowing (a subscription waiting for events is consuming, not reconnecting).
pub async fn dropped_connection(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "dropped_connection");
    let adversary = adversary(f, scene.case);
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let health = beta.health();
    assert!(
        health.is_ready(),
        "{}: a new subscription is ready: {health:?}",
        scene.case
    );
    const EVENTS: u64 = 40;
    for n in 1..=EVENTS {
        if n == EVENTS / 2 {
            adversary
                .drop_connections()
                .await
                .must("dropping the connections");
        }
        publish_until_confirmed(&scene, &alpha, n).await;
    }
    let seen = probe
        .wait_for_ns("beta", 1..=EVENTS, scene.patience() * 2)
        .await;
    assert!(seen.len() as u64 >= EVENTS);
    ready_again(&scene, &beta, "after the connections dropped mid-stream").await;

    // Dropped while idle: no delivery comes to say the consumer is back.
    adversary
        .drop_connections()
        .await
        .must("dropping the connections of an idle subscription");
    ready_again(
        &scene,
        &beta,
        "after the connections of an idle subscription dropped",
    )
    .await;
    // Counted once settled, which may come just after the handler ran.
    let deadline = tokio::time::Instant::now() + scene.patience();
    while beta.health().subscriptions[0].handled < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: health counts what was handled: {:?}",
            scene.case,
            beta.health()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alpha.shutdown().await;
    beta.shutdown().await;
    let health = beta.health();
    assert!(
        !health.is_live() && !health.is_ready(),
        "{}: a shut-down bus is neither live nor ready: {health:?}",
        scene.case
    );
}

/// Wait until `bus` reports every subscription consuming again, checking that it stays
/// live (reconnecting is live) meanwhile.
async fn ready_again(scene: &Scene<'_>, bus: &Bus, when: &str) {
    let deadline = tokio::time::Instant::now() + scene.patience();
    loop {
        let health = bus.health();
        assert!(health.is_live(), "{}: live {when}: {health:?}", scene.case);
        if health.is_ready() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: not ready {when} within {:?}: {health:?}",
            scene.case,
            scene.patience()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publish ping `n`, trying again while the error is retryable (as an application would
/// across a reconnect); any other error fails the case.
async fn publish_until_confirmed(scene: &Scene<'_>, bus: &Bus, n: u64) {
    let deadline = tokio::time::Instant::now() + scene.patience();
    loop {
        match bus.publish(Ping::unkeyed(n)).await {
            Ok(_) => return,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "{}: publishing ping {n} after the connections dropped: {e} (retryable errors are retried for {:?})",
                scene.case,
                scene.patience()
            ),
        }
    }
}

/// A broker that cannot be reached: a loopback port where nothing listens (connections
/// refused), then a listener that accepts connections and never answers. Building a bus
/// on a transport pointed there (with a 2 s connect timeout) fails as
/// [`ErrorKind::Unavailable`], retryable, naming the address once, and does so within the
/// patience: it neither hangs nor retries for minutes. Skipped by transports without a
/// connection ([`Capabilities::connect_timeout`](tidings_core::transport::Capabilities) `None`).
pub async fn unreachable_broker(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "unreachable_broker");
    if !scene
        .needs("a broker connection", |c| c.connect_timeout.is_some())
        .await
    {
        return;
    }
    let adversary = adversary(f, scene.case);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    // A port that was free a moment ago: nothing listens there now.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free loopback port");
    // The kernel completes the handshake into the backlog; nothing ever reads or writes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a silent listener");
    let silent_address = silent.local_addr().expect("reading the listener's address");
    for (what, address) in [
        ("nothing listens", refused.to_string()),
        ("a listener never answers", silent_address.to_string()),
    ] {
        let transport = adversary
            .unreachable(&address, CONNECT_TIMEOUT)
            .must("making a transport for an unreachable broker");
        assert_eq!(
            transport.capabilities_dyn().connect_timeout,
            Some(CONNECT_TIMEOUT),
            "{}: the unreachable transport does not declare the connect timeout it was given",
            scene.case
        );
        let building = Bus::builder("alpha")
            .transport_shared(transport)
            .namespace(scene.namespace.clone())
            .publishes::<super::events::ConfEvents>()
            .subscribe(Tap::pings(&Probe::new(), "alpha"))
            .build();
        let err = match tokio::time::timeout(scene.patience(), building).await {
            Err(_) => panic!(
                "{}: where {what} ({address}), build() did not fail within {:?} (connect timeout {CONNECT_TIMEOUT:?})",
                scene.case,
                scene.patience()
            ),
            Ok(Ok(bus)) => {
                bus.shutdown().await;
                panic!("{}: a bus built where {what} ({address})", scene.case)
            }
            Ok(Err(e)) => e,
        };
        let shown = err.to_string();
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable,
            "{}: where {what}: {shown}",
            scene.case
        );
        assert!(
            err.is_retryable(),
            "{}: where {what}, the error is not retryable: {shown}",
            scene.case
        );
        assert_eq!(
            shown.matches(address.as_str()).count(),
            1,
            "{}: where {what}, the address {address} is not named exactly once: {shown}",
            scene.case
        );
    }
    drop(silent);
}
