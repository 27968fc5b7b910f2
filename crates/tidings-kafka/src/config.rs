//! How to reach the brokers and how topics, producers and consumers are set up.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rdkafka::ClientConfig;
use tidings_core::transport::ParsedUrl;
use tidings_core::{Error, Result, Secret};

/// The SASL mechanism used to authenticate.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password sent as they are (use it with TLS only).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka name of the mechanism.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = Error;

    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, in any case, `_` for `-`.
    fn from_str(value: &str) -> Result<Self> {
        match value.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(Error::config(format!(
                "unknown SASL mechanism {value:?}: use {SASL_MECHANISMS}"
            ))),
        }
    }
}

/// The SASL mechanisms, for messages.
const SASL_MECHANISMS: &str = "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512";

/// SASL credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (never shown).
    pub password: Secret,
}

/// TLS settings, passed to librdkafka (`ssl.*`). Paths are PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate(s) to verify the brokers with (`ssl.ca.location`); the system's
    /// store when unset.
    pub ca_location: Option<String>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`).
    pub certificate_location: Option<String>,
    /// Client private key for mutual TLS (`ssl.key.location`).
    pub key_location: Option<String>,
    /// Password of the client key (`ssl.key.password`, never shown).
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to
    /// (`ssl.endpoint.identification.algorithm=https`); on by default.
    pub verify_hostname: bool,
}

impl Tls {
    /// TLS with the system CA store and host name verification.
    pub fn new() -> Self {
        Tls {
            verify_hostname: true,
            ..Default::default()
        }
    }

    /// Verify brokers with the CA certificate(s) in this PEM file.
    pub fn ca_location(mut self, path: impl Into<String>) -> Self {
        self.ca_location = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files) for mutual TLS.
    pub fn client_certificate(
        mut self,
        certificate: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        self.certificate_location = Some(certificate.into());
        self.key_location = Some(key.into());
        self
    }
}

/// Where a subscription that has no committed offsets yet (a new consumer group) starts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record the topic still has (`auto.offset.reset=earliest`), the default:
    /// an event published between `build()` of the subscriber and the group's first
    /// assignment is not missed.
    Earliest,
    /// Only records published after the group got its partitions (`latest`).
    Latest,
}

impl FromStr for StartFrom {
    type Err = Error;

    /// `earliest` or `latest`.
    fn from_str(value: &str) -> Result<Self> {
        match value {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            _ => Err(Error::config(format!(
                "unknown start position {value:?}: use earliest or latest"
            ))),
        }
    }
}

/// Configuration of the Kafka transport.
///
/// ```
/// use std::time::Duration;
/// use tidings_kafka::KafkaConfig;
/// let config = KafkaConfig::new("127.0.0.1:9092")
///     .partitions(6)
///     .replication(1)
///     .linger(Duration::from_millis(5));
/// assert_eq!(config.brokers(), "127.0.0.1:9092");
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) brokers: String,
    pub(crate) client_id: String,
    pub(crate) partitions: i32,
    pub(crate) replication: i32,
    pub(crate) idempotence: bool,
    pub(crate) linger: Duration,
    pub(crate) message_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) start_from: StartFrom,
    pub(crate) drain_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) session_timeout: Option<Duration>,
    pub(crate) sasl: Option<Sasl>,
    pub(crate) tls: Option<Tls>,
    pub(crate) extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Brokers as a comma-separated `host:port` list.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            client_id: "tidings".into(),
            partitions: 3,
            replication: 1,
            idempotence: true,
            linger: Duration::from_millis(5),
            message_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: 1_000_000,
            start_from: StartFrom::Earliest,
            drain_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(500),
            session_timeout: None,
            sasl: None,
            tls: None,
            extra: Vec::new(),
        }
    }

    /// The brokers, comma-separated.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The client id reported to the brokers (default `tidings`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Partitions of the topics `provision` creates (default 3). Existing topics keep
    /// theirs.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Replication factor of the topics `provision` creates (default 1).
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication.max(1);
        self
    }

    /// Whether the producer is idempotent (`enable.idempotence`, default on): retried
    /// sends are not written twice and order per partition holds across retries.
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    /// How long the producer waits to fill a batch (`linger.ms`, default 5 ms, librdkafka's
    /// own default). Every publish waits up to this long before its record goes out, so it
    /// adds to publish latency; in exchange, records published meanwhile (by concurrent
    /// `publish` calls as much as by one `publish_batch`) share one produce request, which
    /// is what lets many publishes in flight reach the broker's throughput. With a fixed
    /// number of publishes in flight, throughput is about that number divided by (linger
    /// + the broker's round trip).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long a publish may wait for the brokers, retries included, before it fails
    /// with `Unavailable` (`message.timeout.ms`, default 60 s).
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.message_timeout = timeout;
        self
    }

    /// Timeout of admin and metadata requests (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting to the brokers may take (default 10 s; URL option
    /// `connect_timeout=<duration>`, e.g. `2s`): `build()` (provisioning), `teardown()` and
    /// `dead_letters()` first ask the brokers for their metadata, and a broker that does not
    /// answer within this time fails them with `ErrorKind::Unavailable` (retryable), naming
    /// the brokers' address.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The brokers' address as error messages show it (`kafka://host:port,..`; the
    /// credentials are never part of it).
    pub(crate) fn address(&self) -> String {
        format!("kafka://{}", self.brokers)
    }

    /// The largest envelope accepted, in bytes (default 1 000 000, Kafka's default
    /// `message.max.bytes`).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Where a new consumer group starts (default [`StartFrom::Earliest`]).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// How long a rebalance waits for the handlers of revoked partitions to finish before
    /// giving the partitions up (default 30 s); a handler still running after that may see
    /// its event again on the new owner.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How often settled offsets are committed (default 500 ms); revoked partitions and
    /// shutdown commit at once.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The consumer group session timeout (`session.timeout.ms`; librdkafka's default
    /// when unset).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// Authenticate with SASL (`PLAIN` or `SCRAM`).
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.sasl = Some(Sasl {
            mechanism,
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Connect with TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Pass any other librdkafka property (`socket.keepalive.enable`, ...) to every client.
    /// Its value is hidden from `Debug` when the key names a secret.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The librdkafka settings every client shares: brokers, client id, security.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set(
                "socket.timeout.ms",
                self.request_timeout.as_millis().to_string(),
            )
            .set("log.connection.close", "false");
        let protocol = match (&self.sasl, &self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(sasl) = &self.sasl {
            c.set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_location {
                c.set("ssl.ca.location", ca);
            }
            if let Some(cert) = &tls.certificate_location {
                c.set("ssl.certificate.location", cert);
            }
            if let Some(key) = &tls.key_location {
                c.set("ssl.key.location", key);
            }
            if let Some(pw) = &tls.key_password {
                c.set("ssl.key.password", pw.expose());
            }
            c.set(
                "ssl.endpoint.identification.algorithm",
                if tls.verify_hostname { "https" } else { "none" },
            );
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// The extra properties with secret values hidden, for `Debug`.
    pub(crate) fn redacted_extra(&self) -> Vec<(String, String)> {
        self.extra
            .iter()
            .map(|(k, v)| {
                if is_secret_key(k) {
                    (k.clone(), "***".into())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
}

/// How a Kafka URL is written, for error messages.
const URL_FORM: &str = "kafka://[user:password@]host:port[,host:port]?partitions=3";

/// A whole number above 0, for the `partitions` and `replication` URL options.
struct Positive(i32);

impl FromStr for Positive {
    type Err = ();

    fn from_str(value: &str) -> std::result::Result<Self, ()> {
        value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .map(Positive)
            .ok_or(())
    }
}

impl KafkaConfig {
    /// Parse `kafka://[user:password@]host:port[,host:port]?option=value&..`.
    ///
    /// `kafkas://` turns TLS on. A user and password in the URL authenticate with SASL
    /// (`PLAIN` unless `sasl_mechanism` says otherwise). The options:
    ///
    /// | option | value | sets |
    /// |---|---|---|
    /// | `connect_timeout` | a duration: `10s`, `500ms` | [`connect_timeout`](Self::connect_timeout) |
    /// | `partitions`, `replication` | a whole number above 0 | [`partitions`](Self::partitions), [`replication`](Self::replication) |
    /// | `client_id` | text | [`client_id`](Self::client_id) |
    /// | `idempotence` | `true` / `false` | [`idempotence`](Self::idempotence) |
    /// | `linger_ms`, `message_timeout_ms` | milliseconds | [`linger`](Self::linger), [`message_timeout`](Self::message_timeout) |
    /// | `max_message_size` | bytes | [`max_message_size`](Self::max_message_size) |
    /// | `start_from` | `earliest` / `latest` | [`start_from`](Self::start_from) |
    /// | `sasl_mechanism` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` | the mechanism of the URL's user and password |
    /// | `tls` | `true` / `false` | TLS on or off |
    /// | `ca_location`, `certificate_location`, `key_location` | PEM file paths | [`Tls`] (and TLS on) |
    /// | any name with a dot | text | that librdkafka property, as it is ([`property`](Self::property)) |
    ///
    /// Any other option is refused, naming the options above.
    ///
    /// ```
    /// use tidings_kafka::KafkaConfig;
    /// let config = KafkaConfig::from_url("kafka://alice:s3cret@b1:9092,b2:9092?partitions=6&sasl_mechanism=SCRAM-SHA-256&tls=true").unwrap();
    /// assert_eq!(config.brokers(), "b1:9092,b2:9092");
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// assert!(KafkaConfig::from_url("kafka://b1:9092?partitions=many").is_err());
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let mut url = ParsedUrl::parse("Kafka", url, &["kafka", "kafkas"], URL_FORM)?;
        if url.hosts().is_empty() || url.hosts().iter().any(|h| h.trim().is_empty()) {
            return Err(Error::config(format!(
                "a Kafka URL names at least one broker, and no empty one: write {URL_FORM}"
            )));
        }
        if !url.path().is_empty() {
            return Err(Error::config(format!(
                "a Kafka URL has no path (found /{}): write {URL_FORM}",
                url.path()
            )));
        }
        let mut config = KafkaConfig::new(url.hosts().join(","));
        if url.scheme() == "kafkas" {
            config.tls = Some(Tls::new());
        }
        if let Some(timeout) = url.duration("connect_timeout")? {
            config.connect_timeout = timeout;
        }
        let positive = "a whole number above 0";
        if let Some(Positive(n)) = url.parsed("partitions", positive)? {
            config.partitions = n;
        }
        if let Some(Positive(n)) = url.parsed("replication", positive)? {
            config.replication = n;
        }
        if let Some(id) = url.option("client_id") {
            config.client_id = id;
        }
        if let Some(on) = url.flag("idempotence")? {
            config.idempotence = on;
        }
        let millis = "a whole number of milliseconds";
        if let Some(ms) = url.parsed("linger_ms", millis)? {
            config.linger = Duration::from_millis(ms);
        }
        if let Some(ms) = url.parsed("message_timeout_ms", millis)? {
            config.message_timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = url.parsed("max_message_size", "a whole number of bytes")? {
            config.max_message_size = bytes;
        }
        if let Some(start) = url.parsed("start_from", "earliest or latest")? {
            config.start_from = start;
        }
        let mechanism: Option<SaslMechanism> = url.parsed("sasl_mechanism", SASL_MECHANISMS)?;
        match url.flag("tls")? {
            Some(true) => {
                config.tls.get_or_insert_with(Tls::new);
            }
            Some(false) => config.tls = None,
            None => {}
        }
        let locations = [
            url.option("ca_location"),
            url.option("certificate_location"),
            url.option("key_location"),
        ];
        if locations.iter().any(Option::is_some) {
            let tls = config.tls.get_or_insert_with(Tls::new);
            [tls.ca_location, tls.certificate_location, tls.key_location] = locations;
        }
        config.extra = url.matching(
            |name| name.contains('.'),
            "librdkafka properties, whose names contain a dot",
        );
        config.sasl = match (url.username(), url.password(), mechanism) {
            (None, None, None) => None,
            (None, None, Some(_)) => {
                return Err(Error::config(format!(
                    "the Kafka URL option sasl_mechanism needs a user and password in the URL: write {URL_FORM}"
                )))
            }
            (username, password, mechanism) => Some(Sasl {
                mechanism: mechanism.unwrap_or(SaslMechanism::Plain),
                username: username.unwrap_or_default(),
                password: password.unwrap_or_default(),
            }),
        };
        url.finish()?;
        Ok(config)
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("idempotence", &self.idempotence)
            .field("linger", &self.linger)
            .field("message_timeout", &self.message_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("start_from", &self.start_from)
            .field("drain_timeout", &self.drain_timeout)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .field("properties", &self.redacted_extra())
            .finish_non_exhaustive()
    }
}

/// The default of [`KafkaConfig::connect_timeout`].
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a librdkafka property holds a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token") || k.ends_with(".key.pem")
}

#[cfg(test)]
mod tests;
