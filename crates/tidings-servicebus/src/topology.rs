//! Entity paths, provisioning, the broker objects and teardown.
//!
//! Provisioning goes through the management REST API (Atom XML, `api-version=2017-04`): a topic
//! per tidings topic, a subscription per subscribing service, and on it one SQL rule
//! `tidings` that lets through the wire names the service handles (by `Label`) and the
//! re-sends addressed to it (by `To`). The azure crate has no management calls, so these
//! are built here.

use bytes::Bytes;
use reqwest::Method;
use tidings_core::{
    transport::{SubscriptionSpec, Topology},
    BrokerObject, Error, ErrorKind, Result,
};

use crate::client::Rest;
use crate::ServiceBusConfig;

const API: &str = "api-version=2017-04";
const SB_NS: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
/// The rule this transport owns on each subscription.
pub(crate) const RULE: &str = "tidings";

/// The SQL filter of a subscription's rule: its handled wire names, messages without a
/// `Label` (other publishers' or broken ones: the core reads their headers and handles,
/// skips or dead-letters them), and re-sends addressed to it.
pub(crate) fn rule_expression(spec: &SubscriptionSpec) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let to = quote(&spec.name);
    if spec.events.is_empty() {
        return format!("sys.To = {to}");
    }
    let names: Vec<String> = spec.events.iter().map(|e| quote(e)).collect();
    format!(
        "((sys.Label IN ({}) OR sys.Label IS NULL) AND sys.To IS NULL) OR sys.To = {to}",
        names.join(", ")
    )
}

/// The entity path of a subscription: `/<topic>/subscriptions/<subscription>` (Service
/// Bus subscriptions live under their topic, so no flat name is made up for them).
pub(crate) fn subscription_path(topic: &str, subscription: &str) -> String {
    format!("/{topic}/subscriptions/{subscription}")
}

/// The entity path of a subscription's dead-letter subqueue:
/// `/<topic>/subscriptions/<subscription>/$DeadLetterQueue`.
pub(crate) fn dead_letter_path(topic: &str, subscription: &str) -> String {
    format!(
        "{}/$DeadLetterQueue",
        subscription_path(topic, subscription)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

fn entry(content: String) -> Bytes {
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\">{content}</content></entry>"
    ))
}

/// The text of the first `<tag>` in `xml`.
fn tag_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Whether a management GET found the entity: Service Bus answers a missing one with an
/// empty feed (or, some versions, 404).
fn found(status: u16, body: &[u8]) -> bool {
    status == 200 && String::from_utf8_lossy(body).contains("<entry")
}

/// The Atom entry of the entity at `path`, `None` when it does not exist (404, or a 200
/// without an entry, as Service Bus answers for a missing entity); any other status is an
/// error.
async fn read_entity(rest: &Rest, path: &str, what: &str) -> Result<Option<String>> {
    let got = rest.call(Method::GET, path, &[], None, what).await?;
    if found(got.status, &got.body) {
        return Ok(Some(String::from_utf8_lossy(&got.body).into_owned()));
    }
    if got.status != 200 && got.status != 404 {
        return Err(crate::error::status_error(
            got.status,
            &got.body,
            what,
            &rest.key_name,
        ));
    }
    Ok(None)
}

/// What [`provision`] creates for `topology`: its topics, and per subscription the
/// subscription, its rule and its dead-letter subqueue, by entity path.
pub(crate) fn broker_objects(topology: &Topology) -> Vec<BrokerObject> {
    let mut objects: Vec<BrokerObject> = topology
        .topic_names()
        .into_iter()
        .map(|t| BrokerObject::new("topic", t))
        .collect();
    for spec in &topology.subscriptions {
        let path = format!("{}/subscriptions/{}", spec.topic, spec.name);
        objects.push(BrokerObject::new("rule", format!("{path}/rules/{RULE}")));
        objects.push(BrokerObject::new(
            "dead-letter subqueue",
            format!("{path}/$DeadLetterQueue"),
        ));
        objects.push(BrokerObject::new("subscription", path));
    }
    objects.sort();
    objects.dedup();
    objects
}

/// Delete what [`provision`] creates for `topology` through the management API: the
/// subscriptions (their rules, messages and dead letters go with them), then the topics
/// (with every other subscription on them). What is gone already is skipped.
pub(crate) async fn teardown(rest: &Rest, topology: &Topology) -> Result<()> {
    let delete = |path: String, what: String| async move {
        match rest
            .expect(Method::DELETE, &path, &[], None, &[200], &what)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    for spec in &topology.subscriptions {
        let (topic, name) = (&spec.topic, &spec.name);
        delete(
            format!("/{topic}/subscriptions/{name}?{API}"),
            format!("deleting subscription `{name}` of topic `{topic}`"),
        )
        .await?;
    }
    for topic in topology.topic_names() {
        delete(
            format!("/{topic}?{API}"),
            format!("deleting topic `{topic}`"),
        )
        .await?;
    }
    Ok(())
}

/// Delete the subscription of `spec` (its rule and dead-letter subqueue go with it), not
/// its topic; a subscription already gone is fine.
pub(crate) async fn remove_subscription(rest: &Rest, spec: &SubscriptionSpec) -> Result<()> {
    let (topic, name) = (&spec.topic, &spec.name);
    match rest
        .expect(
            Method::DELETE,
            &format!("/{topic}/subscriptions/{name}?{API}"),
            &[],
            None,
            &[200],
            &format!("deleting subscription `{name}` of topic `{topic}`"),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The backlog of `spec`'s subscription: the `ActiveMessageCount` of its `CountDetails`,
/// from a GET of the subscription entity (`None` if the answer has no count). Service
/// Bus counts active messages whether or not a receiver holds a lock on them, and
/// updates the count lazily; scheduled and dead-lettered messages are not in it. A
/// subscription that does not exist is `NotFound`.
pub(crate) async fn backlog(rest: &Rest, spec: &SubscriptionSpec) -> Result<Option<u64>> {
    let (topic, name) = (&spec.topic, &spec.name);
    let what = format!("reading subscription `{name}` of topic `{topic}`");
    let path = format!("/{topic}/subscriptions/{name}?{API}");
    match read_entity(rest, &path, &what).await? {
        Some(entry) => Ok(active_message_count(&entry)),
        None => Err(Error::new(
            ErrorKind::NotFound,
            format!("{what}: it does not exist: is the subscription name right, and was it provisioned (a bus with it built once)?"),
        )),
    }
}

/// The `ActiveMessageCount` in the `CountDetails` of a subscription entry, whatever
/// namespace prefix its element has (`<d2p1:ActiveMessageCount>`).
fn active_message_count(entry: &str) -> Option<u64> {
    let details = &entry[entry.find("CountDetails")?..];
    let start = details.find("ActiveMessageCount>")? + "ActiveMessageCount>".len();
    let text = &details[start..];
    text[..text.find('<')?].trim().parse().ok()
}

pub(crate) async fn provision(
    rest: &Rest,
    config: &ServiceBusConfig,
    topology: &Topology,
) -> Result<()> {
    if !config.provision {
        tracing::debug!("provisioning is off; assuming the topics, subscriptions and rules exist");
        return Ok(());
    }
    for topic in topology.topic_names() {
        ensure_topic(rest, topic)
            .await
            .map_err(|e| explain(e, rest, config, topology))?;
    }
    for spec in &topology.subscriptions {
        ensure_subscription(rest, config, spec)
            .await
            .map_err(|e| explain(e, rest, config, topology))?;
    }
    Ok(())
}

/// Turn a refusal into a message that says what to provision by hand.
fn explain(e: Error, rest: &Rest, config: &ServiceBusConfig, topology: &Topology) -> Error {
    if e.kind() != ErrorKind::Unauthorized {
        return e;
    }
    let mut needs: Vec<String> = topology
        .publishes
        .iter()
        .map(|t| format!("topic `{}`", t.name))
        .collect();
    for s in &topology.subscriptions {
        needs.push(format!(
            "subscription `{}` on topic `{}` (MaxDeliveryCount {}) with a SQL rule `{RULE}`: {} (and without the `$Default` rule)",
            s.name,
            s.topic,
            config.max_delivery_count,
            rule_expression(s)
        ));
    }
    Error::new(
        ErrorKind::Unauthorized,
        format!(
            "cannot provision on namespace `{}`: Service Bus refused the SAS policy `{}` for managing entities ({}). Check the key; if the policy lacks the Manage right, create {} yourself, or use a policy with Manage rights; once they exist, turn provisioning off (`ServiceBusConfig::provision(false)`, `provision=false` in the URL)",
            rest.namespace,
            rest.key_name,
            e.message(),
            needs.join("; ")
        ),
    )
}

pub(crate) async fn ensure_topic(rest: &Rest, topic: &str) -> Result<()> {
    let path = format!("/{topic}?{API}");
    let what = format!("reading topic `{topic}`");
    if read_entity(rest, &path, &what).await?.is_some() {
        return Ok(());
    }
    let body = entry(format!("<TopicDescription xmlns=\"{SB_NS}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"></TopicDescription>"));
    let headers = [(
        "content-type",
        "application/atom+xml;type=entry;charset=utf-8".to_string(),
    )];
    rest.expect(
        Method::PUT,
        &path,
        &headers,
        Some(body),
        &[200, 201, 409],
        &format!("creating topic `{topic}`"),
    )
    .await?;
    tracing::info!(topic, "created Service Bus topic");
    Ok(())
}

async fn ensure_subscription(
    rest: &Rest,
    config: &ServiceBusConfig,
    spec: &SubscriptionSpec,
) -> Result<()> {
    let (topic, name) = (&spec.topic, &spec.name);
    let path = format!("/{topic}/subscriptions/{name}?{API}");
    let what = format!("reading subscription `{name}` of topic `{topic}`");
    let headers = [(
        "content-type",
        "application/atom+xml;type=entry;charset=utf-8".to_string(),
    )];
    if let Some(body) = read_entity(rest, &path, &what).await? {
        if let Some(n) =
            tag_text(&body, "MaxDeliveryCount").and_then(|n| n.trim().parse::<u32>().ok())
        {
            if n > 100 {
                tracing::warn!(subscription = %name, topic = %topic, max_delivery_count = n,
                    "the subscription's MaxDeliveryCount is high: parking a dead letter takes that many unlocks");
            }
        }
    } else {
        let lock = format!("PT{}S", config.lock_duration.as_secs().max(1));
        let body = entry(format!(
            "<SubscriptionDescription xmlns=\"{SB_NS}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><LockDuration>{lock}</LockDuration><RequiresSession>false</RequiresSession><DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration><DeadLetteringOnFilterEvaluationExceptions>false</DeadLetteringOnFilterEvaluationExceptions><MaxDeliveryCount>{}</MaxDeliveryCount></SubscriptionDescription>",
            config.max_delivery_count
        ));
        rest.expect(
            Method::PUT,
            &path,
            &headers,
            Some(body),
            &[200, 201, 409],
            &format!("creating subscription `{name}` of topic `{topic}`"),
        )
        .await?;
        tracing::info!(subscription = %name, topic = %topic, "created Service Bus subscription");
    }
    // Our rule first, then away with `$Default`, so no message falls between two rules.
    let rules_path = format!("/{topic}/subscriptions/{name}/rules?{API}");
    let rules = rest
        .expect(
            Method::GET,
            &rules_path,
            &[],
            None,
            &[200],
            &format!("listing the rules of subscription `{name}`"),
        )
        .await?;
    let rules = String::from_utf8_lossy(&rules.body).into_owned();
    let mut existing: Vec<(String, Option<String>)> = Vec::new();
    for part in rules.split("<entry").skip(1) {
        let Some(title) = tag_text(part, "Name").or_else(|| {
            part.find("<title").and_then(|i| {
                let rest = &part[i..];
                let start = rest.find('>')? + 1;
                let end = rest.find("</title>")?;
                Some(&rest[start..end])
            })
        }) else {
            continue;
        };
        existing.push((
            xml_unescape(title.trim()),
            tag_text(part, "SqlExpression").map(xml_unescape),
        ));
    }
    let want = rule_expression(spec);
    let ours = existing.iter().find(|(n, _)| n.eq_ignore_ascii_case(RULE));
    if ours.and_then(|(_, e)| e.as_deref()) != Some(want.as_str()) {
        let mut headers = headers.to_vec();
        if ours.is_some() {
            headers.push(("if-match", "*".to_string()));
        }
        let body = entry(format!(
            "<RuleDescription xmlns=\"{SB_NS}\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><Filter i:type=\"SqlFilter\"><SqlExpression>{}</SqlExpression></Filter><Action i:type=\"EmptyRuleAction\"/><Name>{RULE}</Name></RuleDescription>",
            xml_escape(&want)
        ));
        rest.expect(
            Method::PUT,
            &format!("/{topic}/subscriptions/{name}/rules/{RULE}?{API}"),
            &headers,
            Some(body),
            // 409: another instance of the service created it at the same moment.
            &[200, 201, 409],
            &format!("setting the rule `{RULE}` of subscription `{name}`"),
        )
        .await?;
        tracing::info!(subscription = %name, topic = %topic, rule = %want, "set the subscription's rule");
    }
    if existing.iter().any(|(n, _)| n == "$Default") {
        rest.expect(
            Method::DELETE,
            &format!("/{topic}/subscriptions/{name}/rules/$Default?{API}"),
            &[],
            None,
            &[200, 404],
            &format!("removing the `$Default` rule of subscription `{name}`"),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_the_active_message_count_whatever_its_prefix() {
        let entry = "<entry><content><SubscriptionDescription><MessageCount>9</MessageCount><CountDetails xmlns:d2p1=\"x\"><d2p1:ActiveMessageCount>7</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>2</d2p1:DeadLetterMessageCount></CountDetails></SubscriptionDescription></content></entry>";
        assert_eq!(active_message_count(entry), Some(7));
        let bare = "<CountDetails><ActiveMessageCount> 0 </ActiveMessageCount></CountDetails>";
        assert_eq!(active_message_count(bare), Some(0));
        assert_eq!(active_message_count("<MessageCount>9</MessageCount>"), None);
    }

    #[test]
    fn the_rule_lets_through_handled_names_and_resends_to_the_subscription() {
        let spec = SubscriptionSpec::new(
            "catalog",
            "catalog",
            "lending",
            vec!["lending.book-borrowed".into(), "it's".into()],
        );
        assert_eq!(
            rule_expression(&spec),
            "((sys.Label IN ('lending.book-borrowed', 'it''s') OR sys.Label IS NULL) AND sys.To IS NULL) OR sys.To = 'catalog'"
        );
    }
}
