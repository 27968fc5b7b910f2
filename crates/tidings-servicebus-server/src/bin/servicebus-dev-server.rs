//! Runs the Service Bus development server on a loopback port.
//!
//! ```text
//! cargo run -p tidings-servicebus-server --bin servicebus-dev-server -- \
//!     --port 5300 --namespace dev --key-name RootManageSharedAccessKey --key <key>
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tidings_servicebus_server::{Server, ServerConfig};

const USAGE: &str = "usage: servicebus-dev-server [--port 5300] [--namespace dev] [--key-name RootManageSharedAccessKey] --key <key> [--lock-duration-secs 60] [--max-delivery-count 10]

A DEVELOPMENT server of the Azure Service Bus REST protocol on 127.0.0.1. It keeps
everything in memory and is not Service Bus: use it for local development and tests.
Point tidings at it with
  servicebus://<namespace>?key_name=<key-name>&key=<key>&endpoint=http://127.0.0.1:<port>";

fn main() {
    let mut port = 5300u16;
    let mut namespace = "dev".to_string();
    let mut key_name = "RootManageSharedAccessKey".to_string();
    let mut key = std::env::var("SERVICEBUS_DEV_KEY").ok();
    let mut lock = 60u64;
    let mut max_delivery = 10u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value\n\n{USAGE}");
                std::process::exit(2)
            })
        };
        let bad = |name: &str| -> ! {
            eprintln!("{name} has an invalid value\n\n{USAGE}");
            std::process::exit(2)
        };
        match arg.as_str() {
            "--port" => port = value("--port").parse().unwrap_or_else(|_| bad("--port")),
            "--namespace" => namespace = value("--namespace"),
            "--key-name" => key_name = value("--key-name"),
            "--key" => key = Some(value("--key")),
            "--lock-duration-secs" => {
                lock = value("--lock-duration-secs")
                    .parse()
                    .unwrap_or_else(|_| bad("--lock-duration-secs"))
            }
            "--max-delivery-count" => {
                max_delivery = value("--max-delivery-count")
                    .parse()
                    .unwrap_or_else(|_| bad("--max-delivery-count"))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let Some(key) = key else {
        eprintln!("--key is required (or set SERVICEBUS_DEV_KEY)\n\n{USAGE}");
        std::process::exit(2)
    };
    let config = ServerConfig::new(namespace.clone(), key_name.clone(), key)
        .lock_duration(Duration::from_secs(lock.max(1)))
        .max_delivery_count(max_delivery);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let server = match Server::start(config, addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1)
            }
        };
        println!(
            "Service Bus development server for namespace {namespace:?} on {} (policy {key_name:?}); Ctrl-C stops it",
            server.endpoint()
        );
        let _ = tokio::signal::ctrl_c().await;
        server.shutdown().await;
    });
}
