//! The fault hook: `ConnectionDropper::drop_connections` closes every open connection in
//! the middle of its request, and the server goes on serving new ones.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tidings_servicebus_server::{sas, Server, ServerConfig};

const BASE: &str = "https://dev.servicebus.windows.net/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_connections_breaks_a_request_in_flight_and_the_server_serves_again() {
    let server = Server::start(
        ServerConfig::new("dev", "root", "k3y"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await
    .unwrap();
    let token = sas::token(BASE, "root", "k3y", Duration::from_secs(600));
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{}{path}", server.endpoint()))
            .header("authorization", token.clone())
            .header("content-length", "0")
            .send()
    };
    let created = call(reqwest::Method::PUT, "/t?api-version=2017-04")
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = call(
        reqwest::Method::PUT,
        "/t/subscriptions/s?api-version=2017-04",
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);

    // A receive that would wait 60 s for a message, on its own connection.
    let waiting = tokio::spawn(call(
        reqwest::Method::POST,
        "/t/subscriptions/s/messages/head?timeout=60",
    ));
    // Once the receive is being served, drop the connections; retry until it took.
    let dropper = server.connection_dropper();
    let outcome = loop {
        dropper.drop_connections();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if waiting.is_finished() {
            break waiting.await.unwrap();
        }
    };
    assert!(
        outcome.is_err(),
        "the receive in flight must fail with a connection error, got {:?}",
        outcome.map(|r| r.status())
    );

    let again = call(reqwest::Method::GET, "/t?api-version=2017-04")
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the server serves new connections");
    server.shutdown().await;
}
