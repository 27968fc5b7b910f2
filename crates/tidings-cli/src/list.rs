//! `tidings list`: every event with its publisher and subscribers, one line each in the
//! seeds' form (`lending.book-borrowed v1 [lending] (lending → catalog)`) or as JSON.

use serde::Serialize;
use tidings_core::catalog::Index;

use crate::workspace::Workspace;
use crate::Failure;

/// One event of the listing.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    name: &'a str,
    /// The published version (the newest handled one when nobody publishes it).
    version: u32,
    topic: &'a str,
    #[serde(rename = "type")]
    type_name: &'a str,
    publishers: Vec<&'a str>,
    subscribers: Vec<Subscriber<'a>>,
    has_schema: bool,
}

/// A subscription handling the event.
#[derive(Debug, Serialize)]
struct Subscriber<'a> {
    service: &'a str,
    subscription: &'a str,
    version: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    upcasts_from: Vec<u32>,
}

pub(crate) fn run(ws: &Workspace, json: bool, service: Option<&str>) -> Result<String, Failure> {
    if let Some(service) = service {
        ws.check_service(service)?;
    }
    let index = Index::new(&ws.catalogs);
    let mut events = Vec::new();
    for name in index.names() {
        let publishers = index.publishers_of(name);
        let handlers = index.handlers_of(name);
        let involved = |s: &str| {
            publishers.iter().any(|p| p.service == s) || handlers.iter().any(|h| h.service == s)
        };
        if service.is_some_and(|s| !involved(s)) {
            continue;
        }
        let (version, topic, type_name, has_schema) = match publishers.first() {
            Some(p) => (
                p.contract.version,
                p.topic,
                p.contract.type_name.as_str(),
                p.contract.schema.is_some(),
            ),
            None => {
                let h = handlers
                    .iter()
                    .max_by_key(|h| h.handled.version)
                    .expect("an indexed name is published or handled");
                (
                    h.handled.version,
                    h.topic,
                    h.handled.type_name.as_str(),
                    h.handled.schema.is_some(),
                )
            }
        };
        events.push(Listed {
            name,
            version,
            topic,
            type_name,
            publishers: publishers.iter().map(|p| p.service).collect(),
            subscribers: handlers
                .iter()
                .map(|h| Subscriber {
                    service: h.service,
                    subscription: h.subscription,
                    version: h.handled.version,
                    upcasts_from: h.handled.upcasts.iter().map(|u| u.from_version).collect(),
                })
                .collect(),
            has_schema,
        });
    }
    if json {
        let mut text = serde_json::to_string_pretty(&events).expect("JSON serialises");
        text.push('\n');
        return Ok(text);
    }
    let mut out = String::from("Integration events:\n");
    if events.is_empty() {
        out.push_str("  (none)\n");
    }
    for e in &events {
        let publishers = match e.publishers.is_empty() {
            true => "nobody".to_string(),
            false => e.publishers.join(", "),
        };
        let subscribers: Vec<String> = e
            .subscribers
            .iter()
            .map(|s| {
                let mut label = s.service.to_string();
                if s.subscription != s.service {
                    label = format!("{label}/{}", s.subscription);
                }
                if s.version != e.version {
                    label = format!("{label} v{}", s.version);
                }
                label
            })
            .collect();
        let subscribers = match subscribers.is_empty() {
            true => "nobody".to_string(),
            false => subscribers.join(", "),
        };
        out.push_str(&format!(
            "  {} v{} [{}] ({publishers} → {subscribers})\n",
            e.name, e.version, e.topic
        ));
    }
    Ok(out)
}
