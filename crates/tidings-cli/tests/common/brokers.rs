//! Shared by the broker tests: fresh names, a runtime, the binary run where no
//! tidings.toml is, and the local Service Bus server.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use uuid::Uuid;

use super::{run, Run};

/// A fresh name for this run's topics and subscriptions.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// A runtime for the test's own broker work.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `tidings` binary with `args` (run where no tidings.toml is).
pub fn tidings_run(args: &[&str]) -> Run {
    run(&std::env::temp_dir(), args)
}

/// The local Service Bus server, in this process, for every test here.
pub fn servicebus_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let config = tidings_servicebus_server::ServerConfig::new("cli", "RootManageSharedAccessKey", "cli-test-key");
                let server = tidings_servicebus_server::Server::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .await
                    .expect("the local Service Bus server starts");
                tx.send(server.endpoint()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        let endpoint = rx.recv().unwrap();
        format!("servicebus://cli?key_name=RootManageSharedAccessKey&key=cli-test-key&endpoint={endpoint}")
    })
}
