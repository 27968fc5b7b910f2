//! Connections dropped by the server mid-request (its fault hook): the transport reports a
//! retryable error and goes on by itself, losing nothing.

mod support;

use std::time::Duration;

use tidings_core::{
    transport::{Subscriber, SubscriptionSpec, Topology, Transport},
    Envelope,
};
use tidings_servicebus::ServiceBus;

use support::LocalServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_whose_connection_drops_is_a_retryable_error_and_receiving_goes_on() {
    let server = LocalServer::start();
    let transport = ServiceBus::new(server.config()).unwrap();
    let spec = SubscriptionSpec::new("catalog", "catalog", "lending", vec!["a.b".into()]);
    let mut topology = Topology::new("catalog");
    topology.subscriptions.push(spec.clone());
    transport.provision(&topology).await.unwrap();
    let mut subscriber = transport.subscribe(&spec).await.unwrap();

    // The receiver long-polls an empty subscription; drop its connection until it notices.
    let mut error = None;
    for _ in 0..100 {
        server.drop_connections();
        match tokio::time::timeout(Duration::from_millis(100), subscriber.next()).await {
            Err(_) => continue,
            Ok(Some(Err(e))) => {
                error = Some(e);
                break;
            }
            Ok(other) => panic!("expected a receive error, got {other:?}"),
        }
    }
    let error = error.expect("dropping the connections never failed a receive");
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains(&server.endpoint), "{error}");

    // Publishing works again (a pooled connection the server closed may fail once), and
    // the receiver delivers.
    let sent = Envelope::new("a.b", 1, "lending", "application/json", &b"{}"[..]);
    let mut tries = 0;
    while let Err(e) = transport.publish("lending", vec![sent.clone()]).await {
        assert!(e.is_retryable() && tries < 10, "{e}");
        tries += 1;
    }
    let delivered = loop {
        match tokio::time::timeout(Duration::from_secs(30), subscriber.next()).await {
            Ok(Some(Ok(d))) => break d,
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            other => panic!("no delivery after the fault: {other:?}"),
        }
    };
    assert_eq!(delivered.envelope.id, sent.id);
}
