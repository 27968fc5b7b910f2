//! The HTTP side: the pluggable `HttpClient` handed to the azure crate (a reqwest client
//! with rustls that can redirect the namespace URL to a local endpoint), SAS tokens, and
//! the REST calls the azure crate does not make correctly or at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_core::{HttpClient, Method, Request, Url};
use base64::Engine;
use bytes::Bytes;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tidings_core::{Error, ErrorKind, Result};

use crate::config::ServiceBusConfig;
use crate::error::{azure_error, status_error};

/// The `HttpClient` given to `azure_messaging_servicebus`: reqwest with rustls, and when
/// an endpoint is configured, every `https://<namespace>.servicebus.windows.net` URL sent
/// to that endpoint instead (the azure crate hard-codes the namespace URL).
///
/// A request that gets no answer fails with an `Io` error whose cause is reqwest's error
/// without the URL, so that a message names the address once (the transport adds it).
#[derive(Debug)]
pub(crate) struct Redirecting {
    inner: reqwest::Client,
    from: String,
    to: Option<String>,
}

impl Redirecting {
    pub(crate) fn new(config: &ServiceBusConfig) -> Result<Self> {
        let inner = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.receive_wait + Duration::from_secs(30))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "cannot build the HTTP client").with_source(e)
            })?;
        Ok(Redirecting {
            inner,
            from: config.namespace_url(),
            to: config.endpoint.clone(),
        })
    }

    /// The URL `request` goes to.
    fn target(&self, request: &Request) -> azure_core::Result<Url> {
        let url = request.url().as_str();
        let (Some(to), Some(rest)) = (&self.to, url.strip_prefix(self.from.as_str())) else {
            return Ok(request.url().clone());
        };
        Url::parse(&format!("{to}{rest}")).map_err(|e| {
            azure_core::Error::full(
                azure_core::error::ErrorKind::DataConversion,
                e,
                "the endpoint is not a URL",
            )
        })
    }
}

#[async_trait]
impl HttpClient for Redirecting {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<azure_core::Response> {
        use azure_core::error::ErrorKind as Azure;
        let url = self.target(request)?;
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| azure_core::Error::full(Azure::DataConversion, e, "bad HTTP method"))?;
        let mut req = self.inner.request(method, url);
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        let body = match request.body().clone() {
            azure_core::Body::Bytes(bytes) => reqwest::Body::from(bytes),
            azure_core::Body::SeekableStream(stream) => reqwest::Body::wrap_stream(stream),
        };
        let response = req
            .body(body)
            .send()
            .await
            .map_err(|e| azure_core::Error::new(Azure::Io, e.without_url()))?;
        let status =
            azure_core::StatusCode::try_from(response.status().as_u16()).map_err(|_| {
                azure_core::Error::message(Azure::DataConversion, "an invalid HTTP status")
            })?;
        let headers: HashMap<azure_core::headers::HeaderName, azure_core::headers::HeaderValue> =
            response
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        azure_core::headers::HeaderName::from(k.as_str().to_owned()),
                        azure_core::headers::HeaderValue::from(v.to_str().ok()?.to_owned()),
                    ))
                })
                .collect();
        let body: std::pin::Pin<
            Box<dyn futures::Stream<Item = azure_core::Result<Bytes>> + Send + Sync>,
        > = Box::pin(
            response
                .bytes_stream()
                .map_err(|e| azure_core::Error::new(Azure::Io, e.without_url())),
        );
        Ok(azure_core::Response::new(
            status,
            azure_core::headers::Headers::from(headers),
            body,
        ))
    }
}

/// An answer, body collected.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Bytes,
}

/// Signs and sends the requests the transport builds itself.
pub(crate) struct Rest {
    pub(crate) http: Arc<dyn HttpClient>,
    pub(crate) base: String,
    pub(crate) namespace: String,
    pub(crate) key_name: String,
    /// Where requests go (redacted), for messages.
    pub(crate) address: String,
    key: crate::config::Key,
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
    pub(crate) fn new(config: &ServiceBusConfig, http: Arc<dyn HttpClient>) -> Self {
        Rest {
            http,
            base: config.namespace_url(),
            namespace: config.namespace.clone(),
            key_name: config.key_name.clone(),
            address: config.address(),
            key: config.key.clone(),
            token: Mutex::new(None),
        }
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
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.0.as_bytes()).expect("HMAC takes any key");
        mac.update(format!("{sr}\n{se}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        let skn: String = form_urlencoded::byte_serialize(self.key_name.as_bytes()).collect();
        let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}");
        *cached = Some((token.clone(), expiry));
        token
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
        let mut req = Request::new(url, method);
        req.insert_header("authorization", self.token());
        for (k, v) in headers {
            req.insert_header(k.to_ascii_lowercase(), v.clone());
        }
        match body {
            Some(b) => req.set_body(b),
            None => {
                req.insert_header("content-length", "0");
                req.set_body(Bytes::new());
            }
        }
        let resp = self
            .http
            .execute_request(&req)
            .await
            .map_err(|e| azure_error(e, what, &self.key_name, &self.address))?;
        let (status, headers, body) = resp.deconstruct();
        let body = body
            .collect()
            .await
            .map_err(|e| azure_error(e, what, &self.key_name, &self.address))?;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
            .collect();
        Ok(Answer {
            status: u16::from(status),
            headers,
            body,
        })
    }

    /// Whether the namespace answers at all: one request (listing a topic), whatever its
    /// status, since rights are judged by the calls that need them. No answer is
    /// `Unavailable` (without the address: the caller names it).
    pub(crate) async fn probe(&self) -> Result<()> {
        let url = format!("{}/$Resources/Topics?api-version=2017-04&$top=1", self.base);
        let url = Url::parse(&url).map_err(|e| {
            Error::new(ErrorKind::Config, "the namespace name makes no URL").with_source(e)
        })?;
        let mut req = Request::new(url, Method::Get);
        req.insert_header("authorization", self.token());
        req.insert_header("content-length", "0");
        req.set_body(Bytes::new());
        match self.http.execute_request(&req).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), azure_core::error::ErrorKind::DataConversion) => Err(
                Error::new(ErrorKind::Config, "the endpoint is not a usable URL").with_source(e),
            ),
            Err(e) => Err(Error::unavailable("the namespace did not answer").with_source(e)),
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
}

/// The path of a subscription's queue or dead-letter subqueue.
pub(crate) fn queue_path(topic: &str, subscription: &str, dead_letters: bool) -> String {
    format!(
        "/{topic}/subscriptions/{subscription}{}",
        if dead_letters {
            "/$DeadLetterQueue"
        } else {
            ""
        }
    )
}
