//! What the cases share: a [`Probe`] that records handled events and waits for them, the
//! [`Scene`] of one case (its namespace and buses), and a [`Process`] that can be killed.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tidings_core::{
    transport::Capabilities, Bus, BusBuilder, Context, Envelope, Event, HandlerError, Subscription,
    Topic,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::events::{ConfEvents, Ping, Pong, Unhandled};
use super::TransportFactory;

/// One handler run, as a [`Probe`] recorded it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Who recorded it (which service or instance, or what kind of run).
    pub(crate) label: &'static str,
    /// The event's wire name.
    pub(crate) event: &'static str,
    /// The event's number.
    pub(crate) n: u64,
    /// The ping's key (empty for other events).
    pub(crate) key: String,
    /// The envelope as the handler got it.
    pub(crate) envelope: Envelope,
    /// `cx.attempt()`.
    pub(crate) attempt: u32,
    /// `cx.redelivered()`.
    pub(crate) redelivered: bool,
    /// When the handler ran.
    pub(crate) at: SystemTime,
}

impl Seen {
    /// A record of a run of a handler of `event` number `n`.
    pub(crate) fn of<S>(
        label: &'static str,
        event: &'static str,
        n: u64,
        key: &str,
        cx: &Context<S>,
    ) -> Self {
        Seen {
            label,
            event,
            n,
            key: key.to_string(),
            envelope: cx.envelope().clone(),
            attempt: cx.attempt(),
            redelivered: cx.redelivered(),
            at: SystemTime::now(),
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.event.rsplit('.').next().unwrap_or(self.event);
        write!(f, "{}:{event}#{}", self.label, self.n)?;
        if !self.key.is_empty() {
            write!(f, "@{}", self.key)?;
        }
        if self.attempt > 1 {
            write!(f, "(attempt {})", self.attempt)?;
        }
        Ok(())
    }
}

/// Records handler runs and lets a case wait, with a deadline, until what it expects has
/// been recorded; on timeout it fails with what it saw.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    seen: Mutex<Vec<Seen>>,
    notify: Notify,
}

impl Probe {
    /// An empty probe.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Probe::default())
    }

    /// Record one run and wake the waiters.
    pub(crate) fn record(&self, seen: Seen) {
        self.seen.lock().expect("probe lock").push(seen);
        self.notify.notify_waiters();
    }

    /// Everything recorded so far, in recording order.
    pub(crate) fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().expect("probe lock").clone()
    }

    /// How many runs were recorded.
    pub(crate) fn len(&self) -> usize {
        self.seen.lock().expect("probe lock").len()
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records with `label`.
    pub(crate) fn labelled(&self, label: &str) -> Vec<Seen> {
        self.snapshot()
            .into_iter()
            .filter(|s| s.label == label)
            .collect()
    }

    /// Wait until `check` returns `Some` for the records so far, or panic after `patience`
    /// saying that `what` did not happen and listing what was recorded.
    pub(crate) async fn wait_until<T>(
        &self,
        patience: Duration,
        what: &str,
        mut check: impl FnMut(&[Seen]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + patience;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(done) = check(&self.seen.lock().expect("probe lock")) {
                return done;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(done) = check(&self.seen.lock().expect("probe lock")) {
                    return done;
                }
                panic!(
                    "waited {patience:?} for {what}, in vain; {}",
                    describe(&self.snapshot())
                );
            }
        }
    }

    /// Wait until runs with `label` were recorded for every event number in `ns`; returns
    /// the runs with `label`.
    pub(crate) async fn wait_for_ns(
        &self,
        label: &'static str,
        ns: impl IntoIterator<Item = u64>,
        patience: Duration,
    ) -> Vec<Seen> {
        let wanted: BTreeSet<u64> = ns.into_iter().collect();
        // Checked under the probe's lock on every record: count, clone only once done (a
        // clone of thousands of envelopes per record would hold up the handlers).
        let mut missing = wanted.clone();
        let mut checked = 0;
        self.wait_until(
            patience,
            &format!("`{label}` to handle events {}", ranges(&wanted)),
            |seen| {
                for s in &seen[checked..] {
                    if s.label == label {
                        missing.remove(&s.n);
                    }
                }
                checked = seen.len();
                missing
                    .is_empty()
                    .then(|| seen.iter().filter(|s| s.label == label).cloned().collect())
            },
        )
        .await
    }
}

/// A short description of recorded runs for failure messages.
pub(crate) fn describe(seen: &[Seen]) -> String {
    const SHOWN: usize = 60;
    let mut out = format!("{} runs recorded", seen.len());
    if seen.is_empty() {
        return out;
    }
    out.push_str(": ");
    for (i, s) in seen.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{s}");
    }
    if seen.len() > SHOWN {
        let _ = write!(out, ", … ({} more)", seen.len() - SHOWN);
    }
    out
}

/// `0..=9, 12, 14..=15` for a set of numbers.
pub(crate) fn ranges(ns: &BTreeSet<u64>) -> String {
    let mut out = Vec::new();
    let mut iter = ns.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
    }
    if out.is_empty() {
        "(none)".into()
    } else {
        out.join(", ")
    }
}

/// Subscription state that records every handled event into a probe under a label.
#[derive(Debug, Clone)]
pub(crate) struct Tap {
    /// Where runs are recorded.
    pub(crate) probe: Arc<Probe>,
    /// The label of the records.
    pub(crate) label: &'static str,
}

impl Tap {
    /// A tap recording into `probe` as `label`.
    pub(crate) fn new(probe: &Arc<Probe>, label: &'static str) -> Self {
        Tap {
            probe: probe.clone(),
            label,
        }
    }

    /// A subscription to the suite's topic that records pings.
    pub(crate) fn pings(probe: &Arc<Probe>, label: &'static str) -> Subscription<ConfEvents, Tap> {
        Subscription::to::<ConfEvents>()
            .with_state(Tap::new(probe, label))
            .on(tap_ping)
    }

    /// A subscription to the suite's topic that records every event of it.
    pub(crate) fn everything(
        probe: &Arc<Probe>,
        label: &'static str,
    ) -> Subscription<ConfEvents, Tap> {
        Tap::pings(probe, label).on(tap_pong).on(tap_unhandled)
    }
}

/// Records a [`Ping`].
pub(crate) async fn tap_ping(e: Ping, cx: Context<Tap>) -> Result<(), HandlerError> {
    let tap = cx.state();
    tap.probe
        .record(Seen::of(tap.label, Ping::NAME, e.n, &e.key, &cx));
    Ok(())
}

/// Records a [`Pong`].
pub(crate) async fn tap_pong(e: Pong, cx: Context<Tap>) -> Result<(), HandlerError> {
    let tap = cx.state();
    tap.probe
        .record(Seen::of(tap.label, Pong::NAME, e.n, "", &cx));
    Ok(())
}

/// Records an [`Unhandled`].
pub(crate) async fn tap_unhandled(e: Unhandled, cx: Context<Tap>) -> Result<(), HandlerError> {
    let tap = cx.state();
    tap.probe
        .record(Seen::of(tap.label, Unhandled::NAME, e.n, "", &cx));
    Ok(())
}

/// One case's world: the factory, a fresh namespace, and helpers to build its buses.
#[derive(Clone)]
pub(crate) struct Scene<'a> {
    /// Where transports come from.
    pub(crate) factory: &'a dyn TransportFactory,
    /// The namespace every bus of the case uses (`conf-<12 hex digits>`).
    pub(crate) namespace: String,
    /// The case's name, for messages.
    pub(crate) case: &'static str,
}

impl fmt::Debug for Scene<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scene")
            .field("transport", &self.factory.name())
            .field("namespace", &self.namespace)
            .field("case", &self.case)
            .finish()
    }
}

impl<'a> Scene<'a> {
    /// A scene with a fresh namespace; prints which, to find the case's queues on a broker.
    pub(crate) fn new(factory: &'a dyn TransportFactory, case: &'static str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let namespace = format!("conf-{}", &id[..12]);
        println!(
            "conformance case {case} on {}: namespace {namespace}",
            factory.name()
        );
        Scene {
            factory,
            namespace,
            case,
        }
    }

    /// A bus builder for `service` in this scene's namespace, with its own `connect()`.
    pub(crate) fn builder(&self, service: &str) -> BusBuilder {
        Bus::builder(service)
            .transport_from(self.factory.connect())
            .namespace(self.namespace.clone())
    }

    /// Build a bus, failing the case with the error if it cannot be built.
    pub(crate) async fn build(&self, builder: BusBuilder, what: &str) -> Bus {
        builder
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: building {what}: {e}", self.case))
    }

    /// A bus of service `alpha` that publishes the suite's topic and subscribes nothing.
    pub(crate) async fn publisher(&self) -> Bus {
        self.build(
            self.builder("alpha").publishes::<ConfEvents>(),
            "the publisher `alpha`",
        )
        .await
    }

    /// A bus of `service` whose subscription records the pings it handles into `probe`
    /// under the service's name (the subscriber most cases need).
    pub(crate) async fn subscriber(&self, service: &'static str, probe: &Arc<Probe>) -> Bus {
        self.build(
            self.builder(service).subscribe(Tap::pings(probe, service)),
            &format!("the subscriber `{service}`"),
        )
        .await
    }

    /// Two instances of service `beta` competing for its one subscription, whose pings
    /// are recorded into `probe` as `beta-1` and `beta-2`. Each handler does a little
    /// work, so one instance cannot drain the queue alone at once.
    pub(crate) async fn competing_pair(&self, probe: &Arc<Probe>) -> (Bus, Bus) {
        let slow = |label: &'static str| {
            Subscription::to::<ConfEvents>()
                .with_state(Tap::new(probe, label))
                .on(|e: Ping, cx: Context<Tap>| async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    cx.state().probe.record(Seen::of(
                        cx.state().label,
                        Ping::NAME,
                        e.n,
                        &e.key,
                        &cx,
                    ));
                    Ok::<(), HandlerError>(())
                })
        };
        let one = self
            .build(
                self.builder("beta").subscribe(slow("beta-1")),
                "instance 1 of `beta`",
            )
            .await;
        let two = self
            .build(
                self.builder("beta").subscribe(slow("beta-2")),
                "instance 2 of `beta`",
            )
            .await;
        (one, two)
    }

    /// The broker name of the suite's topic in this scene.
    pub(crate) fn topic(&self) -> String {
        format!("{}.{}", self.namespace, ConfEvents::NAME)
    }

    /// The broker name of `service`'s default subscription in this scene.
    pub(crate) fn subscription(&self, service: &str) -> String {
        format!("{}.{service}", self.namespace)
    }

    /// The transport's capabilities (from one `connect()`).
    pub(crate) async fn capabilities(&self) -> Capabilities {
        self.factory
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{}: connecting to read capabilities: {e}", self.case))
            .capabilities_dyn()
    }

    /// Whether the case may run: prints `skipped: <case> needs <capability>` and returns
    /// false when the transport does not declare it.
    pub(crate) async fn needs(
        &self,
        capability: &str,
        has: impl Fn(&Capabilities) -> bool,
    ) -> bool {
        if has(&self.capabilities().await) {
            true
        } else {
            println!(
                "skipped: {} needs {capability} (not declared by {})",
                self.case,
                self.factory.name()
            );
            false
        }
    }

    /// How long to wait for what must happen.
    pub(crate) fn patience(&self) -> Duration {
        self.factory.patience()
    }

    /// Watch for what must not happen.
    pub(crate) async fn quiet(&self) {
        tokio::time::sleep(self.factory.quiet()).await;
    }

    /// Poll `probe` (an async check) until it returns `Some`, or fail after the patience
    /// with `what` and the last value seen.
    pub(crate) async fn poll<T, D: fmt::Debug, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, D>>,
    {
        let deadline = Instant::now() + self.patience();
        let mut pause = Duration::from_millis(10);
        loop {
            let last = match probe().await {
                Ok(done) => return done,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{}: waited {:?} for {what}, in vain; last seen: {last:?}",
                    self.case,
                    self.patience()
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// Something that fails a case with a message when it is an error.
pub(crate) trait Must<T> {
    /// The value, or a panic saying what failed.
    fn must(self, what: &str) -> T;
}

impl<T> Must<T> for tidings_core::Result<T> {
    fn must(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// A stand-in for a separate process: its own tokio runtime, which [`kill`](Self::kill)
/// drops with everything running on it (consumer loops, handlers in flight, connections),
/// as a crash would. Work started with [`spawn`](Self::spawn) runs there.
#[derive(Debug)]
pub(crate) struct Process {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Process {
    /// A new "process" with one worker thread.
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building the runtime of a simulated process");
        Process {
            runtime: Some(runtime),
        }
    }

    /// Run `work` inside the process.
    pub(crate) fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.as_ref().expect("process alive").spawn(work)
    }

    /// Kill the process: every task on it is dropped where it stands, nothing is settled.
    pub(crate) async fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
                .await
                .expect("dropping the simulated process");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
