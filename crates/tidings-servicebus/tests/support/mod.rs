//! The local Service Bus server the tests run against: one per test process, on its own
//! thread and runtime, so that every test can reach it (conformance cases, which drop
//! connections, get one each). `TIDINGS_SERVICEBUS_URL` points the tests at another server or a
//! real namespace instead (`servicebus://<namespace>?key_name=..&key=..[&endpoint=..]`).

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tidings_servicebus::ServiceBusConfig;
use tidings_servicebus_server::{ConnectionDropper, Rights, SasPolicy, Server, ServerConfig};

pub const NAMESPACE: &str = "dev";
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
pub const KEY: &str = "dev-key+/=";
/// A policy without the Manage right.
pub const APP_KEY_NAME: &str = "app";
pub const APP_KEY: &str = "app-key";

/// The largest body the in-process server takes: 4 MiB (Service Bus Premium takes up to
/// 100 MB), so that raw messages larger than the decode limit can be injected.
pub const SERVER_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// A development server on its own thread and runtime, reachable from any runtime; it
/// stops when dropped.
pub struct LocalServer {
    pub endpoint: String,
    dropper: ConnectionDropper,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalServer {
    pub fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
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
                        .max_message_size(SERVER_MAX_MESSAGE_SIZE);
                    let server = Server::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                        .await
                        .expect("start the local Service Bus server");
                    tx.send((server.endpoint(), server.connection_dropper()))
                        .expect("report the endpoint");
                    let _ = stopped.await;
                    server.shutdown().await;
                });
            })
            .expect("spawn the server thread");
        let (endpoint, dropper) = rx.recv().expect("the server started");
        LocalServer {
            endpoint,
            dropper,
            stop: Some(stop),
        }
    }

    /// Drop every open connection (the server's fault hook).
    pub fn drop_connections(&self) {
        self.dropper.drop_connections();
    }

    /// The configuration the tests use, against this server.
    pub fn config(&self) -> ServiceBusConfig {
        test_settings(ServiceBusConfig::new(NAMESPACE, KEY_NAME, KEY).endpoint(&self.endpoint))
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The server every test of the process shares, started on first use.
fn in_process() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(LocalServer::start)
}

/// The endpoint of the in-process server, started on first use.
pub fn endpoint() -> String {
    in_process().endpoint.clone()
}

/// Drop every open connection of the in-process server (its fault hook).
pub fn drop_connections() {
    in_process().dropper.drop_connections();
}

/// Raw REST calls to the server, for looking behind the transport and for sending what
/// tidings would not.
pub struct Raw {
    client: reqwest::Client,
}

impl Raw {
    pub fn new() -> Self {
        Raw {
            client: reqwest::Client::new(),
        }
    }

    pub fn token(&self) -> String {
        tidings_servicebus_server::sas::token(
            "https://dev.servicebus.windows.net/",
            KEY_NAME,
            KEY,
            Duration::from_secs(600),
        )
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", endpoint()))
            .header("authorization", self.token());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> String {
        let (status, body) = self.call(reqwest::Method::GET, path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// An `HttpClient` for `azure_messaging_servicebus` against the in-process server: the
/// azure crate hard-codes `https://<namespace>.servicebus.windows.net`, so every request
/// to that URL goes to the server's endpoint instead; azure_core's own reqwest client
/// sends it.
pub fn azure_http_client() -> Arc<dyn azure_core::HttpClient> {
    Arc::new(ToLocalServer {
        inner: reqwest::Client::new(),
        from: format!("https://{NAMESPACE}.servicebus.windows.net/"),
        to: format!("{}/", endpoint()),
    })
}

#[derive(Debug)]
struct ToLocalServer {
    inner: reqwest::Client,
    from: String,
    to: String,
}

#[async_trait::async_trait]
impl azure_core::HttpClient for ToLocalServer {
    async fn execute_request(
        &self,
        request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        let mut request = request.clone();
        if let Some(rest) = request.url().as_str().strip_prefix(&self.from) {
            *request.url_mut() = azure_core::Url::parse(&format!("{}{rest}", self.to))
                .expect("the server's endpoint makes a URL");
        }
        self.inner.execute_request(&request).await
    }
}

/// Whether the tests run against the in-process server (not `TIDINGS_SERVICEBUS_URL`);
/// prints why a test that looks behind the transport skips otherwise.
pub fn in_process_server() -> bool {
    if std::env::var("TIDINGS_SERVICEBUS_URL").is_ok() {
        println!("skipped: this test looks behind the transport at the in-process server");
        return false;
    }
    true
}

/// The configuration the tests use: `TIDINGS_SERVICEBUS_URL` if set, else the in-process
/// server, with short locks so that lost deliveries come back quickly.
pub fn config() -> ServiceBusConfig {
    test_settings(match std::env::var("TIDINGS_SERVICEBUS_URL") {
        Ok(url) => {
            ServiceBusConfig::from_url(&url).expect("TIDINGS_SERVICEBUS_URL is a servicebus:// URL")
        }
        Err(_) => ServiceBusConfig::new(NAMESPACE, KEY_NAME, KEY).endpoint(endpoint()),
    })
}

/// Short locks so that lost deliveries come back quickly.
fn test_settings(config: ServiceBusConfig) -> ServiceBusConfig {
    config
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
