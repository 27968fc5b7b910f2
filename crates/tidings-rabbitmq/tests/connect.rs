//! Connecting: `RabbitMq::connect(config)` connects at once (the broker at
//! `TIDINGS_RABBITMQ_URL`), URL options are checked (an unknown one is refused, listing
//! the known ones), and a broker that refuses or does not answer is `Unavailable` within
//! the connect timeout, naming its redacted address once. The unreachable cases run
//! without a broker (a closed port and a silent listener on loopback).

mod common;

use std::time::{Duration, Instant};

use tidings_core::{Bus, ErrorKind};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};

use common::OrderEvents;

fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn an_unknown_url_option_is_refused_listing_the_known_ones() {
    // The real broker when there is one, so that only the option can make it fail.
    let url = std::env::var("TIDINGS_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let typo = format!("{url}?heartbaet=10");

    let err = RabbitMq::from_url(&typo).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = RabbitMq::connect(RabbitMqConfig::new(&typo))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // `new` does no I/O and checks nothing: `build()` reports it.
    let err = Bus::builder("shop")
        .transport(RabbitMq::new(RabbitMqConfig::new(&typo)))
        .publishes::<OrderEvents>()
        .build()
        .await
        .expect_err("a bus on a URL with an unknown option must not build");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let shown = err.to_string();
    println!("{shown}");
    assert!(
        shown.contains("unknown RabbitMQ URL option `heartbaet`"),
        "{shown}"
    );
    for known in ["connect_timeout", "heartbeat", "frame_max", "channel_max"] {
        assert!(
            shown.contains(known),
            "the known option {known} is not listed: {shown}"
        );
    }
    assert!(!shown.contains(":guest@"), "password shown: {shown}");

    // The options that exist are taken.
    if common::url().is_some() {
        let fine = format!("{url}?heartbeat=10&connect_timeout=5s");
        RabbitMq::from_url(&fine).expect("known URL options");
        RabbitMq::connect(RabbitMqConfig::new(fine))
            .await
            .expect("connecting with known URL options");
    }
}

#[tokio::test]
async fn connect_opens_the_connection_at_once() {
    let Some(url) = common::url() else { return };
    let config = RabbitMqConfig::new(&url).connect_timeout(Duration::from_secs(5));
    let lazy = RabbitMq::new(config.clone());
    assert!(!lazy.is_connected(), "`new` must not connect");
    assert_eq!(lazy.connection_generation(), 0);

    let transport = RabbitMq::connect(config)
        .await
        .expect("connecting to the broker");
    assert!(transport.is_connected());
    assert_eq!(transport.connection_generation(), 1);
    // The connection is the one the bus uses: building opens no other.
    let bus = Bus::builder("shop")
        .namespace(common::namespace())
        .transport(transport.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap();
    assert_eq!(transport.connection_generation(), 1);
    bus.teardown().await.unwrap();
}

#[tokio::test]
async fn connect_to_a_closed_port_is_unavailable_within_the_timeout() {
    let address = "127.0.0.1:1";
    let timeout = Duration::from_millis(500);
    let config =
        RabbitMqConfig::new(format!("amqp://guest:hunter2@{address}/%2f")).connect_timeout(timeout);
    let started = Instant::now();
    let err = RabbitMq::connect(config).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    println!("{shown}");
    assert_eq!(
        occurrences(&shown, address),
        1,
        "the address must appear exactly once: {shown}"
    );
    assert!(!shown.contains("hunter2"), "password shown: {shown}");
    assert!(!format!("{err:?}").contains("hunter2"), "password in Debug");
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_naming_the_address_once() {
    let address = "127.0.0.1:1";
    let transport = RabbitMq::new(
        RabbitMqConfig::new(format!("amqp://guest:hunter2@{address}/%2f"))
            .connect_timeout(Duration::from_millis(500)),
    );
    let err = Bus::builder("shop")
        .transport(transport)
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    println!("{shown}");
    assert_eq!(
        occurrences(&shown, address),
        1,
        "the address must appear exactly once: {shown}"
    );
    assert!(!shown.contains("hunter2"), "password shown: {shown}");
    assert!(!format!("{err:?}").contains("hunter2"), "password in Debug");
}

#[tokio::test]
async fn a_broker_that_never_answers_is_unavailable_after_the_url_connect_timeout() {
    // Accepts TCP connections and never speaks AMQP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("amqp://guest:hunter2@{address}/%2f?connect_timeout=300ms");
    let started = Instant::now();
    let err = RabbitMq::connect(RabbitMqConfig::new(url))
        .await
        .unwrap_err();
    let took = started.elapsed();
    silent.abort();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    println!("{shown}");
    assert_eq!(
        occurrences(&shown, &address),
        1,
        "the address must appear exactly once: {shown}"
    );
    assert!(
        shown.contains("300ms"),
        "the URL's connect_timeout must be the one applied: {shown}"
    );
    assert!(!shown.contains("hunter2"), "password shown: {shown}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_unavailable_error_without_the_password() {
    // Runs whenever the broker tests run: a closed port on loopback.
    let Some(_) = common::url() else { return };
    let transport = RabbitMq::new(
        RabbitMqConfig::new("amqp://guest:hunter2@127.0.0.1:1/%2f")
            .publish_timeout(Duration::from_secs(1)),
    );
    let err = Bus::builder("shop")
        .transport(transport)
        .publishes::<OrderEvents>()
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_at_once() {
    let Some(url) = common::url() else { return };
    let bad = url.replacen("guest:guest@", "guest:not-the-password@", 1);
    assert_ne!(bad, url, "expected guest:guest in TIDINGS_RABBITMQ_URL");
    let started = Instant::now();
    let err = RabbitMq::connect(RabbitMqConfig::new(bad))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-password"), "{shown}");
    // Refused credentials are not retried.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
