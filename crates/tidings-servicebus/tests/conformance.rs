//! The transport conformance suite (ARCHITECTURE.md) on Service Bus, against a local
//! development server started in-process for each case (or `TIDINGS_SERVICEBUS_URL`), so
//! that dropping one case's connections does not touch the cases running beside it.
//!
//! The adversary bypasses tidings: it sends raw messages with plain HTTP requests to the
//! REST send endpoint (custom properties as HTTP headers with JSON-quoted values, the
//! `content-type` header as the message's ContentType, no `Label`; the subscriptions do not
//! require sessions, so the key is not sent), and drops the connections with the server's
//! fault hook, which closes every open connection mid-request.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tidings_core::{transport::DynTransport, Error, ErrorKind, Result};
use tidings_servicebus::{ServiceBus, ServiceBusConfig};
use tidings_testing::conformance::{Adversary, Factory, RawMessage};

use support::LocalServer;

/// Where raw messages go and how they are signed.
#[derive(Clone)]
struct Target {
    /// The base URL requests go to.
    endpoint: String,
    /// The namespace URL the SAS token is for.
    audience: String,
    key_name: String,
    key: String,
}

impl Target {
    /// A local server.
    fn local(server: &LocalServer) -> Self {
        Target {
            endpoint: server.endpoint.clone(),
            audience: format!("https://{}.servicebus.windows.net/", support::NAMESPACE),
            key_name: support::KEY_NAME.into(),
            key: support::KEY.into(),
        }
    }

    /// The namespace of `TIDINGS_SERVICEBUS_URL`.
    fn remote(url: &str) -> Self {
        let rest = url
            .strip_prefix("servicebus://")
            .expect("a servicebus:// URL");
        let (namespace, query) = rest.split_once('?').unwrap_or((rest, ""));
        let audience = format!(
            "https://{}.servicebus.windows.net/",
            namespace.trim_end_matches('/')
        );
        let mut target = Target {
            endpoint: audience.trim_end_matches('/').to_string(),
            audience,
            key_name: String::new(),
            key: String::new(),
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "key_name" => target.key_name = v.into_owned(),
                "key" => target.key = v.into_owned(),
                "endpoint" => target.endpoint = v.trim_end_matches('/').to_string(),
                _ => {}
            }
        }
        target
    }
}

/// A JSON string of `s` in ASCII, as the REST protocol's examples quote custom property
/// values.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

struct ServiceBusAdversary {
    target: Target,
    /// The configuration of the factory's transports.
    config: ServiceBusConfig,
    client: reqwest::Client,
    /// The case's own server; `None` against `TIDINGS_SERVICEBUS_URL`.
    server: Option<Arc<LocalServer>>,
}

impl Adversary for ServiceBusAdversary {
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>> {
        let target = self.target.clone();
        let client = self.client.clone();
        let url = format!("{}/{topic}/messages", target.endpoint);
        let topic = topic.to_string();
        Box::pin(async move {
            let token = tidings_servicebus_server::sas::token(
                &target.audience,
                &target.key_name,
                &target.key,
                Duration::from_secs(600),
            );
            let mut request = client.post(&url).header("authorization", token);
            for (name, value) in &message.headers {
                request = if name.eq_ignore_ascii_case("content-type") {
                    // The message's ContentType, as the protocol carries it.
                    request.header("content-type", value.as_str())
                } else {
                    request.header(name.as_str(), quoted(value))
                };
            }
            let response = request.body(message.payload).send().await.map_err(|e| {
                Error::unavailable(format!("injecting into `{topic}`")).with_source(e)
            })?;
            let status = response.status().as_u16();
            if status == 201 {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            Err(Error::new(
                ErrorKind::Rejected,
                format!("injecting into `{topic}`: the server answered {status}: {body}"),
            ))
        })
    }

    fn drop_connections(&self) -> BoxFuture<'static, Result<()>> {
        let server = self.server.clone();
        Box::pin(async move {
            match server {
                Some(server) => {
                    server.drop_connections();
                    Ok(())
                }
                None => Err(Error::new(
                    ErrorKind::Unsupported,
                    "a real namespace's connections cannot be dropped from here; run the case against the in-process server",
                )),
            }
        })
    }

    fn unreachable(
        &self,
        address: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<dyn DynTransport>> {
        let config = self
            .config
            .clone()
            .endpoint(format!("http://{address}"))
            .connect_timeout(connect_timeout);
        Ok(Arc::new(ServiceBus::new(config)?))
    }
}

/// Evaluated once per case: a server of its own (stopped when the case's factory is
/// dropped), or the namespace of `TIDINGS_SERVICEBUS_URL`.
fn factory() -> Factory {
    let (config, adversary) = match std::env::var("TIDINGS_SERVICEBUS_URL") {
        Ok(url) => (
            support::config(),
            ServiceBusAdversary {
                target: Target::remote(&url),
                config: support::config(),
                client: reqwest::Client::new(),
                server: None,
            },
        ),
        Err(_) => {
            let server = Arc::new(LocalServer::start());
            (
                server.config(),
                ServiceBusAdversary {
                    target: Target::local(&server),
                    config: server.config(),
                    client: reqwest::Client::new(),
                    server: Some(server),
                },
            )
        }
    };
    Factory::new("servicebus", move || {
        let config = config.clone();
        async move { Ok(Arc::new(ServiceBus::new(config)?) as Arc<dyn DynTransport>) }
    })
    .patience(Duration::from_secs(30))
    .quiet(Duration::from_secs(2))
    .adversary(Arc::new(adversary))
}

tidings_testing::conformance_suite!(factory());
