//! Configuration of the RabbitMQ transport: broker URL (parsed with
//! [`ParsedUrl`]), TLS, queue type, publisher-confirm window, reconnect backoff and the
//! publish and connect deadlines.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};
use tidings_core::transport::{redact_url, ParsedUrl};
use tidings_core::{Error, ErrorKind, Result, Secret};

/// The type of the work and dead-letter queues the transport declares.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Classic durable queues (the default): fast, single node.
    #[default]
    Classic,
    /// Quorum queues: replicated (Raft) and safe across node failures, and they count
    /// redeliveries (`x-delivery-count`), which tidings adds to the delivery attempt.
    Quorum,
}

impl QueueType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// TLS settings for `amqps://` URLs: a custom CA and a client certificate for mutual TLS.
///
/// Without any setting, `amqps://` verifies the broker against the system's root
/// certificates. The private key is a [`Secret`]: it never appears in `Debug` output.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM certificates trusted in addition to the system roots.
    pub(crate) ca_pem: Option<String>,
    /// PEM client certificate chain and PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) client: Option<(Vec<u8>, Secret)>,
}

impl TlsConfig {
    /// No custom CA, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the PEM certificate(s) in `pem` (a private CA), in addition to the system
    /// roots.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trust the PEM certificate(s) in the file at `path`.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_pem(path.as_ref(), "CA certificate")?;
        Ok(self.ca_pem(pem))
    }

    /// Present a client certificate (PEM chain) and its private key (PEM, PKCS#8, PKCS#1
    /// or SEC1) for mutual TLS. The key is kept as a [`Secret`].
    pub fn client_cert_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Secret>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Present the client certificate and key from PEM files for mutual TLS.
    pub fn client_cert_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let cert_pem = read_file(cert.as_ref(), "client certificate")?;
        let key_pem = read_pem(key.as_ref(), "client key")?;
        Ok(self.client_cert_pem(cert_pem, key_pem))
    }

    pub(crate) fn to_lapin(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: self
                .client
                .as_ref()
                .map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.expose().as_bytes().to_vec(),
                }),
            cert_chain: self.ca_pem.clone(),
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::config(format!("cannot read the {what} file {}", path.display())).with_source(e)
    })
}

/// The PEM text of the file at `path`; never shows its content.
fn read_pem(path: &Path, what: &str) -> Result<String> {
    String::from_utf8(read_file(path, what)?).map_err(|_| {
        Error::config(format!(
            "the {what} file {} is not PEM text",
            path.display()
        ))
    })
}

/// How the transport reconnects after the connection dropped: exponential backoff with
/// jitter between `min_delay` and `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconnect {
    /// The first delay (default 100 ms).
    pub min_delay: Duration,
    /// The longest delay (default 5 s).
    pub max_delay: Duration,
    /// The factor delays grow by (default 2).
    pub factor: f32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            factor: 2.0,
        }
    }
}

impl Reconnect {
    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_factor(self.factor.max(1.0))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Configuration of [`RabbitMq`](crate::RabbitMq).
///
/// ```
/// use std::time::Duration;
/// use tidings_rabbitmq::{QueueType, RabbitMqConfig};
/// let config = RabbitMqConfig::new("amqp://app:s3cret@rabbit.internal:5672/%2f")
///     .connection_name("catalog")
///     .queue_type(QueueType::Quorum)
///     .publish_timeout(Duration::from_secs(10));
/// // The password never shows.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RabbitMqConfig {
    pub(crate) url: String,
    pub(crate) connection_name: Option<String>,
    pub(crate) max_in_flight: usize,
    pub(crate) queue_type: QueueType,
    pub(crate) single_active_consumer: bool,
    pub(crate) tls: TlsConfig,
    pub(crate) reconnect: Reconnect,
    pub(crate) publish_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_size: usize,
}

impl RabbitMqConfig {
    /// Configuration for the broker at `url` (`amqp://user:pass@host:5672/vhost` or
    /// `amqps://...`; the vhost `/` is written `%2f`), with the defaults:
    /// classic queues, 1024 publisher confirms in flight, a 30 s publish deadline, a 10 s
    /// connect timeout, reconnect backoff 100 ms to 5 s.
    ///
    /// The prefetch (`basic.qos`) is not set here: each subscription sets its own with
    /// `Subscription::prefetch` (default 100).
    ///
    /// URL options (the query string): `connect_timeout=<duration>` (humantime: `10s`,
    /// `500ms`; as [`connect_timeout`](Self::connect_timeout)), and lapin's `heartbeat`
    /// (seconds), `frame_max`, `channel_max`, `connection_timeout` (TCP connect, ms) and
    /// `auth_mechanism`, which lapin reads from the URL itself. Any other option is
    /// refused with [`ErrorKind::Config`], listing the known ones, when the URL is checked
    /// ([`RabbitMq::from_url`](crate::RabbitMq::from_url),
    /// [`RabbitMq::connect`](crate::RabbitMq::connect), or `build()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidings_core::transport::Transport;
    /// use tidings_rabbitmq::{RabbitMq, RabbitMqConfig};
    /// let config = RabbitMqConfig::new("amqp://127.0.0.1/%2f?connect_timeout=2s&heartbeat=10");
    /// let transport = RabbitMq::new(config);
    /// assert_eq!(transport.capabilities().connect_timeout, Some(Duration::from_secs(2)));
    /// let err = RabbitMq::from_url("amqp://127.0.0.1/%2f?heartbaet=10").unwrap_err();
    /// assert!(err.to_string().contains("unknown RabbitMQ URL option `heartbaet`"));
    /// assert!(err.to_string().contains("heartbeat"));
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        // An invalid value is reported when the URL is checked; until then the default.
        let connect_timeout = url_options(&url)
            .ok()
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        RabbitMqConfig {
            url,
            connection_name: None,
            max_in_flight: 1024,
            queue_type: QueueType::Classic,
            single_active_consumer: false,
            tls: TlsConfig::default(),
            reconnect: Reconnect::default(),
            publish_timeout: Duration::from_secs(30),
            connect_timeout,
            max_message_size: 128 * 1024 * 1024,
        }
    }

    /// The name the connection shows in the RabbitMQ management UI (default `tidings`).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// How many published messages may wait for their broker confirm at once, across all
    /// publishes of this transport (default 1024). A batch larger than this is sent as a
    /// sliding window.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// The type of the work and dead-letter queues (default [`QueueType::Classic`]).
    /// Changing it for existing queues fails at `build()`: RabbitMQ cannot convert a queue.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Declare work queues with `x-single-active-consumer`, so that of several competing
    /// instances only one receives at a time: events are then handled in publish order,
    /// and the transport reports the `ordering_key` capability (and no longer
    /// `competing_consumers`: the other instances stand by). Off by default.
    pub fn single_active_consumer(mut self, on: bool) -> Self {
        self.single_active_consumer = on;
        self
    }

    /// TLS settings for `amqps://` (custom CA, client certificate).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The reconnect backoff.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long a publish may wait for the broker (reconnecting if needed, then for the
    /// confirms) before it fails with [`ErrorKind::Unavailable`] or
    /// [`ErrorKind::Timeout`] (default 30 s). `provision` uses it too.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 10 s, or the URL's
    /// `connect_timeout` option). The first connection of a transport is one attempt: a
    /// broker that refuses it or does not answer within this time is
    /// [`ErrorKind::Unavailable`] (retryable) naming the address, so `build()` fails fast.
    /// Reconnects after a drop try again with backoff until the operation's deadline.
    /// [`RabbitMq::connect`](crate::RabbitMq::connect) waits this long at most.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest message the transport accepts (default 128 MiB, RabbitMQ's default
    /// `max_message_size`).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The URL with the password replaced by `***`, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Parse and check the URL: its options with [`ParsedUrl`], then the AMQP URI with
    /// lapin's parser (which reads lapin's own options).
    pub(crate) fn uri(&self) -> Result<AMQPUri> {
        url_options(&self.url)?;
        let uri: AMQPUri = self.url.parse().map_err(|e: String| {
            // The parser's message may quote the URL: show it redacted.
            let e = scrub(&e, &self.url);
            Error::config(format!(
                "{} is not a RabbitMQ URL: {e}; write {EXAMPLE}",
                self.redacted_url()
            ))
        })?;
        if uri.scheme == AMQPScheme::AMQP
            && (self.tls.ca_pem.is_some() || self.tls.client.is_some())
        {
            tracing::warn!(
                url = %self.redacted_url(),
                "TLS settings are ignored for an amqp:// URL; use amqps:// to connect with TLS"
            );
        }
        Ok(uri)
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("url", &self.redacted_url())
            .field("connection_name", &self.connection_name)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_type", &self.queue_type)
            .field("single_active_consumer", &self.single_active_consumer)
            .field("tls", &self.tls)
            .field("reconnect", &self.reconnect)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

/// The default of [`RabbitMqConfig::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL options lapin reads itself.
const LAPIN_OPTIONS: &[&str] = &[
    "heartbeat",
    "frame_max",
    "channel_max",
    "connection_timeout",
    "auth_mechanism",
];

/// The schemes of RabbitMQ URLs.
const SCHEMES: &[&str] = &["amqp", "amqps"];

/// How a RabbitMQ URL is written, for messages.
const EXAMPLE: &str = "amqp://user:password@host:5672/vhost or amqps://...";

/// What this transport reads from the URL itself (lapin reads the rest).
#[derive(Debug, Default)]
struct UrlOptions {
    connect_timeout: Option<Duration>,
}

/// The URL parsed with [`ParsedUrl`]: one host, this transport's options and lapin's
/// accepted; an unknown option or an invalid value is a `Config` error naming it (and, for
/// an unknown one, listing the known ones), password hidden.
fn parsed(url: &str) -> Result<(ParsedUrl, UrlOptions)> {
    let mut parsed = ParsedUrl::parse("RabbitMQ", url, SCHEMES, EXAMPLE)?;
    if parsed.hosts().len() > 1 {
        return Err(Error::config(format!(
            "{} is not a RabbitMQ URL: it names {} hosts and the transport connects to one; write {EXAMPLE}",
            redact_url(url),
            parsed.hosts().len()
        )));
    }
    let options = UrlOptions {
        connect_timeout: parsed.duration("connect_timeout")?,
    };
    parsed.accept(LAPIN_OPTIONS);
    Ok((parsed, options))
}

/// The options of `url`, every option checked.
fn url_options(url: &str) -> Result<UrlOptions> {
    let (parsed, options) = parsed(url)?;
    parsed.finish()?;
    Ok(options)
}

/// `message` with every occurrence of `url` and of its password hidden.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let out = message.replace(url, &redact_url(url));
    let password = ParsedUrl::parse("RabbitMQ", url, SCHEMES, EXAMPLE)
        .ok()
        .and_then(|parsed| parsed.password());
    match password {
        Some(password) if !password.expose().is_empty() => out.replace(password.expose(), "***"),
        _ => out,
    }
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.len() > 255 {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the {kind} `{name}` is longer than RabbitMQ's limit of 255 bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redacted_url_hides_only_the_password() {
        let config = RabbitMqConfig::new("amqp://guest:s3cret@127.0.0.1:5672/%2f");
        assert_eq!(config.redacted_url(), "amqp://guest:***@127.0.0.1:5672/%2f");
        let config = RabbitMqConfig::new("amqp://host:5672");
        assert_eq!(config.redacted_url(), "amqp://host:5672");
    }

    #[test]
    fn scrub_hides_the_url_and_the_password() {
        let url = "amqp://guest:hunter%32@host/%2f";
        let shown = scrub(&format!("failed at {url}: hunter2 refused"), url);
        assert_eq!(shown, "failed at amqp://guest:***@host/%2f: *** refused");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let config = RabbitMqConfig::new("amqp://guest:hunter2@host/%2f")
            .tls(TlsConfig::new().client_cert_pem("CERT", "-----BEGIN PRIVATE KEY----- topsecret"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("guest:***@host"), "{shown}");
    }

    #[test]
    fn a_bad_url_is_a_config_error_without_the_password() {
        for (url, needle) in [
            ("amqp://guest:hunter2@host:notaport/%2f", "invalid port"),
            ("http://guest:hunter2@host/%2f", "not http://"),
            (
                "amqp://guest:hunter2@h1:5672,h2:5672/%2f",
                "names 2 hosts and the transport connects to one",
            ),
        ] {
            let err = RabbitMqConfig::new(url).uri().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let shown = err.to_string();
            assert!(shown.contains("is not a RabbitMQ URL"), "{shown}");
            assert!(shown.contains(needle), "{shown}");
            assert!(
                shown.contains("write amqp://user:password@host:5672/vhost"),
                "{shown}"
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn an_unknown_url_option_is_refused_listing_the_known_ones() {
        let err = RabbitMqConfig::new("amqp://guest:hunter2@host/%2f?heartbaet=10")
            .uri()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.message(),
            "unknown RabbitMQ URL option `heartbaet` in amqp://guest:***@host/%2f?heartbaet=10; \
             the options are connect_timeout, heartbeat, frame_max, channel_max, \
             connection_timeout, auth_mechanism"
        );
        // lapin's own options and ours are accepted.
        RabbitMqConfig::new(
            "amqp://host/%2f?heartbeat=10&frame_max=131072&channel_max=64&connection_timeout=500&auth_mechanism=plain&connect_timeout=3s",
        )
        .uri()
        .unwrap();
    }

    #[test]
    fn a_bad_option_value_is_named_without_the_password() {
        let err = RabbitMqConfig::new("amqp://guest:hunter2@host/%2f?connect_timeout=soon")
            .uri()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.message(),
            "the RabbitMQ URL option connect_timeout=\"soon\" is not a duration like 10s or 500ms"
        );
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn connect_timeout_comes_from_the_url_or_the_builder() {
        assert_eq!(
            RabbitMqConfig::new("amqp://host/%2f").connect_timeout,
            Duration::from_secs(10)
        );
        let config = RabbitMqConfig::new("amqp://host/%2f?connect_timeout=250ms");
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        let config = config.connect_timeout(Duration::from_secs(4));
        assert_eq!(config.connect_timeout, Duration::from_secs(4));
        // A bad value leaves the default until the URL is checked.
        let config = RabbitMqConfig::new("amqp://host/%2f?connect_timeout=soon");
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn missing_tls_file_is_a_config_error_naming_it() {
        let err = TlsConfig::new().ca_file("/nonexistent/ca.pem").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let err = TlsConfig::new()
            .client_cert_files("/nonexistent/client.pem", "/nonexistent/client.key")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/client.pem"), "{err}");
    }
}
