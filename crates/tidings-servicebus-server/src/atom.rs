//! The management API's Atom XML: entity descriptions in `<entry>` elements, lists in
//! `<feed>` elements.

use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::broker::{Rule, Subscription, Topic};
use crate::filter::{Correlation, Filter};
use crate::util::{format_duration, iso8601, xml_escape};

const SB_NS: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A parsed XML element: local name, attributes (local names), children, text.
#[derive(Debug, Default, Clone)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) children: Vec<Element>,
    pub(crate) text: String,
}

impl Element {
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The first descendant named `name`, depth first.
    pub(crate) fn find(&self, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.name == name {
                return Some(c);
            }
            if let Some(found) = c.find(name) {
                return Some(found);
            }
        }
        None
    }
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Parse an XML document into its root element.
pub(crate) fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("malformed XML: {e}"))?
        {
            Event::Start(e) => {
                stack.push(element(&e)?);
            }
            Event::Empty(e) => {
                let el = element(&e)?;
                stack.last_mut().expect("root").children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().expect("balanced by the reader");
                stack.last_mut().ok_or("unbalanced XML")?.children.push(el);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| format!("malformed XML text: {e}"))?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| format!("malformed XML text: {e}"))?;
                stack.last_mut().expect("root").text.push_str(&text);
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t.into_inner()).into_owned();
                stack.last_mut().expect("root").text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let name = String::from_utf8_lossy(&r.into_inner()).into_owned();
                let text = match name.as_str() {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .unwrap_or_default(),
                    n if n.starts_with('#') => n[1..]
                        .parse()
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                stack.last_mut().expect("root").text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut root = stack.pop().ok_or("empty XML")?;
    if !stack.is_empty() {
        return Err("unbalanced XML".into());
    }
    root.children
        .pop()
        .ok_or_else(|| "empty XML document".into())
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("malformed XML attribute: {e}"))?;
        let k = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        let v = a
            .unescape_value()
            .map_err(|e| format!("malformed XML attribute: {e}"))?
            .into_owned();
        attrs.push((k, v));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parse a `<Filter i:type="...">` element.
pub(crate) fn parse_filter(f: &Element) -> Result<Filter, String> {
    let kind = f.attr("type").unwrap_or("SqlFilter");
    let kind = kind.rsplit(':').next().unwrap_or(kind);
    match kind {
        "TrueFilter" => Ok(Filter::True),
        "FalseFilter" => Ok(Filter::False),
        "SqlFilter" => {
            let expr = f
                .text_of("SqlExpression")
                .ok_or("a SqlFilter needs a SqlExpression")?;
            Filter::sql(expr).map_err(|e| format!("invalid SqlExpression {expr:?}: {e}"))
        }
        "CorrelationFilter" => {
            let get = |n: &str| f.text_of(n).filter(|s| !s.is_empty()).map(str::to_string);
            let mut properties = Vec::new();
            if let Some(props) = f.child("Properties") {
                for kv in &props.children {
                    if let (Some(k), Some(v)) = (kv.text_of("Key"), kv.text_of("Value")) {
                        properties.push((k.to_string(), v.to_string()));
                    }
                }
            }
            Ok(Filter::Correlation(Correlation {
                correlation_id: get("CorrelationId"),
                message_id: get("MessageId"),
                to: get("To"),
                reply_to: get("ReplyTo"),
                label: get("Label"),
                session_id: get("SessionId"),
                reply_to_session_id: get("ReplyToSessionId"),
                content_type: get("ContentType"),
                properties,
            }))
        }
        other => Err(format!("unsupported filter type {other}")),
    }
}

fn entry(
    base: &str,
    path: &str,
    title: &str,
    created: SystemTime,
    updated: SystemTime,
    content: &str,
) -> String {
    let id = format!("{base}/{path}?api-version=2017-04");
    format!(
        "<entry xmlns=\"http://www.w3.org/2005/Atom\"><id>{id}</id><title type=\"text\">{title}</title><published>{p}</published><updated>{u}</updated><author><name>{author}</name></author><link rel=\"self\" href=\"{id}\"/><content type=\"application/xml\">{content}</content></entry>",
        id = xml_escape(&id),
        title = xml_escape(title),
        p = iso8601(created),
        u = iso8601(updated),
        author = xml_escape(base.trim_start_matches("https://").split('.').next().unwrap_or("")),
    )
}

/// A document: the XML declaration and one entry or feed.
pub(crate) fn document(body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{body}")
}

/// A feed of entries.
pub(crate) fn feed(base: &str, path: &str, title: &str, entries: &[String]) -> String {
    let id = format!("{base}/{path}?api-version=2017-04");
    format!(
        "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"text\">{title}</title><id>{id}</id><updated>{u}</updated><link rel=\"self\" href=\"{id}\"/>{entries}</feed>",
        title = xml_escape(title),
        id = xml_escape(&id),
        u = iso8601(SystemTime::now()),
        entries = entries.concat()
    )
}

pub(crate) fn topic_entry(base: &str, t: &Topic) -> String {
    let content = format!(
        "<TopicDescription xmlns=\"{SB_NS}\" xmlns:i=\"{XSI_NS}\"><DefaultMessageTimeToLive>{ttl}</DefaultMessageTimeToLive><MaxSizeInMegabytes>{max}</MaxSizeInMegabytes><RequiresDuplicateDetection>false</RequiresDuplicateDetection><DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow><EnableBatchedOperations>true</EnableBatchedOperations><SizeInBytes>0</SizeInBytes><FilteringMessagesBeforePublishing>false</FilteringMessagesBeforePublishing><IsAnonymousAccessible>false</IsAnonymousAccessible><Status>Active</Status><CreatedAt>{c}</CreatedAt><UpdatedAt>{u}</UpdatedAt><SupportOrdering>true</SupportOrdering><SubscriptionCount>{subs}</SubscriptionCount><EnablePartitioning>false</EnablePartitioning><EnableExpress>false</EnableExpress></TopicDescription>",
        ttl = format_duration(t.default_ttl),
        max = t.max_size_mb,
        c = iso8601(t.created),
        u = iso8601(t.updated),
        subs = t.subscriptions.len(),
    );
    entry(base, &t.name, &t.name, t.created, t.updated, &content)
}

pub(crate) fn subscription_entry(base: &str, topic: &str, s: &Subscription) -> String {
    let st = &s.settings;
    let content = format!(
        "<SubscriptionDescription xmlns=\"{SB_NS}\" xmlns:i=\"{XSI_NS}\"><LockDuration>{lock}</LockDuration><RequiresSession>false</RequiresSession><DefaultMessageTimeToLive>{ttl}</DefaultMessageTimeToLive><DeadLetteringOnMessageExpiration>{dlx}</DeadLetteringOnMessageExpiration><DeadLetteringOnFilterEvaluationExceptions>{dlf}</DeadLetteringOnFilterEvaluationExceptions><MessageCount>{count}</MessageCount><MaxDeliveryCount>{max}</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status><CreatedAt>{c}</CreatedAt><UpdatedAt>{u}</UpdatedAt><AccessedAt>{u}</AccessedAt><CountDetails xmlns:d2p1=\"http://schemas.microsoft.com/netservices/2011/06/servicebus\"><d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>{scheduled}</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails></SubscriptionDescription>",
        lock = format_duration(st.lock_duration),
        ttl = format_duration(st.default_ttl),
        dlx = st.dead_lettering_on_message_expiration,
        dlf = st.dead_lettering_on_filter_evaluation_exceptions,
        count = s.active.len() + s.scheduled.len() + s.dead_letters.len(),
        max = st.max_delivery_count,
        c = iso8601(s.created),
        u = iso8601(s.updated),
        active = s.active.len(),
        dead = s.dead_letters.len(),
        scheduled = s.scheduled.len(),
    );
    entry(
        base,
        &format!("{topic}/subscriptions/{}", s.name),
        &s.name,
        s.created,
        s.updated,
        &content,
    )
}

fn filter_xml(f: &Filter) -> String {
    match f {
        Filter::True => "<Filter i:type=\"TrueFilter\"><SqlExpression>1=1</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>".into(),
        Filter::False => "<Filter i:type=\"FalseFilter\"><SqlExpression>1=0</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>".into(),
        Filter::Sql { expression, .. } => format!(
            "<Filter i:type=\"SqlFilter\"><SqlExpression>{}</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>",
            xml_escape(expression)
        ),
        Filter::Correlation(c) => {
            let mut out = String::from("<Filter i:type=\"CorrelationFilter\">");
            for (name, v) in [
                ("CorrelationId", &c.correlation_id),
                ("MessageId", &c.message_id),
                ("To", &c.to),
                ("ReplyTo", &c.reply_to),
                ("Label", &c.label),
                ("SessionId", &c.session_id),
                ("ReplyToSessionId", &c.reply_to_session_id),
                ("ContentType", &c.content_type),
            ] {
                if let Some(v) = v {
                    out.push_str(&format!("<{name}>{}</{name}>", xml_escape(v)));
                }
            }
            out.push_str("<Properties>");
            for (k, v) in &c.properties {
                out.push_str(&format!(
                    "<KeyValueOfstringanyType><Key>{}</Key><Value i:type=\"d6p1:string\" xmlns:d6p1=\"http://www.w3.org/2001/XMLSchema\">{}</Value></KeyValueOfstringanyType>",
                    xml_escape(k),
                    xml_escape(v)
                ));
            }
            out.push_str("</Properties></Filter>");
            out
        }
    }
}

pub(crate) fn rule_entry(base: &str, topic: &str, sub: &str, r: &Rule) -> String {
    let content = format!(
        "<RuleDescription xmlns=\"{SB_NS}\" xmlns:i=\"{XSI_NS}\">{filter}<Action i:type=\"EmptyRuleAction\"/><CreatedAt>{c}</CreatedAt><Name>{name}</Name></RuleDescription>",
        filter = filter_xml(&r.filter),
        c = iso8601(r.created),
        name = xml_escape(&r.name),
    );
    entry(
        base,
        &format!("{topic}/subscriptions/{sub}/rules/{}", r.name),
        &r.name,
        r.created,
        r.created,
        &content,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rule_description_with_a_sql_filter() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">
<RuleDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<Filter i:type="SqlFilter"><SqlExpression>sys.Label IN (&apos;a&apos;, 'b') AND x &lt; 3</SqlExpression></Filter>
<Action i:type="EmptyRuleAction"/><Name>tidings</Name></RuleDescription></content></entry>"#;
        let root = parse(xml).unwrap();
        assert_eq!(root.name, "entry");
        let f = parse_filter(root.find("Filter").unwrap()).unwrap();
        match f {
            Filter::Sql { expression, .. } => {
                assert_eq!(expression, "sys.Label IN ('a', 'b') AND x < 3")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_correlation_filter() {
        let xml = r#"<Filter xmlns:i="http://www.w3.org/2001/XMLSchema-instance" i:type="CorrelationFilter"><Label>a.x</Label><Properties><KeyValueOfstringanyType><Key>tenant</Key><Value>north</Value></KeyValueOfstringanyType></Properties></Filter>"#;
        let f = parse_filter(&parse(xml).unwrap()).unwrap();
        let Filter::Correlation(c) = f else { panic!() };
        assert_eq!(c.label.as_deref(), Some("a.x"));
        assert_eq!(
            c.properties,
            vec![("tenant".to_string(), "north".to_string())]
        );
    }
}
