//! `kafka://` URLs: brokers, credentials and options in one string.

use std::time::Duration;

use tidings_core::{Error, Result};

use crate::config::{KafkaConfig, Sasl, SaslMechanism, Secret, StartFrom, Tls};

/// The URL options [`KafkaConfig::from_url`] knows, for the error that names an unknown one.
const KNOWN_OPTIONS: &[&str] = &[
    "connect_timeout",
    "partitions",
    "replication",
    "client_id",
    "idempotence",
    "linger_ms",
    "message_timeout_ms",
    "max_message_size",
    "start_from",
    "sasl_mechanism",
    "tls",
    "ca_location",
    "certificate_location",
    "key_location",
];

impl KafkaConfig {
    /// Parse `kafka://[user:password@]host:port[,host2:port]?key=value&..`.
    ///
    /// Query keys: `connect_timeout` (humantime: `10s`, `500ms`), `partitions`, `replication`, `client_id`, `idempotence` (true/false),
    /// `linger_ms`, `message_timeout_ms`, `max_message_size`, `start_from`
    /// (earliest/latest), `sasl_mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; the user
    /// and password come from the URL), `tls` (true/false), `ca_location`,
    /// `certificate_location`, `key_location`; any other key containing a dot is passed to
    /// librdkafka as it is (`socket.keepalive.enable=true`). `kafkas://` turns TLS on.
    ///
    /// ```
    /// use tidings_kafka::KafkaConfig;
    /// let config = KafkaConfig::from_url("kafka://alice:s3cret@b1:9092,b2:9092?partitions=6&sasl_mechanism=SCRAM-SHA-256&tls=true").unwrap();
    /// assert_eq!(config.brokers(), "b1:9092,b2:9092");
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// assert!(KafkaConfig::from_url("kafka://b1:9092?partitions=many").is_err());
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::config("a Kafka URL looks like kafka://host:port[,host:port]?partitions=3")
        })?;
        let tls = match scheme {
            "kafka" => false,
            "kafkas" => true,
            other => {
                return Err(Error::config(format!(
                    "the Kafka transport takes kafka:// or kafkas:// URLs, not {other}://"
                )))
            }
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hosts.is_empty() || hosts.split(',').any(|h| h.trim().is_empty()) {
            return Err(Error::config(
                "a Kafka URL needs at least one broker: kafka://host:port",
            ));
        }
        let mut config = KafkaConfig::new(hosts);
        if tls {
            config.tls = Some(Tls::new());
        }
        let credentials = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((percent_decode(user)?, Secret::new(percent_decode(pass)?)))
            }
            None => None,
        };
        let mut mechanism = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            let bad = || {
                Error::config(format!(
                    "the Kafka URL option {key} has an invalid value {value:?}"
                ))
            };
            match key {
                "connect_timeout" => {
                    config.connect_timeout = humantime::parse_duration(&value).map_err(|e| {
                        Error::config(format!(
                            "the Kafka URL option connect_timeout={value:?} is not a duration like 10s or 500ms ({e})"
                        ))
                    })?
                }
                "partitions" => {
                    config.partitions = value.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?
                }
                "replication" => {
                    config.replication = value.parse().ok().filter(|r| *r > 0).ok_or_else(bad)?
                }
                "client_id" => config.client_id = value.clone(),
                "idempotence" => config.idempotence = parse_bool(&value).ok_or_else(bad)?,
                "linger_ms" => {
                    config.linger = Duration::from_millis(value.parse().map_err(|_| bad())?)
                }
                "message_timeout_ms" => {
                    config.message_timeout =
                        Duration::from_millis(value.parse().map_err(|_| bad())?)
                }
                "max_message_size" => config.max_message_size = value.parse().map_err(|_| bad())?,
                "start_from" => {
                    config.start_from = match value.as_str() {
                        "earliest" => StartFrom::Earliest,
                        "latest" => StartFrom::Latest,
                        _ => return Err(bad()),
                    }
                }
                "sasl_mechanism" => mechanism = Some(SaslMechanism::parse(&value)?),
                "tls" => {
                    if parse_bool(&value).ok_or_else(bad)? {
                        config.tls.get_or_insert_with(Tls::new);
                    } else {
                        config.tls = None;
                    }
                }
                "ca_location" => {
                    config.tls.get_or_insert_with(Tls::new).ca_location = Some(value.clone())
                }
                "certificate_location" => {
                    config.tls.get_or_insert_with(Tls::new).certificate_location =
                        Some(value.clone())
                }
                "key_location" => {
                    config.tls.get_or_insert_with(Tls::new).key_location = Some(value.clone())
                }
                k if k.contains('.') => config.extra.push((k.to_string(), value.clone())),
                other => {
                    return Err(Error::config(format!(
                    "unknown Kafka URL option {other:?}; the options are {} (and librdkafka properties, whose names contain a dot)",
                    KNOWN_OPTIONS.join(", ")
                )))
                }
            }
        }
        match (credentials, mechanism) {
            (Some((username, password)), mechanism) => {
                config.sasl = Some(Sasl {
                    mechanism: mechanism.unwrap_or(SaslMechanism::Plain),
                    username,
                    password,
                })
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "sasl_mechanism needs a user and password in the URL: kafka://user:password@host:port",
                ))
            }
            (None, None) => {}
        }
        Ok(config)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn percent_decode(value: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::config("the Kafka URL has a malformed %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::config("the Kafka URL is not UTF-8 after %-decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_credentials_and_options() {
        let c = KafkaConfig::from_url(
            "kafka://al%40ce:p%40ss@h1:9092,h2:9093/?partitions=6&replication=2&sasl_mechanism=scram-sha-512&tls=true&ca_location=/ca.pem&socket.keepalive.enable=true",
        )
        .unwrap();
        assert_eq!(c.brokers, "h1:9092,h2:9093");
        assert_eq!(c.partitions, 6);
        assert_eq!(c.replication, 2);
        let sasl = c.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.username, "al@ce");
        assert_eq!(sasl.password.expose(), "p@ss");
        assert_eq!(
            c.tls.as_ref().unwrap().ca_location.as_deref(),
            Some("/ca.pem")
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
        let rd = c.client_config();
        assert_eq!(rd.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(rd.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(rd.get("socket.keepalive.enable"), Some("true"));
    }

    #[test]
    fn connect_timeout_has_a_default_and_a_url_option() {
        let c = KafkaConfig::from_url("kafka://h:1").unwrap();
        assert_eq!(c.connect_timeout, crate::config::DEFAULT_CONNECT_TIMEOUT);
        let c = KafkaConfig::from_url("kafka://h:1?connect_timeout=750ms").unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(750));
    }

    #[test]
    fn unknown_options_are_refused_with_the_known_ones() {
        let e = KafkaConfig::from_url("kafka://h:1?partitons=3").unwrap_err();
        assert!(e.message().contains("\"partitons\""), "{e}");
        assert!(e.message().contains("connect_timeout"), "{e}");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "amqp://h:1",
            "kafka://",
            "kafka://h:1?partitions=0",
            "kafka://h:1?colour=blue",
            "kafka://h:1?connect_timeout=soon",
            "kafka://h:1?sasl_mechanism=PLAIN",
            "kafka://h:1?sasl_mechanism=GSSAPI",
        ] {
            let e = KafkaConfig::from_url(url).unwrap_err();
            assert_eq!(e.kind(), tidings_core::ErrorKind::Config, "{url}");
        }
    }
}
