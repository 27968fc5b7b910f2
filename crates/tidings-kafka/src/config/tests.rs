//! `KafkaConfig`: URLs, TLS, SASL and hidden secrets.

use tidings_core::ErrorKind;

use super::*;

#[test]
fn secret_properties_are_hidden() {
    let c = KafkaConfig::new("h:1").property("sasl.oauthbearer.client.secret", "hush");
    assert_eq!(
        c.redacted_extra(),
        vec![(
            "sasl.oauthbearer.client.secret".to_string(),
            "***".to_string()
        )]
    );
}

#[test]
fn url_with_credentials_and_options() {
    let c = KafkaConfig::from_url(
        "kafka://al%40ce:p%40ss@h1:9092,h2:9093/?partitions=6&replication=2&sasl_mechanism=scram-sha-512&tls=true&ca_location=/ca.pem&socket.keepalive.enable=true&linger_ms=20&start_from=latest",
    )
    .unwrap();
    assert_eq!(c.brokers, "h1:9092,h2:9093");
    assert_eq!((c.partitions, c.replication), (6, 2));
    assert_eq!(c.linger, Duration::from_millis(20));
    assert_eq!(c.start_from, StartFrom::Latest);
    let sasl = c.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.username, "al@ce");
    assert_eq!(sasl.password.expose(), "p@ss");
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.ca_location.as_deref(), Some("/ca.pem"));
    assert!(tls.verify_hostname);
    let debug = format!("{c:?}");
    assert!(!debug.contains("p@ss"), "{debug}");
    let rd = c.client_config();
    assert_eq!(rd.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(rd.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(rd.get("socket.keepalive.enable"), Some("true"));
}

#[test]
fn tls_comes_from_the_scheme_the_flag_or_a_location() {
    let tls = |url| KafkaConfig::from_url(url).unwrap().tls;
    assert_eq!(tls("kafka://h:1"), None);
    assert_eq!(tls("kafkas://h:1"), Some(Tls::new()));
    assert_eq!(tls("kafkas://h:1?tls=false"), None);
    assert_eq!(tls("kafka://h:1?tls=on"), Some(Tls::new()));
    assert_eq!(
        tls("kafka://h:1?certificate_location=/c.pem&key_location=/k.pem"),
        Some(Tls::new().client_certificate("/c.pem", "/k.pem"))
    );
    let plain = KafkaConfig::from_url("kafka://bob:pw@h:1").unwrap();
    assert_eq!(plain.sasl.unwrap().mechanism, SaslMechanism::Plain);
}

#[test]
fn connect_timeout_has_a_default_and_a_url_option() {
    let c = KafkaConfig::from_url("kafka://h:1").unwrap();
    assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    let c = KafkaConfig::from_url("kafka://h:1?connect_timeout=750ms").unwrap();
    assert_eq!(c.connect_timeout, Duration::from_millis(750));
}

/// The message of the error `url` gives, checked to be a `Config` error that does not
/// show the password `hunter2`.
fn refused(url: &str) -> String {
    let e = KafkaConfig::from_url(url).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
    let shown = e.to_string();
    assert!(!shown.contains("hunter2"), "{url}: {shown}");
    shown
}

#[test]
fn unknown_options_are_refused_with_the_known_ones() {
    let shown = refused("kafka://u:hunter2@h:1?partitons=3&partitions=2");
    assert!(
        shown.contains("unknown Kafka URL option `partitons` in kafka://u:***@h:1"),
        "{shown}"
    );
    assert!(
        shown.contains("the options are connect_timeout, partitions, replication, client_id, idempotence, linger_ms, message_timeout_ms, max_message_size, start_from, sasl_mechanism, tls, ca_location, certificate_location, key_location, and librdkafka properties, whose names contain a dot"),
        "{shown}"
    );
}

#[test]
fn bad_values_are_named_with_what_they_should_be() {
    for (url, needle) in [
        (
            "kafka://u:hunter2@h:1?partitions=0",
            "partitions=\"0\" is not a whole number above 0",
        ),
        (
            "kafka://h:1?replication=-1",
            "replication=\"-1\" is not a whole number above 0",
        ),
        (
            "kafka://h:1?connect_timeout=soon",
            "connect_timeout=\"soon\" is not a duration",
        ),
        (
            "kafka://h:1?linger_ms=5ms",
            "linger_ms=\"5ms\" is not a whole number of milliseconds",
        ),
        (
            "kafka://h:1?idempotence=maybe",
            "idempotence=\"maybe\" is not true or false",
        ),
        (
            "kafka://h:1?start_from=middle",
            "start_from=\"middle\" is not earliest or latest",
        ),
        (
            "kafka://u:hunter2@h:1?sasl_mechanism=GSSAPI",
            "sasl_mechanism=\"GSSAPI\" is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
    ] {
        let shown = refused(url);
        assert!(shown.contains(needle), "{url}: {shown}");
    }
}

#[test]
fn bad_urls_say_how_to_write_one() {
    for (url, needle) in [
        (
            "amqp://u:hunter2@h:1",
            "takes kafka:// or kafkas://, not amqp://",
        ),
        ("kafka://", "at least one broker"),
        ("kafka://u:hunter2@h1:1,,h2:2", "no empty one"),
        ("kafka://u:hunter2@h:1/topic", "has no path"),
        (
            "kafka://h:1?sasl_mechanism=PLAIN",
            "sasl_mechanism needs a user and password",
        ),
    ] {
        let shown = refused(url);
        assert!(shown.contains(needle), "{url}: {shown}");
        assert!(shown.contains(URL_FORM), "{url}: {shown}");
    }
}
