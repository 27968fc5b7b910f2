//! TLS against the broker's TLS listener (`TIDINGS_RABBITMQ_TLS_URL`, certificates in
//! `TIDINGS_TLS_DIR`): a server verified with a custom CA, mutual TLS with a client
//! certificate, and a refused server certificate without that CA.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use tidings_core::{Bus, Context, ErrorKind, HandlerError, Subscription};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig, TlsConfig};

use common::{eventually, namespace, OrderEvents, OrderPlaced, Seen};

fn tls_env() -> Option<(String, PathBuf)> {
    match (
        std::env::var("TIDINGS_RABBITMQ_TLS_URL"),
        std::env::var("TIDINGS_TLS_DIR"),
    ) {
        (Ok(url), Ok(dir)) if !url.is_empty() && !dir.is_empty() => Some((url, PathBuf::from(dir))),
        _ => {
            println!("skipped: TIDINGS_RABBITMQ_TLS_URL and TIDINGS_TLS_DIR are not set (scripts/test sets them)");
            None
        }
    }
}

async fn record(e: OrderPlaced, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state().record(e.n, cx.attempt(), cx.redelivered());
    Ok(())
}

/// Publish and handle one event over `transport`'s connections.
async fn round_trip(make: impl Fn() -> RabbitMq) {
    let ns = namespace();
    let seen = Seen::default();
    let sub = Bus::builder("catalog")
        .namespace(&ns)
        .transport(make())
        .subscribe(
            Subscription::to::<OrderEvents>()
                .with_state(seen.clone())
                .on(record),
        )
        .build()
        .await
        .expect("building the subscriber over TLS");
    let publisher = make();
    let shop = Bus::builder("shop")
        .namespace(&ns)
        .transport(publisher.clone())
        .publishes::<OrderEvents>()
        .build()
        .await
        .expect("building the publisher over TLS");
    shop.publish(OrderPlaced { n: 1 })
        .await
        .expect("publishing over TLS");
    eventually(
        Duration::from_secs(30),
        "the event handled over TLS",
        || seen.runs(1).len() == 1,
    )
    .await;
    assert!(publisher.is_connected());
    shop.teardown().await.unwrap();
    sub.teardown().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    let Some((url, dir)) = tls_env() else { return };
    assert!(url.starts_with("amqps://"), "{url}");
    let tls = TlsConfig::new()
        .ca_file(dir.join("ca.pem"))
        .expect("ca.pem");
    round_trip(|| RabbitMq::new(RabbitMqConfig::new(&url).tls(tls.clone()))).await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let Some((url, dir)) = tls_env() else { return };
    let tls = TlsConfig::new()
        .ca_file(dir.join("ca.pem"))
        .expect("ca.pem")
        .client_cert_files(dir.join("client.pem"), dir.join("client.key"))
        .expect("client certificate");
    let name = format!("mtls-{}", namespace());
    round_trip(|| {
        RabbitMq::new(
            RabbitMqConfig::new(&url)
                .tls(tls.clone())
                .connection_name(name.clone()),
        )
    })
    .await;

    // The broker saw the client certificate (when we can ask it).
    let Ok(ctl) = std::env::var("TIDINGS_RABBITMQ_CTL") else {
        println!("not checking the peer certificate: TIDINGS_RABBITMQ_CTL is not set");
        return;
    };
    let transport = RabbitMq::connect(
        RabbitMqConfig::new(&url)
            .tls(tls.clone())
            .connection_name(name.clone()),
    )
    .await
    .expect("connecting with mutual TLS");
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ctl} ctl list_connections client_properties peer_cert_subject ssl"
        ))
        .output()
        .await
        .expect("listing connections");
    let listing = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = listing.lines().filter(|l| l.contains(&name)).collect();
    assert!(
        !ours.is_empty(),
        "our connection {name} is not listed:\n{listing}"
    );
    assert!(
        ours.iter().all(|l| l.contains("CN=tidings-client")),
        "the broker did not see the client certificate over TLS: {ours:?}"
    );
    drop(transport);
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let Some((url, _)) = tls_env() else { return };
    let err = RabbitMq::connect(RabbitMqConfig::new(&url).connect_timeout(Duration::from_secs(2)))
        .await
        .expect_err("connected without trusting the test CA");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let shown = err.to_string().to_lowercase();
    assert!(
        shown.contains("certificate"),
        "the error does not say why: {err}"
    );
    assert!(
        !err.to_string().contains(":guest@"),
        "password shown: {err}"
    );
}
