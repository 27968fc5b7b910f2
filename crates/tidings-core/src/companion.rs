//! Companions: background work that starts with a bus and stops with it (the outbox relay
//! is one), and the shutdown signal they watch.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;

/// Background work that runs with a bus and stops with it: `build()` starts it after the
/// consumers, and `shutdown()` signals [`Shutdown`] and waits for it to return. The
/// outbox relay is one.
///
/// A companion holds a clone of the bus, so a bus with companions stays alive until
/// `shutdown()` is called.
///
/// ```
/// use futures::future::BoxFuture;
/// use tidings_core::{Bus, Companion, Shutdown};
///
/// /// Logs once a minute until the bus shuts down.
/// struct Heartbeat;
///
/// impl Companion for Heartbeat {
///     fn run(self: Box<Self>, bus: Bus, shutdown: Shutdown) -> BoxFuture<'static, ()> {
///         Box::pin(async move {
///             loop {
///                 tokio::select! {
///                     _ = shutdown.requested() => break,
///                     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {
///                         println!("{} is alive", bus.service());
///                     }
///                 }
///             }
///         })
///     }
/// }
/// ```
pub trait Companion: Send + 'static {
    /// Run until `shutdown` is requested, then finish what is in flight and return.
    fn run(self: Box<Self>, bus: Bus, shutdown: Shutdown) -> BoxFuture<'static, ()>;
}

/// The signal a [`Companion`] watches: requested when its bus starts shutting down.
#[derive(Debug, Clone)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Shutdown(token)
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once shutdown is requested (at once if it already was).
    pub async fn requested(&self) {
        self.0.cancelled().await
    }
}
