//! The REST client: a reqwest client with rustls that signs every request with a SAS
//! token and sends the namespace URL to the configured endpoint if there is one. The
//! requests themselves are built where they are made (publisher, subscriber, acker,
//! dead letters, topology).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::{Method, Url};
use sha2::Sha256;
use tidings_core::{Error, ErrorKind, Result, Secret};

use crate::config::ServiceBusConfig;
use crate::error::{request_error, status_error};
use crate::wire::Received;

/// An answer, body collected.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The URL sent to the configured endpoint is not a URL.
    Endpoint(Box<dyn std::error::Error + Send + Sync>),
    /// reqwest could not build the request (a header value it refuses).
    Request(reqwest::Error),
    /// Sent, and no answer: no connection, a timeout, a broken connection or body.
    NoAnswer(reqwest::Error),
}

/// Signs and sends the requests the transport builds, through reqwest with rustls; when
/// an endpoint is configured, every `https://<namespace>.servicebus.windows.net` URL goes
/// to that endpoint instead (URLs and signatures stay those of the namespace).
///
/// reqwest's errors lose their URL (`without_url`), so that a message names the address
/// once (the transport adds it).
pub(crate) struct Rest {
    client: reqwest::Client,
    pub(crate) base: String,
    endpoint: Option<String>,
    pub(crate) namespace: String,
    pub(crate) key_name: String,
    /// Where requests go (redacted), for messages.
    pub(crate) address: String,
    key: Secret,
    token: Mutex<Option<(String, SystemTime)>>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the cached token (a bearer credential) is shown.
        f.debug_struct("Rest")
            .field("base", &self.base)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

const TOKEN_TTL: Duration = Duration::from_secs(3600);

impl Rest {
    /// Fails only if the HTTP client cannot be built.
    pub(crate) fn new(config: &ServiceBusConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.receive_wait + Duration::from_secs(30))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(e)
            })?;
        Ok(Rest {
            client,
            base: config.namespace_url(),
            endpoint: config.endpoint.clone(),
            namespace: config.namespace.clone(),
            key_name: config.key_name.clone(),
            address: config.address(),
            key: config.key.clone(),
            token: Mutex::new(None),
        })
    }

    /// A SAS token for the whole namespace, cached for an hour.
    fn token(&self) -> String {
        let now = SystemTime::now();
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, expiry)) = cached.as_ref() {
            if *expiry > now + Duration::from_secs(300) {
                return t.clone();
            }
        }
        let expiry = now + TOKEN_TTL;
        let se = expiry
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let sr: String =
            form_urlencoded::byte_serialize(format!("{}/", self.base).as_bytes()).collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC takes any key");
        mac.update(format!("{sr}\n{se}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        let skn: String = form_urlencoded::byte_serialize(self.key_name.as_bytes()).collect();
        let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}");
        *cached = Some((token.clone(), expiry));
        token
    }

    /// The URL `url` (a namespace URL) goes to: the endpoint's when one is set.
    fn redirect(&self, url: Url) -> std::result::Result<Url, Failure> {
        let rest = url
            .as_str()
            .strip_prefix(&self.base)
            .filter(|rest| rest.starts_with('/'));
        let (Some(to), Some(rest)) = (&self.endpoint, rest) else {
            return Ok(url);
        };
        Url::parse(&format!("{to}{rest}")).map_err(|e| Failure::Endpoint(Box::new(e)))
    }

    /// Send a signed request to the namespace URL `url` (to the endpoint, if set) and
    /// collect the answer, whatever its status.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> std::result::Result<Answer, Failure> {
        let url = self.redirect(url)?;
        let mut req = self
            .client
            .request(method, url)
            .header("authorization", self.token());
        for (name, value) in headers {
            req = req.header(name.to_ascii_lowercase(), value.as_str());
        }
        let req = match body {
            Some(body) => req.body(body),
            // Service Bus wants a length on a POST or PUT without a body.
            None => req.header("content-length", "0").body(Bytes::new()),
        };
        let response = req.send().await.map_err(|e| {
            if e.is_builder() {
                Failure::Request(e.without_url())
            } else {
                Failure::NoAnswer(e.without_url())
            }
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::NoAnswer(e.without_url()))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Send a request to `path_and_query` (relative to the namespace URL, starting with
    /// `/`) or to an absolute namespace URL (a lock URI), and collect the answer, whatever
    /// its status: the caller checks it.
    pub(crate) async fn call(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Answer> {
        let url = if target.starts_with("https://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let url = Url::parse(&url).map_err(|e| {
            Error::new(ErrorKind::Backend, format!("{what}: bad URL")).with_source(e)
        })?;
        self.send(method, url, headers, body)
            .await
            .map_err(|e| request_error(e, what, &self.address))
    }

    /// Whether the namespace answers at all: one request (listing a topic), whatever its
    /// status, since rights are judged by the calls that need them. No answer is
    /// `Unavailable` (without the address: the caller names it).
    pub(crate) async fn probe(&self) -> Result<()> {
        let url = format!("{}/$Resources/Topics?api-version=2017-04&$top=1", self.base);
        let url = Url::parse(&url).map_err(|e| {
            Error::new(ErrorKind::Config, "the namespace name makes no URL").with_source(e)
        })?;
        match self.send(Method::GET, url, &[], None).await {
            Ok(_) => Ok(()),
            Err(Failure::Endpoint(e)) => Err(Error::new(
                ErrorKind::Config,
                "the endpoint is not a usable URL",
            )
            .with_source(e)),
            Err(Failure::Request(e)) => {
                Err(Error::new(ErrorKind::Backend, "cannot build the request").with_source(e))
            }
            Err(Failure::NoAnswer(e)) => {
                Err(Error::unavailable("the namespace did not answer").with_source(e))
            }
        }
    }

    /// Like [`call`](Self::call), failing unless the status is one of `ok`.
    pub(crate) async fn expect(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
        ok: &[u16],
        what: &str,
    ) -> Result<Answer> {
        let a = self.call(method, target, headers, body, what).await?;
        if ok.contains(&a.status) {
            Ok(a)
        } else {
            Err(status_error(a.status, &a.body, what, &self.key_name))
        }
    }

    /// Peek-lock the head of a subscription (or its dead-letter subqueue) at the entity
    /// path `entity`, waiting up to `wait`: the message and its lock URI, `None` on 204.
    ///
    /// The azure crate's receive calls are not used (see the crate docs): they take 204 (no
    /// message) for success, read bodies as UTF-8 after the message was locked, throw away
    /// the lock URI or do not check the status. This one checks the status itself, reads
    /// the body as bytes and always keeps the lock URI (from `Location`, else from
    /// `LockToken` and `SequenceNumber`).
    pub(crate) async fn peek_lock(
        &self,
        entity: &str,
        wait: Duration,
    ) -> Result<Option<(Received, String)>> {
        let what = format!("receiving from `{entity}`");
        let a = self
            .call(
                Method::POST,
                &format!("{entity}/messages/head?timeout={}", wait.as_secs()),
                &[],
                None,
                &what,
            )
            .await?;
        match a.status {
            201 => {
                let m = Received::from_answer(&a.headers, a.body);
                let lock_uri = match (&m.lock_uri, &m.lock_token) {
                    (Some(uri), _) => uri.clone(),
                    (None, Some(token)) => format!("{}{entity}/messages/{}/{token}", self.base, m.sequence_number),
                    (None, None) => {
                        return Err(Error::new(
                            ErrorKind::Backend,
                            format!("{what}: Service Bus answered 201 without a Location or LockToken; the message stays locked until its lock expires"),
                        ))
                    }
                };
                Ok(Some((m, lock_uri)))
            }
            204 => Ok(None),
            status => Err(status_error(status, &a.body, &what, &self.key_name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(endpoint: Option<&str>) -> Rest {
        let config = ServiceBusConfig::new("dev", "k", "v");
        let config = match endpoint {
            Some(e) => config.endpoint(e),
            None => config,
        };
        Rest::new(&config).unwrap()
    }

    #[test]
    fn namespace_urls_go_to_the_endpoint_and_others_stay() {
        let url = |s: &str| Url::parse(s).unwrap();
        let r = rest(Some("http://127.0.0.1:5300/"));
        assert_eq!(
            r.redirect(url(
                "https://dev.servicebus.windows.net/t/messages?timeout=1"
            ))
            .unwrap()
            .as_str(),
            "http://127.0.0.1:5300/t/messages?timeout=1"
        );
        assert_eq!(
            r.redirect(url("https://other.servicebus.windows.net/t"))
                .unwrap()
                .as_str(),
            "https://other.servicebus.windows.net/t"
        );
        assert_eq!(
            r.redirect(url("https://dev.servicebus.windows.net.example.com/t"))
                .unwrap()
                .as_str(),
            "https://dev.servicebus.windows.net.example.com/t"
        );
        let r = rest(None);
        assert_eq!(
            r.redirect(url("https://dev.servicebus.windows.net/t"))
                .unwrap()
                .as_str(),
            "https://dev.servicebus.windows.net/t"
        );
        let r = rest(Some("not a url"));
        assert!(matches!(
            r.redirect(url("https://dev.servicebus.windows.net/t")),
            Err(Failure::Endpoint(_))
        ));
    }
}
