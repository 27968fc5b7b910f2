//! `tidings tail <topic>`: print a topic's events as they arrive, through a temporary
//! subscription of its own (`tidings-tail-<random>`) that takes nothing from any other
//! and is removed on exit (Ctrl-C, `--count`, `--timeout`).

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tidings_core::transport::{DynTransport, SubscriptionSpec, Topology, Watched};

use crate::broker::{self, BrokerArgs};
use crate::workspace::Workspace;
use crate::Failure;

/// The options of `tidings tail`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Tail {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The topic's broker name (with a bus namespace, `<namespace>.<topic>`).
    topic: String,
    /// A wire name to show (repeatable); by default every event the catalogs know on the
    /// topic (RabbitMQ and Service Bus deliver only the events a subscription names).
    #[arg(long = "event", value_name = "WIRE-NAME")]
    events: Vec<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    count: Option<usize>,
    /// Stop after this long (`10s`, `2m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
}

/// Watch the topic and print one JSON line per event; removes its subscription on exit.
pub(crate) fn run(ws: Option<&Workspace>, args: Tail) -> Result<String, Failure> {
    let events = events(ws, &args)?;
    let transport = broker::watching_transport(&args.broker.transport)?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let spec = SubscriptionSpec::new(
        "tidings-tail",
        format!("tidings-tail-{}", &suffix[..8]),
        &args.topic,
        events,
    );
    let mut topology = Topology::new("tidings-tail");
    topology.subscriptions.push(spec.clone());
    broker::runtime()?.block_on(async move {
        // Listen for Ctrl-C before anything is created, so that it always ends in cleanup.
        let mut interrupted = Interrupt::listen()?;
        transport
            .provision_dyn(&topology)
            .await
            .map_err(broker::failed(format_args!(
                "creating a temporary subscription to topic `{}`",
                args.topic
            )))?;
        let watched = watch(&*transport, &spec, &args, &mut interrupted).await;
        let removed = transport.remove_subscription_dyn(&spec).await;
        let seen = watched?;
        removed.map_err(broker::failed(format_args!(
            "removing the temporary subscription `{}` (delete it with the broker's tools)",
            spec.name
        )))?;
        if let Some(count) = args.count {
            if seen < count {
                return Err(Failure(format!(
                    "saw {seen} of {count} events on `{}` before the timeout",
                    args.topic
                )));
            }
        }
        Ok(String::new())
    })
}

/// Print what arrives until the count, the timeout or Ctrl-C; how many events were shown.
async fn watch(
    transport: &dyn DynTransport,
    spec: &SubscriptionSpec,
    args: &Tail,
    interrupted: &mut Interrupt,
) -> Result<usize, Failure> {
    let mut stream = transport
        .watch_dyn(spec)
        .await
        .map_err(broker::failed(format_args!(
            "watching topic `{}`",
            args.topic
        )))?;
    eprintln!(
        "tidings: watching topic `{}` through the temporary subscription `{}` (removed on exit)",
        args.topic, spec.name
    );
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let until = async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let mut seen = 0;
    let mut failures = 0u32;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = &mut until => break,
            _ = interrupted.recv() => break,
        };
        match next {
            None => break,
            Some(Ok(watched)) => {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{}", line(&watched));
                let _ = out.flush();
                seen += 1;
                failures = 0;
            }
            Some(Err(e)) => {
                failures += 1;
                if failures >= 5 {
                    return Err(Failure(format!("watching topic `{}`: {e}", args.topic)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(seen)
}

/// One event as a JSON line: its attributes, its payload decoded, and why it is not an
/// envelope when it is not one.
fn line(watched: &Watched) -> String {
    let envelope = &watched.envelope;
    let mut value = json!({
        "attributes": broker::attributes(envelope),
        "payload": broker::payload(envelope),
    });
    if let Some(reason) = &watched.undecodable {
        value["undecodable"] = json!(reason);
    }
    value.to_string()
}

/// The wire names to subscribe: `--event`, else those the catalogs know on the topic.
fn events(ws: Option<&Workspace>, args: &Tail) -> Result<Vec<String>, Failure> {
    if !args.events.is_empty() {
        return Ok(args.events.clone());
    }
    let mut names: Vec<String> = Vec::new();
    for catalog in ws.map(|w| w.catalogs.as_slice()).unwrap_or_default() {
        for topic in catalog
            .publishes
            .iter()
            .filter(|t| t.broker_topic == args.topic || t.topic == args.topic)
        {
            names.extend(topic.events.iter().map(|e| e.name.clone()));
        }
        for sub in catalog
            .subscriptions
            .iter()
            .filter(|s| s.broker_topic == args.topic || s.topic == args.topic)
        {
            names.extend(sub.handles.iter().map(|e| e.name.clone()));
        }
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(format!(
            "no events known on topic `{}`: pass --event <wire-name> (repeatable), or --catalog <dir> with the catalog of a service that publishes it",
            args.topic
        )
        .into());
    }
    Ok(names)
}

/// Ctrl-C (SIGINT), listened for from creation on.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Start listening.
    fn listen() -> Result<Self, Failure> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| Failure(format!("cannot listen for Ctrl-C: {e}")))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    /// The next Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
