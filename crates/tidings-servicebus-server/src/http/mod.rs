//! The HTTP side: routing of the runtime and management REST operations, SAS checks, and
//! settlement of locked messages.

mod manage;
mod messages;
mod reply;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use percent_encoding::percent_decode_str;

use crate::broker::{Broker, Fault, ReceiveMode, SubQueue};
use crate::sas::{self, Claim, SasPolicy};
use crate::util::rfc1123;

use manage::{list_rules, list_subscriptions, manage_rule, manage_subscription, manage_topic};
use messages::{receive, send};
use reply::{fault, reply};

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) namespace: String,
    pub(crate) policies: Vec<SasPolicy>,
    pub(crate) broker: Broker,
}

impl Shared {
    fn host(&self) -> String {
        format!(
            "{}.servicebus.windows.net",
            self.namespace.to_ascii_lowercase()
        )
    }
    fn base(&self) -> String {
        format!("https://{}", self.host())
    }
}

type Reply = Response<Full<Bytes>>;

/// Route one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(fault(Fault::bad(format_args!(
                "could not read the request body: {e}"
            ))))
        }
    };
    let segments: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let route = Route::parse(&segments);
    let claim = route.claim(&parts.method);
    let resource = format!(
        "{}/{}{}",
        shared.host(),
        segments.join("/").to_ascii_lowercase(),
        parts
            .uri
            .query()
            .map(|q| format!("?{}", q.to_ascii_lowercase()))
            .unwrap_or_default()
    );
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = sas::authorize(auth, &resource, claim, &shared.policies) {
        tracing::debug!(%resource, reason = %refusal.0, "refused");
        return Ok(fault(Fault(401, refusal.0)));
    }
    let result = match route {
        Route::Send { topic } if parts.method == Method::POST => {
            send(&shared, &topic, &parts.headers, body)
        }
        Route::Head { topic, sub, queue } if parts.method == Method::POST => {
            receive(&shared, &topic, &sub, queue, ReceiveMode::PeekLock, &query).await
        }
        Route::Head { topic, sub, queue } if parts.method == Method::DELETE => {
            receive(
                &shared,
                &topic,
                &sub,
                queue,
                ReceiveMode::ReceiveAndDelete,
                &query,
            )
            .await
        }
        Route::Locked {
            topic,
            sub,
            queue,
            id,
            token,
        } => match parts.method {
            Method::DELETE => shared
                .broker
                .complete(&topic, &sub, queue, &id, &token)
                .map(|_| reply(200, "")),
            Method::PUT => shared
                .broker
                .unlock(&topic, &sub, queue, &id, &token)
                .map(|_| reply(200, "")),
            Method::POST => shared
                .broker
                .renew(&topic, &sub, queue, &id, &token)
                .map(|until| {
                    let mut r = reply(200, "");
                    let props = serde_json::json!({ "LockedUntilUtc": rfc1123(until) }).to_string();
                    if let Ok(v) = HeaderValue::from_str(&props) {
                        r.headers_mut().insert("brokerproperties", v);
                    }
                    r
                }),
            _ => Err(Fault(405, "method not allowed on a locked message".into())),
        },
        Route::Topic { topic } => {
            manage_topic(&shared, &parts.method, &parts.headers, &topic, &body)
        }
        Route::Subscriptions { topic } if parts.method == Method::GET => {
            list_subscriptions(&shared, &topic)
        }
        Route::Subscription { topic, sub } => {
            manage_subscription(&shared, &parts.method, &parts.headers, &topic, &sub, &body)
        }
        Route::Rules { topic, sub } if parts.method == Method::GET => {
            list_rules(&shared, &topic, &sub)
        }
        Route::Rule { topic, sub, rule } => manage_rule(
            &shared,
            &parts.method,
            &parts.headers,
            &topic,
            &sub,
            &rule,
            &body,
        ),
        _ => Err(Fault(
            404,
            format!(
                "no such operation: {} /{}",
                parts.method,
                segments.join("/")
            ),
        )),
    };
    Ok(result.unwrap_or_else(fault))
}

/// The operations, by path.
#[derive(Debug)]
enum Route {
    Send {
        topic: String,
    },
    Head {
        topic: String,
        sub: String,
        queue: SubQueue,
    },
    Locked {
        topic: String,
        sub: String,
        queue: SubQueue,
        id: String,
        token: String,
    },
    Topic {
        topic: String,
    },
    Subscriptions {
        topic: String,
    },
    Subscription {
        topic: String,
        sub: String,
    },
    Rules {
        topic: String,
        sub: String,
    },
    Rule {
        topic: String,
        sub: String,
        rule: String,
    },
    Unknown,
}

impl Route {
    fn parse(s: &[String]) -> Route {
        let s: Vec<&str> = s.iter().map(String::as_str).collect();
        let dlq = |q: &str| q.eq_ignore_ascii_case("$DeadLetterQueue");
        match s.as_slice() {
            [t, "messages"] => Route::Send {
                topic: t.to_string(),
            },
            [t, "subscriptions", sub, "messages", "head"] => Route::Head {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::Active,
            },
            [t, "subscriptions", sub, q, "messages", "head"] if dlq(q) => Route::Head {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::DeadLetter,
            },
            [t, "subscriptions", sub, "messages", id, token] => Route::Locked {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::Active,
                id: id.to_string(),
                token: token.to_string(),
            },
            [t, "subscriptions", sub, q, "messages", id, token] if dlq(q) => Route::Locked {
                topic: t.to_string(),
                sub: sub.to_string(),
                queue: SubQueue::DeadLetter,
                id: id.to_string(),
                token: token.to_string(),
            },
            [t] => Route::Topic {
                topic: t.to_string(),
            },
            [t, "subscriptions"] => Route::Subscriptions {
                topic: t.to_string(),
            },
            [t, "subscriptions", sub] => Route::Subscription {
                topic: t.to_string(),
                sub: sub.to_string(),
            },
            [t, "subscriptions", sub, "rules"] => Route::Rules {
                topic: t.to_string(),
                sub: sub.to_string(),
            },
            [t, "subscriptions", sub, "rules", rule] => Route::Rule {
                topic: t.to_string(),
                sub: sub.to_string(),
                rule: rule.to_string(),
            },
            _ => Route::Unknown,
        }
    }

    fn claim(&self, method: &Method) -> Claim {
        match self {
            Route::Send { .. } if method == Method::POST => Claim::Send,
            Route::Head { .. } | Route::Locked { .. } => Claim::Listen,
            _ => Claim::Manage,
        }
    }
}
