//! The Library example's two contexts on each real broker, chosen by URL exactly as
//! `cargo run --example library -- --transport <url>` does. Each broker runs when its
//! variable is set (scripts/test sets them); Service Bus runs on the local protocol server
//! started in this process.

#![allow(unreachable_pub)]

#[path = "../examples/library/catalog.rs"]
#[allow(dead_code)]
mod catalog;
#[path = "../examples/library/contracts.rs"]
#[allow(dead_code)]
mod contracts;
#[path = "../examples/library/lending.rs"]
#[allow(dead_code)]
mod lending;

use std::sync::Arc;
use std::time::Duration;

use tidings::prelude::*;

use catalog::Inventory;
use contracts::{BookId, LendingEvents, PatronId};
use lending::{Lending, LendingStore};

/// Borrow two books and return one through Lending on `url`; Catalog's inventory must end
/// with the right copies on the shelf.
#[allow(dead_code)]
async fn library_flow(url: String) {
    let namespace = format!("lib-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let inventory = Arc::new(Inventory::default());
    let (dune, solaris) = (BookId::new(), BookId::new());
    inventory.add_book(dune, "Dune", 2);
    inventory.add_book(solaris, "Solaris", 1);
    let catalog = Bus::builder("catalog")
        .namespace(namespace.clone())
        .transport_url(url.clone())
        .subscribe(catalog::subscription(inventory.clone()))
        .build()
        .await
        .expect("catalog bus");
    let lending_bus = Bus::builder("lending")
        .namespace(namespace)
        .transport_url(url)
        .publishes::<LendingEvents>()
        .build()
        .await
        .expect("lending bus");
    let lending = Lending::new(lending_bus.clone(), Arc::new(LendingStore::default()));
    let (diana, tomas) = (PatronId::new(), PatronId::new());
    lending.store.seed_patron(diana, "Diana");
    lending.store.seed_patron(tomas, "Tomás");

    let loan = lending.borrow_book(diana, dune).await.unwrap();
    lending.borrow_book(tomas, solaris).await.unwrap();
    lending.return_book(loan).await.unwrap();

    tokio::time::timeout(Duration::from_secs(60), inventory.wait_for_updates(3))
        .await
        .expect("catalog applied all three events within 60 s");
    assert_eq!(inventory.stock(dune).unwrap().available, 2);
    assert_eq!(inventory.stock(solaris).unwrap().available, 0);
    assert_eq!(lending.store.patron(diana).unwrap().loans, 0);
    assert_eq!(lending.store.patron(tomas).unwrap().loans, 1);
    lending_bus.shutdown().await;
    catalog.shutdown().await;
}

#[allow(dead_code)]
fn broker_var(name: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        println!("skipped: {name} is not set (scripts/test sets it)");
    }
    value
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_flow_on_rabbitmq() {
    if let Some(url) = broker_var("TIDINGS_RABBITMQ_URL") {
        library_flow(url).await;
    }
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_flow_on_kafka() {
    if let Some(brokers) = broker_var("TIDINGS_KAFKA_BROKERS") {
        library_flow(format!("kafka://{brokers}")).await;
    }
}

#[cfg(feature = "servicebus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_flow_on_servicebus_local_server() {
    use std::net::{Ipv4Addr, SocketAddr};
    use tidings_servicebus_server::{Server, ServerConfig};
    let server = Server::start(
        ServerConfig::new("library", "RootManageSharedAccessKey", "library-key"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await
    .expect("start the local Service Bus server");
    let url = format!(
        "servicebus://library?key_name=RootManageSharedAccessKey&key=library-key&endpoint={}",
        server.endpoint()
    );
    library_flow(url).await;
    server.shutdown().await;
}
