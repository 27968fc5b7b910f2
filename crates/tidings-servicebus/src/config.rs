//! Where the namespace is and how to talk to it: namespace, SAS policy, an optional local
//! endpoint, and the settings of the subscriptions `build()` creates.

use std::fmt;
use std::time::Duration;

use tidings_core::{Error, Result};

/// The SAS key; never printed.
#[derive(Clone)]
pub(crate) struct Key(pub(crate) String);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach a Service Bus namespace, and how the transport uses it.
///
/// ```
/// use std::time::Duration;
/// use tidings_servicebus::ServiceBusConfig;
/// let config = ServiceBusConfig::new("contoso", "RootManageSharedAccessKey", "<key>")
///     .lock_duration(Duration::from_secs(30))
///     .max_delivery_count(10);
/// assert!(!format!("{config:?}").contains("<key>"));
/// ```
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    pub(crate) namespace: String,
    pub(crate) key_name: String,
    pub(crate) key: Key,
    pub(crate) endpoint: Option<String>,
    pub(crate) provision: bool,
    pub(crate) lock_duration: Duration,
    pub(crate) max_delivery_count: u32,
    pub(crate) receive_wait: Duration,
    pub(crate) scheduled_retries: bool,
    pub(crate) max_message_size: usize,
    pub(crate) connect_timeout: Duration,
}

/// The default of [`ServiceBusConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_timeout(value: &str, name: &str) -> Result<Duration> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        Error::config(format!(
            "the Service Bus option `{name}` must be a duration like 10s or 500ms, not {value:?} ({e})"
        ))
    })
}

impl ServiceBusConfig {
    /// A namespace (`contoso` for `contoso.servicebus.windows.net`) and a shared access
    /// policy: its name and key.
    pub fn new(
        namespace: impl Into<String>,
        key_name: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        let namespace: String = namespace.into();
        let namespace = namespace
            .trim()
            .trim_start_matches("sb://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .trim_end_matches(".servicebus.windows.net")
            .to_string();
        ServiceBusConfig {
            namespace,
            key_name: key_name.into(),
            key: Key(key.into()),
            endpoint: None,
            provision: true,
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            receive_wait: Duration::from_secs(5),
            scheduled_retries: true,
            max_message_size: 180 * 1024,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// From a connection string as the Azure portal shows it:
    /// `Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<name>;SharedAccessKey=<key>`,
    /// optionally followed by `;ConnectTimeout=<duration>` (humantime: `10s`, `500ms`; see
    /// [`connect_timeout`](Self::connect_timeout)).
    pub fn from_connection_string(s: &str) -> Result<Self> {
        let (mut endpoint, mut name, mut key, mut timeout) = (None, None, None, None);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::config("a Service Bus connection string is `Endpoint=sb://..;SharedAccessKeyName=..;SharedAccessKey=..`; one part has no `=`")
            })?;
            match k.to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.to_string()),
                "sharedaccesskeyname" => name = Some(v.to_string()),
                "sharedaccesskey" => key = Some(v.to_string()),
                "connecttimeout" => timeout = Some(parse_timeout(v, "ConnectTimeout")?),
                "entitypath" => {
                    return Err(Error::config(
                        "the connection string names an EntityPath; use the namespace's connection string (a topic-level policy cannot create subscriptions)",
                    ))
                }
                _ => {}
            }
        }
        match (endpoint, name, key) {
            (Some(e), Some(n), Some(k)) => {
                let config = Self::new(e, n, k);
                Ok(match timeout {
                    Some(t) => config.connect_timeout(t),
                    None => config,
                })
            }
            _ => Err(Error::config(
                "the Service Bus connection string needs Endpoint, SharedAccessKeyName and SharedAccessKey",
            )),
        }
    }

    /// From `servicebus://<namespace>?key_name=<policy>&key=<url-encoded key>` with the
    /// optional parameters `endpoint=<http://127.0.0.1:5300>` (a local development server),
    /// `provision=false`, `lock_duration_secs=<n>`, `max_delivery_count=<n>`,
    /// `receive_wait_secs=<n>`, `scheduled_retries=false` and `connect_timeout=<duration>`
    /// (humantime: `10s`, `500ms`; see [`connect_timeout`](Self::connect_timeout)).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("servicebus://").ok_or_else(|| {
            Error::config(
                "a Service Bus URL starts with `servicebus://<namespace>?key_name=..&key=..`",
            )
        })?;
        let (namespace, query) = rest.split_once('?').unwrap_or((rest, ""));
        let namespace = namespace.trim_end_matches('/');
        if namespace.is_empty() {
            return Err(Error::config(
                "the Service Bus URL names no namespace: `servicebus://<namespace>?...`",
            ));
        }
        let mut key_name = None;
        let mut key = None;
        let mut rest = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "key_name" => key_name = Some(v.into_owned()),
                "key" => key = Some(v.into_owned()),
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        let (Some(key_name), Some(key)) = (key_name, key) else {
            return Err(Error::config(format!(
                "the Service Bus URL for namespace `{namespace}` needs `key_name=<policy>` and `key=<url-encoded key>`"
            )));
        };
        let mut config = Self::new(namespace, key_name, key);
        for (k, v) in rest {
            let bad = |what: &str| {
                Error::config(format!(
                    "the Service Bus URL parameter `{k}` must be {what}, not {v:?}"
                ))
            };
            match k.as_str() {
                "endpoint" => config = config.endpoint(v.clone()),
                "provision" => config.provision = v.parse().map_err(|_| bad("true or false"))?,
                "scheduled_retries" => config.scheduled_retries = v.parse().map_err(|_| bad("true or false"))?,
                "lock_duration_secs" => {
                    config.lock_duration = Duration::from_secs(v.parse().map_err(|_| bad("a number of seconds"))?)
                }
                "receive_wait_secs" => {
                    config.receive_wait = Duration::from_secs(v.parse().map_err(|_| bad("a number of seconds"))?)
                }
                "max_delivery_count" => config.max_delivery_count = v.parse().map_err(|_| bad("a number"))?,
                "connect_timeout" => config.connect_timeout = parse_timeout(&v, "connect_timeout")?,
                _ => {
                    return Err(Error::config(format!(
                        "unknown Service Bus URL parameter `{k}`; known: key_name, key, endpoint, provision, lock_duration_secs, max_delivery_count, receive_wait_secs, scheduled_retries, connect_timeout"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Send every request to `endpoint` (e.g. `http://127.0.0.1:5300`, the development
    /// server of `tidings-servicebus-server`) instead of
    /// `https://<namespace>.servicebus.windows.net`. URLs and signatures stay those of the
    /// namespace.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into().trim_end_matches('/').to_string());
        self
    }

    /// Whether `build()` creates missing topics, subscriptions and rules (default true; needs
    /// a policy with the Manage right). Turn it off when the entities are provisioned
    /// another way and the policy has only Send and Listen.
    pub fn provision(mut self, on: bool) -> Self {
        self.provision = on;
        self
    }

    /// The LockDuration of subscriptions this transport creates (default 60 s; Service Bus
    /// accepts 5 s to 5 min). Locks are renewed while a handler runs.
    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.lock_duration = d;
        self
    }

    /// The MaxDeliveryCount of subscriptions this transport creates (default 10): how often
    /// a message may be delivered before Service Bus dead-letters it by itself (after
    /// repeated crashes). Also how many unlocks it takes to park a dead letter (see the
    /// crate docs), so keep it small.
    pub fn max_delivery_count(mut self, n: u32) -> Self {
        self.max_delivery_count = n.max(1);
        self
    }

    /// How long one receive waits for a message before asking again (default 5 s).
    pub fn receive_wait(mut self, d: Duration) -> Self {
        self.receive_wait = d.max(Duration::from_secs(1));
        self
    }

    /// Whether delayed retries are scheduled re-sends (default true): the envelope is sent
    /// again with `ScheduledEnqueueTimeUtc` and the original completed, freeing the
    /// consumer. When false the bus waits in place, holding (and renewing) the lock.
    pub fn scheduled_retries(mut self, on: bool) -> Self {
        self.scheduled_retries = on;
        self
    }

    /// The largest envelope the transport accepts, in bytes (default 180 KiB, so that a
    /// base64-encoded binary body and its properties still fit the Standard tier's 256 KiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long connecting to the namespace (or endpoint) may take (default 10 s; URL
    /// option `connect_timeout=<duration>`, connection-string option
    /// `ConnectTimeout=<duration>`): the TCP and TLS connect of every request, and the
    /// first request of a transport, which `build()` (through `provision`) or
    /// [`ServiceBus::connect`](crate::ServiceBus::connect) makes to check that the
    /// namespace answers. An unreachable namespace is
    /// [`ErrorKind::Unavailable`](tidings_core::ErrorKind::Unavailable) naming its address.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The namespace name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The base URL of the namespace, `https://<namespace>.servicebus.windows.net`.
    pub fn namespace_url(&self) -> String {
        format!("https://{}.servicebus.windows.net", self.namespace)
    }

    /// Where requests go, for messages: the endpoint if one is set, else the namespace
    /// URL; without user information or query, which may hold secrets.
    pub(crate) fn address(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => redact(endpoint),
            None => self.namespace_url(),
        }
    }
}

/// `url` without user information and query (`http://user:pw@host:1/p?k=v` is
/// `http://host:1/p`); a string that is not a URL is cut at `?` and `@`.
fn redact(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => url.rsplit('@').next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_connection_strings_parse_and_never_show_the_key() {
        let c = ServiceBusConfig::from_url(
            "servicebus://dev?key_name=RootManageSharedAccessKey&key=s3cr%2Bt%3D&endpoint=http://127.0.0.1:5300&provision=false",
        )
        .unwrap();
        assert_eq!(c.namespace, "dev");
        assert_eq!(c.key.0, "s3cr+t=");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5300"));
        assert!(!c.provision);
        assert!(!format!("{c:?}").contains("s3cr"));
        let c = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abc=",
        )
        .unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.key_name.as_str(), c.key.0.as_str()),
            ("contoso", "root", "abc=")
        );
        let e = ServiceBusConfig::from_url("servicebus://dev?key=s3cret").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = ServiceBusConfig::from_url("servicebus://dev?key_name=a&key=s3cret&bogus=1")
            .unwrap_err();
        assert!(
            !e.to_string().contains("s3cret") && e.to_string().contains("bogus"),
            "{e}"
        );
        assert!(
            ServiceBusConfig::from_connection_string("Endpoint=sb://x/;SharedAccessKeyName=a")
                .is_err()
        );
    }

    #[test]
    fn connect_timeout_defaults_to_10s_and_is_set_by_url_and_connection_string() {
        let c = ServiceBusConfig::new("dev", "k", "v");
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        let c =
            ServiceBusConfig::from_url("servicebus://dev?key_name=a&key=b&connect_timeout=250ms")
                .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        let c = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b;ConnectTimeout=3s",
        )
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        let e = ServiceBusConfig::from_url(
            "servicebus://dev?key_name=a&key=s3cret&connect_timeout=soon",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("connect_timeout") && !e.to_string().contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn addresses_in_messages_carry_no_user_information_or_query() {
        assert_eq!(
            redact("http://u:pw@127.0.0.1:5300/x?sig=1"),
            "http://127.0.0.1:5300/x"
        );
        assert_eq!(redact("http://127.0.0.1:5300"), "http://127.0.0.1:5300");
        let c = ServiceBusConfig::new("dev", "k", "v");
        assert_eq!(c.address(), "https://dev.servicebus.windows.net");
    }
}
