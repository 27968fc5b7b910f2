//! The local Service Bus server the tests run against: one per test process, on its own
//! thread and runtime, so that every test (and every conformance case, each on its own
//! runtime) can reach it. `TIDINGS_SERVICEBUS_URL` points the tests at another server or a
//! real namespace instead (`servicebus://<namespace>?key_name=..&key=..[&endpoint=..]`).

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tidings_servicebus::ServiceBusConfig;
use tidings_servicebus_server::{Rights, SasPolicy, Server, ServerConfig};

pub const NAMESPACE: &str = "dev";
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
pub const KEY: &str = "dev-key+/=";
/// A policy without the Manage right.
pub const APP_KEY_NAME: &str = "app";
pub const APP_KEY: &str = "app-key";

/// The endpoint of the in-process server, started on first use.
pub fn endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("servicebus-dev-server".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let config = ServerConfig::new(NAMESPACE, KEY_NAME, KEY)
                            .policy(SasPolicy::new(APP_KEY_NAME, APP_KEY, Rights::SEND_LISTEN))
                            .max_message_size(256 * 1024);
                        let server =
                            Server::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                                .await
                                .expect("start the local Service Bus server");
                        tx.send(server.endpoint()).expect("report the endpoint");
                        std::future::pending::<()>().await;
                        drop(server);
                    });
                })
                .expect("spawn the server thread");
            rx.recv().expect("the server started")
        })
        .clone()
}

/// The configuration the tests use: `TIDINGS_SERVICEBUS_URL` if set, else the in-process
/// server, with short locks so that lost deliveries come back quickly.
pub fn config() -> ServiceBusConfig {
    match std::env::var("TIDINGS_SERVICEBUS_URL") {
        Ok(url) => {
            ServiceBusConfig::from_url(&url).expect("TIDINGS_SERVICEBUS_URL is a servicebus:// URL")
        }
        Err(_) => ServiceBusConfig::new(NAMESPACE, KEY_NAME, KEY).endpoint(endpoint()),
    }
    .lock_duration(Duration::from_secs(5))
    .receive_wait(Duration::from_secs(1))
}

/// A fresh name prefix, so tests on one server do not meet.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}
