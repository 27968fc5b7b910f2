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
/// Clones share the signal; [`Shutdown::new`] and [`Shutdown::request`] let code that
/// runs the same work outside a bus (a test driving a companion) stop it the same way.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal that nothing has requested yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    pub(crate) fn from_token(token: CancellationToken) -> Self {
        Shutdown(token)
    }

    /// Request shutdown: every clone's [`requested`](Self::requested) completes.
    pub fn request(&self) {
        self.0.cancel();
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

#[cfg(test)]
mod tests {
    use super::Shutdown;

    #[tokio::test]
    async fn a_request_reaches_every_clone() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        assert!(!watcher.is_requested());
        let waiting = tokio::spawn(async move { watcher.requested().await });
        shutdown.request();
        waiting.await.unwrap();
        assert!(shutdown.clone().is_requested());
    }
}
