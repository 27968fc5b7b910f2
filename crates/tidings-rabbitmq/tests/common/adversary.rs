//! The conformance suite's [`Adversary`] on RabbitMQ, with the broker's own tools:
//! raw messages published with lapin (bypassing tidings), and connections closed by the
//! broker (`rabbitmqctl close_connection` through `TIDINGS_RABBITMQ_CTL`).
//!
//! A raw message's `key` is ignored: RabbitMQ has no record key (a queue keeps publish
//! order). Every transport handed out for one case carries the same unique connection name
//! ([`LapinAdversary::config`]), so dropping connections closes that case's connections
//! only, not those of the cases running in parallel in the same process.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tidings_core::{
    transport::{attrs, DynTransport},
    Error, ErrorKind, Result,
};
use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
use tidings_testing::conformance::{Adversary, RawMessage};

/// Raw injection with lapin and connection drops with `rabbitmqctl`, for the transports
/// of one conformance case.
#[derive(Debug, Clone)]
pub struct LapinAdversary {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    /// The connection name of every transport of the case.
    connection_name: String,
    /// `TIDINGS_RABBITMQ_CTL` (e.g. `scripts/services/rabbitmq.sh`, run as `<ctl> ctl ...`).
    ctl: Option<String>,
}

impl LapinAdversary {
    /// An adversary for the broker at `url`, with a connection name of its own.
    pub fn new(url: &str) -> Self {
        let connection_name = format!(
            "conformance-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        LapinAdversary {
            inner: Arc::new(Inner {
                url: url.to_string(),
                connection_name,
                ctl: std::env::var("TIDINGS_RABBITMQ_CTL")
                    .ok()
                    .filter(|c| !c.is_empty()),
            }),
        }
    }

    /// The configuration every transport of the case must use: the case's connection name.
    pub fn config(&self) -> RabbitMqConfig {
        RabbitMqConfig::new(&self.inner.url).connection_name(&self.inner.connection_name)
    }

    /// The connection name of the case's transports.
    pub fn connection_name(&self) -> &str {
        &self.inner.connection_name
    }
}

fn backend(
    what: impl std::fmt::Display,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::new(ErrorKind::Backend, format!("adversary: {what}")).with_source(e)
}

impl Inner {
    /// Run `rabbitmqctl args` against the test node and return its standard output.
    async fn ctl(&self, args: &[&str]) -> Result<String> {
        let Some(ctl) = &self.ctl else {
            return Err(Error::config(
                "adversary: TIDINGS_RABBITMQ_CTL is not set (scripts/test sets it); the RabbitMQ adversary needs rabbitmqctl",
            ));
        };
        let mut words = ctl.split_whitespace();
        let program = words.next().unwrap_or_default();
        let out = tokio::process::Command::new(program)
            .args(words)
            .arg("ctl")
            .args(args)
            .output()
            .await
            .map_err(|e| backend(format_args!("running {ctl}"), e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "adversary: `{ctl} ctl {}` failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The queues bound to the exchange `topic`.
    async fn queues_bound_to(&self, topic: &str) -> Result<Vec<String>> {
        let listing = self
            .ctl(&[
                "list_bindings",
                "-s",
                "source_name",
                "destination_kind",
                "destination_name",
            ])
            .await?;
        let mut queues: Vec<String> = Vec::new();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if let [source, "queue", queue] = fields[..] {
                if source == topic && !queues.iter().any(|q| q == queue) {
                    queues.push(queue.to_string());
                }
            }
        }
        Ok(queues)
    }

    async fn inject(&self, topic: &str, message: RawMessage) -> Result<()> {
        let ce_type = message
            .headers
            .iter()
            .find(|(n, _)| n == attrs::TYPE)
            .map(|(_, v)| v.clone());
        // The routing key is the wire name, as tidings publishes. A message without a type
        // has no key any subscription binds: it goes straight into each queue bound to the
        // topic, as a producer's message that a subscription's binding caught would.
        let targets: Vec<(String, String)> = match &ce_type {
            Some(t) => vec![(topic.to_string(), t.clone())],
            None => self
                .queues_bound_to(topic)
                .await?
                .into_iter()
                .map(|q| (String::new(), q))
                .collect(),
        };
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let connection = Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name(LongString::from(format!(
                "{}-injector",
                self.connection_name
            ))),
        )
        .await
        .map_err(|e| backend("connecting with lapin", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| backend("opening a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| backend("enabling publisher confirms", e))?;
        for (exchange, routing_key) in targets {
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        // Straight into a queue: that queue must exist.
                        mandatory: exchange.is_empty(),
                        immediate: false,
                    },
                    &message.payload,
                    properties.clone(),
                )
                .await
                .map_err(|e| backend(format_args!("publishing to `{topic}`"), e))?
                .await
                .map_err(|e| backend(format_args!("awaiting the confirm from `{topic}`"), e))?;
            match confirm {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                other => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!("adversary: the broker did not take the message for `{routing_key}`: {other:?}"),
                    ))
                }
            }
        }
        let _ = connection.close(200, "injected".into()).await;
        Ok(())
    }

    /// Close, from the broker's side, every connection named for this case.
    async fn drop_connections(&self) -> Result<()> {
        let listing = self
            .ctl(&["list_connections", "-s", "pid", "client_properties"])
            .await?;
        let ours = format!("{{\"connection_name\",\"{}\"}}", self.connection_name);
        let pids: Vec<&str> = listing
            .lines()
            .filter(|line| line.contains(&ours))
            .filter_map(|line| line.split('\t').next())
            .collect();
        if pids.is_empty() {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "adversary: no connection named {} to drop; connections:\n{listing}",
                    self.connection_name
                ),
            ));
        }
        // A connection may close on its own meanwhile (a bus shut down): one closed by the
        // broker is enough, none is an error.
        let mut last = None;
        let mut closed = 0;
        for pid in pids {
            match self
                .ctl(&["close_connection", pid, "conformance fault"])
                .await
            {
                Ok(_) => closed += 1,
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if closed == 0 => Err(e),
            _ => Ok(()),
        }
    }
}

impl Adversary for LapinAdversary {
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        Box::pin(async move { inner.inject(&topic, message).await })
    }

    fn drop_connections(&self) -> BoxFuture<'static, Result<()>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.drop_connections().await })
    }

    fn unreachable(
        &self,
        address: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<dyn DynTransport>> {
        let config = RabbitMqConfig::new(format!("amqp://guest:guest@{address}/%2f"))
            .connect_timeout(connect_timeout);
        Ok(Arc::new(RabbitMq::new(config)))
    }
}
