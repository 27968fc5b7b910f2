#![doc = include_str!("../README.md")]

mod atom;
mod broker;
mod filter;
mod http;
pub mod sas;
mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use sas::{Rights, SasPolicy};

/// How the development server behaves: the namespace it pretends to be, its shared access
/// policies, and the defaults for new subscriptions.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    namespace: String,
    policies: Vec<SasPolicy>,
    lock_duration: Duration,
    max_delivery_count: u32,
    max_message_size: usize,
}

impl ServerConfig {
    /// A namespace (`dev` stands for `dev.servicebus.windows.net`) with one policy that has
    /// every right, like `RootManageSharedAccessKey`.
    pub fn new(
        namespace: impl Into<String>,
        key_name: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        ServerConfig {
            namespace: namespace.into(),
            policies: vec![SasPolicy::new(key_name, key, Rights::ALL)],
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            max_message_size: 256 * 1024,
        }
    }

    /// Add another shared access policy (for example one without the Manage right).
    pub fn policy(mut self, policy: SasPolicy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The lock duration of subscriptions created without one (default 60 s, as Service
    /// Bus). Service Bus itself accepts 5 s to 5 min; this server takes any positive value,
    /// so tests can watch locks expire quickly.
    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.lock_duration = d;
        self
    }

    /// The MaxDeliveryCount of subscriptions created without one (default 10, as Service
    /// Bus).
    pub fn max_delivery_count(mut self, n: u32) -> Self {
        self.max_delivery_count = n.max(1);
        self
    }

    /// The largest message body accepted (default 256 KiB, the Standard tier's limit).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The namespace name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// The development server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Listen on `addr` (use port 0 for an ephemeral port) and serve until the returned
    /// handle is shut down or dropped.
    pub async fn start(config: ServerConfig, addr: SocketAddr) -> std::io::Result<RunningServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(http::Shared {
            namespace: config.namespace.clone(),
            policies: config.policies.clone(),
            broker: broker::Broker::new(broker::Limits {
                lock_duration: config.lock_duration,
                max_delivery_count: config.max_delivery_count,
                max_message_size: config.max_message_size,
            }),
        });
        let (stop, stopped) = watch::channel(false);
        let (dropper, dropped) = watch::channel(0u64);
        let task = tokio::spawn(serve(listener, shared.clone(), stopped, dropped));
        tracing::info!(%addr, namespace = %config.namespace, "Service Bus development server listening");
        Ok(RunningServer {
            addr,
            namespace: config.namespace,
            shared,
            stop,
            dropper: ConnectionDropper(Arc::new(dropper)),
            task: Some(task),
        })
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<http::Shared>,
    mut stopped: watch::Receiver<bool>,
    dropped: watch::Receiver<u64>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let mut stopped = stopped.clone();
        let mut dropped = dropped.clone();
        dropped.mark_unchanged();
        tokio::spawn(async move {
            let service = service_fn(move |req| http::handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection ended") },
                _ = stopped.changed() => {}
                // Dropped with whatever request it was serving: the socket closes.
                _ = dropped.changed() => tracing::debug!("connection dropped on request"),
            }
        });
    }
}

/// A running development server; dropping it stops it.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    namespace: String,
    shared: Arc<http::Shared>,
    stop: watch::Sender<bool>,
    dropper: ConnectionDropper,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Drops every open connection of a running server, for tests of a client's recovery; see
/// [`RunningServer::connection_dropper`]. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct ConnectionDropper(Arc<watch::Sender<u64>>);

impl ConnectionDropper {
    /// Close every connection open now, in the middle of whatever request it serves (a
    /// long-polling receive, a send), as a network fault or a restarting server would:
    /// clients see their requests fail and must connect again. The server keeps listening
    /// and its entities and messages stay as they are (a message locked by a receive whose
    /// answer was lost comes back when its lock expires).
    pub fn drop_connections(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:<port>`: what clients put in place of
    /// `https://<namespace>.servicebus.windows.net`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The namespace it pretends to be.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Active and dead-lettered message counts of a subscription (also in the management
    /// API's `CountDetails`), `None` if it does not exist.
    pub fn message_counts(&self, topic: &str, subscription: &str) -> Option<(usize, usize)> {
        let topics = self.shared.broker.lock();
        let s = topics
            .get(&topic.to_ascii_lowercase())?
            .subscriptions
            .get(&subscription.to_ascii_lowercase())?;
        Some((s.active.len(), s.dead_letters.len()))
    }

    /// A handle that drops every open connection on demand (a fault hook for tests).
    pub fn connection_dropper(&self) -> ConnectionDropper {
        self.dropper.clone()
    }

    /// Stop accepting and close the open connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
