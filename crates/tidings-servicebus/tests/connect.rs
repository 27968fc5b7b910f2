//! An unreachable namespace (defect 5 of issue 9): `Unavailable`, retryable, within the
//! connect timeout, naming the (redacted) address once with the cause, never the key or
//! a password.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{transport::Transport, Bus, Envelope, Error, ErrorKind};
use tidings_macros::{Event, Topic};
use tidings_servicebus::{ServiceBus, ServiceBusConfig};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "sbconnect.pinged", version = 1)]
struct Pinged {
    n: u64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "pings")]
enum Pings {
    Pinged(Pinged),
}

const KEY: &str = "s3cret-key-that-must-not-show";

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn config(endpoint: &str) -> ServiceBusConfig {
    ServiceBusConfig::new("dev", "RootManageSharedAccessKey", KEY)
        .endpoint(endpoint)
        .connect_timeout(Duration::from_millis(500))
}

/// The checks every unreachable-namespace error must pass.
fn assert_unreachable(err: &Error, address: &str) {
    let text = err.to_string();
    println!("{text}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{text}");
    assert!(err.is_retryable(), "{text}");
    assert_eq!(
        text.matches(address).count(),
        1,
        "the address must appear exactly once: {text}"
    );
    assert!(
        !text.contains(KEY) && !text.contains("SharedAccessSignature"),
        "{text}"
    );
    assert!(
        !text.contains("failed to execute `reqwest` request"),
        "{text}"
    );
    // The cause is shown, once.
    let cause = "error sending request";
    assert_eq!(text.matches(cause).count(), 1, "the cause once: {text}");
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable_naming_the_address_once() {
    let address = format!("http://127.0.0.1:{}", closed_port().await);
    let err = ServiceBus::connect(config(&address)).await.unwrap_err();
    assert_unreachable(&err, &address);
}

#[tokio::test]
async fn build_on_a_closed_port_is_unavailable_naming_the_address_once_without_its_password() {
    let port = closed_port().await;
    // The endpoint's password is hidden as everywhere in tidings (`redact_url`).
    let address = format!("http://admin:***@127.0.0.1:{port}");
    let url = format!(
        "servicebus://dev?key_name=RootManageSharedAccessKey&key={KEY}&endpoint=http://admin:{KEY}@127.0.0.1:{port}&connect_timeout=500ms"
    );
    let err = Bus::builder("pinger")
        .transport(ServiceBus::from_url(&url).unwrap())
        .publishes::<Pings>()
        .build()
        .await
        .unwrap_err();
    assert_unreachable(&err, &address);
}

#[tokio::test]
async fn a_namespace_that_accepts_but_never_answers_is_unavailable_after_the_connect_timeout() {
    // The kernel accepts connections into the backlog; nobody ever answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let err = ServiceBus::connect(config(&address)).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{text}");
    assert_eq!(text.matches(&address).count(), 1, "{text}");
    assert!(text.contains("connect timeout"), "{text}");
    drop(listener);
}

#[tokio::test]
async fn a_request_that_gets_no_answer_later_is_unavailable_naming_the_address_once() {
    let address = format!("http://127.0.0.1:{}", closed_port().await);
    let transport = ServiceBus::new(config(&address)).unwrap();
    let env = Envelope::new(
        "sbconnect.pinged",
        1,
        "pinger",
        "application/json",
        &b"{}"[..],
    );
    let err = transport.publish("pings", vec![env]).await.unwrap_err();
    assert_unreachable(&err, &address);
}
