//! Entity management handlers: GET, PUT and DELETE of topics, subscriptions and rules as
//! Atom entity descriptions, and their listings.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use super::reply::{reply, xml};
use super::{Reply, Shared};
use crate::atom;
use crate::broker::{Fault, SubscriptionSettings};
use crate::filter::Filter;
use crate::util::parse_duration;

fn updating(headers: &hyper::HeaderMap) -> bool {
    headers.get("if-match").is_some()
}

fn body_root(body: &Bytes) -> Result<Option<atom::Element>, Fault> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| Fault::bad("the entity description is not UTF-8"))?;
    atom::parse(text).map(Some).map_err(Fault::bad)
}

fn empty_feed(shared: &Shared, path: &str) -> Reply {
    xml(
        200,
        atom::feed(&shared.base(), path, "Publicly Listed Services", &[]),
    )
}

pub(super) fn manage_topic(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            Ok(match topics.get(&topic.to_ascii_lowercase()) {
                Some(t) => xml(200, atom::topic_entry(&shared.base(), t)),
                // Service Bus answers a GET of a missing entity with an empty feed.
                None => empty_feed(shared, topic),
            })
        }
        Method::PUT => {
            let root = body_root(body)?;
            let desc = root.as_ref().and_then(|r| r.find("TopicDescription"));
            let ttl = desc
                .and_then(|d| d.text_of("DefaultMessageTimeToLive"))
                .map(|s| {
                    parse_duration(s).ok_or_else(|| {
                        Fault::bad(format_args!("DefaultMessageTimeToLive {s:?} is malformed"))
                    })
                })
                .transpose()?;
            let max = desc
                .and_then(|d| d.text_of("MaxSizeInMegabytes"))
                .map(|s| {
                    s.parse().map_err(|_| {
                        Fault::bad(format_args!("MaxSizeInMegabytes {s:?} is not a number"))
                    })
                })
                .transpose()?;
            let status = if updating(headers) {
                shared.broker.update_topic(topic, ttl, max)?;
                200
            } else {
                shared.broker.create_topic(topic, ttl, max)?;
                201
            };
            let topics = shared.broker.lock();
            let t = topics
                .get(&topic.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "topic vanished".into()))?;
            Ok(xml(status, atom::topic_entry(&shared.base(), t)))
        }
        Method::DELETE => shared.broker.delete_topic(topic).map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a topic".into())),
    }
}

pub(super) fn list_subscriptions(shared: &Shared, topic: &str) -> Result<Reply, Fault> {
    let topics = shared.broker.lock();
    let t = topics.get(&topic.to_ascii_lowercase()).ok_or_else(|| {
        Fault(
            404,
            format!("MessagingEntityNotFound: topic {topic} does not exist"),
        )
    })?;
    let entries: Vec<String> = t
        .subscriptions
        .values()
        .map(|s| atom::subscription_entry(&shared.base(), &t.name, s))
        .collect();
    Ok(xml(
        200,
        atom::feed(
            &shared.base(),
            &format!("{topic}/subscriptions"),
            "Subscriptions",
            &entries,
        ),
    ))
}

fn subscription_settings(
    shared: &Shared,
    root: Option<&atom::Element>,
) -> Result<(SubscriptionSettings, Option<Filter>), Fault> {
    let mut s = shared.broker.default_settings();
    let Some(desc) = root.and_then(|r| r.find("SubscriptionDescription")) else {
        return Ok((s, None));
    };
    let dur = |name: &str| -> Result<Option<Duration>, Fault> {
        desc.text_of(name)
            .map(|v| {
                parse_duration(v).ok_or_else(|| {
                    Fault::bad(format_args!("{name} {v:?} is not an ISO 8601 duration"))
                })
            })
            .transpose()
    };
    let flag = |name: &str| desc.text_of(name).map(|v| v.eq_ignore_ascii_case("true"));
    if let Some(d) = dur("LockDuration")? {
        if d.is_zero() {
            return Err(Fault::bad("LockDuration must be positive"));
        }
        s.lock_duration = d;
    }
    if let Some(d) = dur("DefaultMessageTimeToLive")? {
        s.default_ttl = d;
    }
    if let Some(v) = desc.text_of("MaxDeliveryCount") {
        s.max_delivery_count = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Fault::bad(format_args!(
                "MaxDeliveryCount {v:?} must be a positive number"
            ))
        })?;
    }
    if let Some(v) = flag("DeadLetteringOnMessageExpiration") {
        s.dead_lettering_on_message_expiration = v;
    }
    if let Some(v) = flag("DeadLetteringOnFilterEvaluationExceptions") {
        s.dead_lettering_on_filter_evaluation_exceptions = v;
    }
    if flag("RequiresSession") == Some(true) {
        return Err(Fault::bad(
            "sessions are not supported by this development server",
        ));
    }
    let default_rule = match desc
        .child("DefaultRuleDescription")
        .and_then(|r| r.child("Filter"))
    {
        Some(f) => Some(atom::parse_filter(f).map_err(Fault::bad)?),
        None => None,
    };
    Ok((s, default_rule))
}

pub(super) fn manage_subscription(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    sub: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            let t = topics.get(&topic.to_ascii_lowercase());
            Ok(
                match t.and_then(|t| {
                    t.subscriptions
                        .get(&sub.to_ascii_lowercase())
                        .map(|s| (t, s))
                }) {
                    Some((t, s)) => xml(200, atom::subscription_entry(&shared.base(), &t.name, s)),
                    None => empty_feed(shared, &format!("{topic}/subscriptions/{sub}")),
                },
            )
        }
        Method::PUT => {
            let root = body_root(body)?;
            let (settings, default_rule) = subscription_settings(shared, root.as_ref())?;
            let status = if updating(headers) {
                shared.broker.update_subscription(topic, sub, settings)?;
                200
            } else {
                shared
                    .broker
                    .create_subscription(topic, sub, settings, default_rule)?;
                201
            };
            let topics = shared.broker.lock();
            let t = topics
                .get(&topic.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "topic vanished".into()))?;
            let s = t
                .subscriptions
                .get(&sub.to_ascii_lowercase())
                .ok_or_else(|| Fault(500, "subscription vanished".into()))?;
            Ok(xml(
                status,
                atom::subscription_entry(&shared.base(), &t.name, s),
            ))
        }
        Method::DELETE => shared
            .broker
            .delete_subscription(topic, sub)
            .map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a subscription".into())),
    }
}

pub(super) fn list_rules(shared: &Shared, topic: &str, sub: &str) -> Result<Reply, Fault> {
    let topics = shared.broker.lock();
    let s = topics
        .get(&topic.to_ascii_lowercase())
        .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
        .ok_or_else(|| {
            Fault(
                404,
                format!("MessagingEntityNotFound: subscription {topic}/{sub} does not exist"),
            )
        })?;
    let entries: Vec<String> = s
        .rules
        .values()
        .map(|r| atom::rule_entry(&shared.base(), topic, sub, r))
        .collect();
    Ok(xml(
        200,
        atom::feed(
            &shared.base(),
            &format!("{topic}/subscriptions/{sub}/rules"),
            "Rules",
            &entries,
        ),
    ))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn manage_rule(
    shared: &Shared,
    method: &Method,
    headers: &hyper::HeaderMap,
    topic: &str,
    sub: &str,
    rule: &str,
    body: &Bytes,
) -> Result<Reply, Fault> {
    match *method {
        Method::GET => {
            let topics = shared.broker.lock();
            let r = topics
                .get(&topic.to_ascii_lowercase())
                .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
                .and_then(|s| s.rules.get(&rule.to_ascii_lowercase()));
            Ok(match r {
                Some(r) => xml(200, atom::rule_entry(&shared.base(), topic, sub, r)),
                None => empty_feed(shared, &format!("{topic}/subscriptions/{sub}/rules/{rule}")),
            })
        }
        Method::PUT => {
            let root =
                body_root(body)?.ok_or_else(|| Fault::bad("a rule needs a RuleDescription"))?;
            let desc = root
                .find("RuleDescription")
                .ok_or_else(|| Fault::bad("a rule needs a RuleDescription"))?;
            if let Some(action) = desc.child("Action") {
                let kind = action.attr("type").unwrap_or("EmptyRuleAction");
                if !kind.ends_with("EmptyRuleAction") {
                    return Err(Fault::bad(format_args!(
                        "rule actions ({kind}) are not supported by this development server"
                    )));
                }
            }
            let filter = match desc.child("Filter") {
                Some(f) => atom::parse_filter(f).map_err(Fault::bad)?,
                None => Filter::True,
            };
            let created = shared
                .broker
                .put_rule(topic, sub, rule, filter, updating(headers))?;
            let topics = shared.broker.lock();
            let r = topics
                .get(&topic.to_ascii_lowercase())
                .and_then(|t| t.subscriptions.get(&sub.to_ascii_lowercase()))
                .and_then(|s| s.rules.get(&rule.to_ascii_lowercase()))
                .ok_or_else(|| Fault(500, "rule vanished".into()))?;
            Ok(xml(
                if created { 201 } else { 200 },
                atom::rule_entry(&shared.base(), topic, sub, r),
            ))
        }
        Method::DELETE => shared
            .broker
            .delete_rule(topic, sub, rule)
            .map(|_| reply(200, "")),
        _ => Err(Fault(405, "method not allowed on a rule".into())),
    }
}
