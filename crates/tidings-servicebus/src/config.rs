//! Where the namespace is and how to talk to it: namespace, SAS policy, an optional local
//! endpoint, and the settings of the subscriptions `build()` creates; from code, a
//! `servicebus://` URL or a connection string.

use std::time::Duration;

use tidings_core::transport::{redact_url, ParsedUrl};
use tidings_core::{Error, Result, Secret};

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
    pub(crate) key: Secret,
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
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a `servicebus://` URL is written, for messages.
const URL_FORM: &str = "servicebus://<namespace>?key_name=<policy>&key=<url-encoded key>";

/// The parts of a connection string this transport reads.
const CONNECTION_STRING_PARTS: &str = "Endpoint, SharedAccessKeyName, SharedAccessKey, ConnectTimeout, and TransportType (ignored: this transport always uses HTTPS)";

impl ServiceBusConfig {
    /// A namespace (`contoso` for `contoso.servicebus.windows.net`) and a shared access
    /// policy: its name and key.
    pub fn new(
        namespace: impl Into<String>,
        key_name: impl Into<String>,
        key: impl Into<Secret>,
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
            key: key.into(),
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
    /// optionally with `ConnectTimeout=<duration>` (humantime: `10s`, `500ms`; see
    /// [`connect_timeout`](Self::connect_timeout)). Part names are case-insensitive.
    ///
    /// `TransportType` (which the Azure SDKs read to choose AMQP or AMQP over WebSockets)
    /// is accepted and ignored: this transport always speaks the REST protocol over
    /// HTTPS. Any other part is refused, naming it, so that a misspelt
    /// `ConnectTimeout` does not pass silently; so is `EntityPath`, since a topic-level
    /// policy cannot create subscriptions. Errors never show the key.
    pub fn from_connection_string(s: &str) -> Result<Self> {
        let (mut endpoint, mut name, mut key, mut timeout) = (None, None, None, None);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::config("a Service Bus connection string is `Endpoint=sb://..;SharedAccessKeyName=..;SharedAccessKey=..`; one part has no `=`")
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.to_string()),
                "sharedaccesskeyname" => name = Some(v.to_string()),
                "sharedaccesskey" => key = Some(v.to_string()),
                "connecttimeout" => {
                    timeout = Some(humantime::parse_duration(v.trim()).map_err(|_| {
                        Error::config(format!(
                            "the Service Bus connection string part ConnectTimeout={v:?} is not a duration like 10s or 500ms"
                        ))
                    })?)
                }
                "transporttype" => {}
                "entitypath" => {
                    return Err(Error::config(
                        "the connection string names an EntityPath; use the namespace's connection string (a topic-level policy cannot create subscriptions)",
                    ))
                }
                _ => {
                    return Err(Error::config(format!(
                        "unknown Service Bus connection string part `{}` in {}; the parts are {CONNECTION_STRING_PARTS}",
                        k.trim(),
                        redact_url(s)
                    )))
                }
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
    /// optional options `endpoint=<http://127.0.0.1:5300>` (a local development server,
    /// see [`endpoint`](Self::endpoint)), `provision=false`, `lock_duration_secs=<n>`,
    /// `max_delivery_count=<n>`, `receive_wait_secs=<n>`, `scheduled_retries=false` and
    /// `connect_timeout=<duration>` (humantime: `10s`, `500ms`), each setting the builder
    /// method of its name.
    ///
    /// The URL names only the namespace: no port, path or user information. An unknown
    /// option is refused with the known ones listed, a bad value names its option, and no
    /// error shows the key.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = ParsedUrl::parse("Service Bus", url, &["servicebus"], URL_FORM)?;
        let namespace = match parsed.hosts() {
            [namespace] => namespace.clone(),
            [] => {
                return Err(Error::config(format!(
                    "the Service Bus URL names no namespace; write {URL_FORM}"
                )))
            }
            _ => {
                return Err(Error::config(format!(
                    "the Service Bus URL names several namespaces; write {URL_FORM}"
                )))
            }
        };
        if namespace.contains(':') {
            return Err(Error::config(format!(
                "the Service Bus URL names the namespace `{namespace}` with a port; write {URL_FORM}, and a local server as `endpoint=http://host:port`"
            )));
        }
        if parsed.username().is_some() || parsed.password().is_some() {
            return Err(Error::config(format!(
                "the Service Bus URL for namespace `{namespace}` has user information; write the policy as options: {URL_FORM}"
            )));
        }
        if !parsed.path().is_empty() {
            return Err(Error::config(format!(
                "the Service Bus URL for namespace `{namespace}` has a path; write {URL_FORM}"
            )));
        }
        let key_name = parsed.option("key_name");
        let key = parsed.option("key").map(Secret::from);
        let endpoint = parsed.option("endpoint");
        let provision = parsed.flag("provision")?;
        let lock_duration =
            parsed.parsed::<u64>("lock_duration_secs", "a whole number of seconds")?;
        let max_delivery_count = parsed.parsed::<u32>("max_delivery_count", "a whole number")?;
        let receive_wait =
            parsed.parsed::<u64>("receive_wait_secs", "a whole number of seconds")?;
        let scheduled_retries = parsed.flag("scheduled_retries")?;
        let connect_timeout = parsed.duration("connect_timeout")?;
        parsed.finish()?;
        let (Some(key_name), Some(key)) = (key_name, key) else {
            return Err(Error::config(format!(
                "the Service Bus URL for namespace `{namespace}` needs `key_name=<policy>` and `key=<url-encoded key>`"
            )));
        };
        let mut config = Self::new(namespace, key_name, key);
        if let Some(endpoint) = endpoint {
            config = config.endpoint(endpoint);
        }
        if let Some(on) = provision {
            config = config.provision(on);
        }
        if let Some(secs) = lock_duration {
            config = config.lock_duration(Duration::from_secs(secs));
        }
        if let Some(n) = max_delivery_count {
            config = config.max_delivery_count(n);
        }
        if let Some(secs) = receive_wait {
            config = config.receive_wait(Duration::from_secs(secs));
        }
        if let Some(on) = scheduled_retries {
            config = config.scheduled_retries(on);
        }
        if let Some(timeout) = connect_timeout {
            config = config.connect_timeout(timeout);
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

    /// Where requests go, for messages: the endpoint if one is set (without its password
    /// or keys, by the core's [`redact_url`]), else the namespace URL.
    pub(crate) fn address(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => redact_url(endpoint),
            None => self.namespace_url(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tidings_core::ErrorKind;

    use super::*;

    /// The error of `from_url(url)`, checked to be a `Config` error without the key.
    fn url_error(url: &str) -> String {
        let err = ServiceBusConfig::from_url(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{url}: {text}");
        text
    }

    #[test]
    fn urls_parse_every_option_and_never_show_the_key() {
        let c = ServiceBusConfig::from_url(
            "servicebus://dev/?key_name=RootManageSharedAccessKey&key=s3cr%2Bt%3D&endpoint=http://127.0.0.1:5300/&provision=false\
             &lock_duration_secs=30&max_delivery_count=3&receive_wait_secs=2&scheduled_retries=false&connect_timeout=250ms",
        )
        .unwrap();
        assert_eq!(c.namespace, "dev");
        assert_eq!(c.key_name, "RootManageSharedAccessKey");
        assert_eq!(c.key.expose(), "s3cr+t=");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5300"));
        assert!(!c.provision && !c.scheduled_retries);
        assert_eq!(c.lock_duration, Duration::from_secs(30));
        assert_eq!(c.max_delivery_count, 3);
        assert_eq!(c.receive_wait, Duration::from_secs(2));
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert!(!format!("{c:?}").contains("s3cr"));
        // The defaults.
        let c = ServiceBusConfig::from_url("SERVICEBUS://dev?key_name=a&key=b").unwrap();
        assert!(c.provision && c.scheduled_retries && c.endpoint.is_none());
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_url_options_are_refused_with_the_known_ones_listed() {
        let text =
            url_error("servicebus://dev?key_name=a&key=s3cret&endpoint=http://h&provison=false");
        assert!(
            text.contains("unknown Service Bus URL option `provison` in servicebus://dev?key_name=a&key=***&endpoint=http://h&provison=false"),
            "{text}"
        );
        assert!(
            text.contains("the options are key_name, key, endpoint, provision, lock_duration_secs, max_delivery_count, receive_wait_secs, scheduled_retries, connect_timeout"),
            "{text}"
        );
    }

    #[test]
    fn bad_url_values_name_the_option_and_what_it_takes() {
        for (option, needle) in [
            (
                "connect_timeout=soon",
                "connect_timeout=\"soon\" is not a duration like 10s",
            ),
            (
                "provision=maybe",
                "provision=\"maybe\" is not true or false",
            ),
            (
                "scheduled_retries=2",
                "scheduled_retries=\"2\" is not true or false",
            ),
            (
                "lock_duration_secs=1m",
                "lock_duration_secs=\"1m\" is not a whole number of seconds",
            ),
            (
                "receive_wait_secs=-1",
                "receive_wait_secs=\"-1\" is not a whole number of seconds",
            ),
            (
                "max_delivery_count=ten",
                "max_delivery_count=\"ten\" is not a whole number",
            ),
        ] {
            let text = url_error(&format!("servicebus://dev?key_name=a&key=s3cret&{option}"));
            assert!(text.contains("Service Bus URL option"), "{text}");
            assert!(text.contains(needle), "{option}: {text}");
        }
    }

    #[test]
    fn malformed_urls_say_what_to_write() {
        for (url, needle) in [
            (
                "amqp://dev?key_name=a&key=s3cret",
                "takes servicebus://, not amqp://",
            ),
            ("servicebus://?key_name=a&key=s3cret", "names no namespace"),
            (
                "servicebus://a,b?key_name=a&key=s3cret",
                "several namespaces",
            ),
            ("servicebus://dev:5300?key_name=a&key=s3cret", "with a port"),
            (
                "servicebus://root:s3cret@dev?key_name=a&key=b",
                "has user information",
            ),
            ("servicebus://dev/topic?key_name=a&key=s3cret", "has a path"),
            (
                "servicebus://dev?key=s3cret",
                "needs `key_name=<policy>` and `key=<url-encoded key>`",
            ),
        ] {
            let text = url_error(url);
            assert!(text.contains(needle), "{url}: {text}");
        }
    }

    #[test]
    fn connection_strings_parse_and_refuse_unknown_parts_without_showing_the_key() {
        let c = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abc=;TransportType=Amqp",
        )
        .unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.key_name.as_str(), c.key.expose()),
            ("contoso", "root", "abc=")
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        let c = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b;connecttimeout=3s",
        )
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        for (s, needle) in [
            (
                "Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=s3cret;ConectTimeout=3s",
                "unknown Service Bus connection string part `ConectTimeout` in Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKey=***; the parts are Endpoint, SharedAccessKeyName, SharedAccessKey, ConnectTimeout",
            ),
            (
                "Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=s3cret;ConnectTimeout=soon",
                "ConnectTimeout=\"soon\" is not a duration like 10s",
            ),
            (
                "Endpoint=sb://dev.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=s3cret;EntityPath=t",
                "names an EntityPath",
            ),
            ("Endpoint=sb://x/;SharedAccessKey=s3cret", "needs Endpoint, SharedAccessKeyName and SharedAccessKey"),
            ("Endpoint=sb://x/;s3cret", "one part has no `=`"),
        ] {
            let err = ServiceBusConfig::from_connection_string(s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let text = err.to_string();
            assert!(text.contains(needle), "{s}: {text}");
            assert!(!text.contains("s3cret"), "{s}: {text}");
        }
    }

    #[test]
    fn addresses_in_messages_hide_passwords_and_keys() {
        let c = ServiceBusConfig::new("dev", "k", "v");
        assert_eq!(c.address(), "https://dev.servicebus.windows.net");
        let c = c.endpoint("http://127.0.0.1:5300/");
        assert_eq!(c.address(), "http://127.0.0.1:5300");
        let c = c.endpoint("http://u:pw@127.0.0.1:5300/x?sig=1");
        assert_eq!(c.address(), "http://u:***@127.0.0.1:5300/x?sig=***");
    }
}
