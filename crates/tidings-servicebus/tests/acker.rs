//! The acker's answers the core relies on: a dead letter Service Bus refuses as too large
//! is `MessageTooLarge` (the core then parks it without its payload), and the acker can
//! be used again after it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    transport::{Acker, Subscriber, SubscriptionSpec, Topology, Transport},
    DeadLetterInfo, Envelope, ErrorKind,
};
use tidings_servicebus::{ServiceBus, ServiceBusConfig};
use tidings_servicebus_server::{Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_over_the_namespace_limit_is_message_too_large_and_the_acker_comes_back() {
    let server = Server::start(
        ServerConfig::new("dev", "root", "key").max_message_size(64 * 1024),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await
    .unwrap();
    let transport = ServiceBus::new(
        ServiceBusConfig::new("dev", "root", "key")
            .endpoint(server.endpoint())
            .lock_duration(Duration::from_secs(5))
            .receive_wait(Duration::from_secs(1)),
    )
    .unwrap();
    let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec!["a.b".into()]);
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    transport.provision(&topology).await.unwrap();
    let sent = Envelope::new("a.b", 1, "lending", "application/json", &b"{}"[..]);
    transport
        .publish("lending", vec![sent.clone()])
        .await
        .unwrap();
    let mut subscriber = transport.subscribe(&spec).await.unwrap();
    let delivery = subscriber.next().await.unwrap().unwrap();
    assert_eq!(delivery.envelope.id, sent.id);

    let mut big = sent.clone();
    big.payload = vec![b'x'; 100 * 1024].into();
    let info = || {
        DeadLetterInfo::new(
            "poison",
            0,
            "catalog".into(),
            "catalog".into(),
            "lending".into(),
        )
    };
    let (err, acker) = delivery
        .acker
        .dead_letter(Arc::new(big), info())
        .await
        .expect_err("Service Bus refuses a 100 KiB body over a 64 KiB limit");
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge, "{err}");

    // What the core does next: the same dead letter without its payload.
    acker
        .dead_letter(Arc::new(sent.clone()), info())
        .await
        .unwrap();
    drop(subscriber);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dead = transport.dead_letters(&spec, 10).await.unwrap();
        if let Some(d) = dead.first() {
            assert_eq!(d.envelope.id, sent.id);
            assert_eq!(d.info.reason, "poison");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letter never arrived"
        );
        // A consumer moves the copy on to the subqueue; without one, keep receiving.
        let mut s = transport.subscribe(&spec).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.next()).await;
    }
    server.shutdown().await;
}
