//! The event catalog: what one service's bus publishes and handles, as a stable JSON
//! document, and the checks a workspace of such documents must pass.
//!
//! [`BusBuilder::catalog`](crate::BusBuilder::catalog) (before `build()`, no broker
//! needed) and [`Bus::catalog`](crate::Bus::catalog) describe one service: the topics it
//! publishes with their events, its subscriptions with the events and versions they handle
//! and the older versions they upcast, the retry policy, the codec and the transport (its
//! address redacted). Each event carries the JSON Schema of its payload, derived from the
//! contract type itself, so the schema cannot drift from the code.
//!
//! # Where the schemas come from
//!
//! With the `schema` feature (on by default), `#[derive(Event)]` looks at the concrete
//! type and, if it implements [`schemars::JsonSchema`](https://docs.rs/schemars), fills
//! [`Event::payload_schema`](crate::Event::payload_schema) with its draft-07 schema
//! (sub-schemas inlined). The detection is autoref specialisation on the concrete type, so
//! nothing changes for an event without `JsonSchema`: it keeps compiling and its catalog
//! entry has `"schema": null`, which `tidings validate` reports with the fix (derive
//! `schemars::JsonSchema` on the type and the types of its fields). This was chosen over an
//! opt-in attribute because the derive then needs no new syntax, every existing event
//! keeps compiling, and the one way to get a schema is the one schemars users know. The
//! feature gates only schemars; the catalog itself is plain serde.
//!
//! # Checks
//!
//! [`validate`] runs the workspace rules of `tidings validate` (the `tidings-cli` crate)
//! over the catalogs of every service, the workspace [`Manifest`] (`tidings.toml`) and
//! the committed [`Lock`] (`tidings.lock`); [`check_lock`] runs only the contract-change
//! rule, and [`assert_lock`] runs it inside `cargo test` for the buses of one service. [`compare`]
//! classifies the difference between two payload schemas. [`Flow`] is the flow of events
//! between services, drawn by `tidings graph` and the dashboard.

mod compat;
mod flow;
mod index;
mod lock;
mod manifest;
mod schema;
mod validate;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use compat::{compare, Change, ChangeKind};
pub use flow::Flow;
pub use index::{Handler, Index, Publisher};
pub use lock::{assert_lock, check_lock_file, Lock, LockedEvent, LOCK_FORMAT};
pub use manifest::{Manifest, ServiceDeclaration, WorkspaceInfo};
pub use validate::{check_lock, validate, Problem, Rule, Severity};

#[doc(hidden)]
pub use schema::probe;
#[cfg(feature = "schema")]
pub use schema::schema_for;

/// The format version of catalog documents, the value of their `tidings_catalog` key.
pub const CATALOG_FORMAT: u32 = 1;

/// One service's catalog: what its bus publishes and handles. Serialises to the stable JSON
/// document `tidings` reads (`<service>.json` in a catalog folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCatalog {
    /// The document format, [`CATALOG_FORMAT`].
    pub tidings_catalog: u32,
    /// The service (bounded context).
    pub service: String,
    /// The bus namespace that prefixes broker names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The transport the bus was built with.
    pub transport: TransportInfo,
    /// The content type of what the service publishes (its codec).
    pub codec: String,
    /// The topics the service publishes, in declaration order.
    pub publishes: Vec<PublishedTopic>,
    /// The service's subscriptions, in registration order.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// The transport of a bus, as far as the builder knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportInfo {
    /// `memory`, `rabbitmq`, `kafka`, `servicebus`, or the transport type's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The transport URL with passwords and keys masked
    /// ([`redact_url`](crate::transport::redact_url)), when the bus was built from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl TransportInfo {
    /// What a transport URL says: the kind from its scheme and the URL, redacted.
    pub fn from_url(url: &str) -> Self {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        let kind = match scheme.as_str() {
            "amqp" | "amqps" => "rabbitmq",
            "kafka" | "kafkas" => "kafka",
            "memory" => "memory",
            "servicebus" => "servicebus",
            _ if url
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("endpoint=sb://") =>
            {
                "servicebus"
            }
            _ => "unknown",
        };
        TransportInfo {
            kind: Some(kind.to_string()),
            url: Some(crate::transport::redact_url(url)),
        }
    }

    /// What a transport type says: its name, lower case (`Memory` is `memory`).
    pub(crate) fn from_type<T: ?Sized>() -> Self {
        let name = std::any::type_name::<T>();
        let name = name.split('<').next().unwrap_or(name);
        let short = name.rsplit("::").next().unwrap_or(name);
        TransportInfo {
            kind: Some(short.to_ascii_lowercase()),
            url: None,
        }
    }
}

/// A topic a service publishes, with its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedTopic {
    /// The topic's name (`lending`).
    pub topic: String,
    /// Its name on the broker (with the namespace, if any).
    pub broker_topic: String,
    /// The events of the topic.
    pub events: Vec<EventContract>,
}

/// One event as a service's code defines it: wire name, version, type and payload schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventContract {
    /// The wire name.
    pub name: String,
    /// The contract version.
    pub version: u32,
    /// The Rust type, as written in the topic enum.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The JSON Schema (draft-07) of the payload; `null` when the type does not implement
    /// `schemars::JsonSchema` or the `schema` feature is off.
    pub schema: Option<Value>,
}

/// One subscription of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The subscription's name (the service's unless set with `Subscription::named`).
    pub name: String,
    /// The topic it subscribes to.
    pub topic: String,
    /// The topic's name on the broker.
    pub broker_topic: String,
    /// The events it has handlers for.
    pub handles: Vec<HandledEvent>,
    /// Its retry policy.
    pub retry: RetryInfo,
    /// Handlers in flight at most.
    pub concurrency: usize,
    /// Deliveries the broker may push ahead (`None` for the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u16>,
}

/// An event a subscription handles, in the version its code reads, with the older versions
/// it upcasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandledEvent {
    /// The wire name.
    pub name: String,
    /// The version the handler reads (the newest it knows).
    pub version: u32,
    /// The Rust type of that version.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The JSON Schema of that version's payload, `null` without one.
    pub schema: Option<Value>,
    /// The older versions registered with `Subscription::upcast`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upcasts: Vec<UpcastInfo>,
}

impl HandledEvent {
    /// Whether the subscription reads `version` of this event: its own or an upcast one.
    pub fn reads(&self, version: u32) -> bool {
        self.version == version || self.upcasts.iter().any(|u| u.from_version == version)
    }
}

/// An older version a subscription converts with an upcaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpcastInfo {
    /// The old version.
    pub from_version: u32,
    /// The Rust type of the old shape.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The JSON Schema of the old shape, `null` without one.
    pub schema: Option<Value>,
}

/// A retry policy as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryInfo {
    /// Handler runs per delivery.
    pub immediate: u32,
    /// Delayed redeliveries before the dead letter.
    pub redeliveries: u32,
    /// The first redelivery delay, in milliseconds.
    pub first_delay_ms: u64,
    /// The factor each delay grows by.
    pub factor: f32,
    /// The longest delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Whether delays get random jitter.
    pub jitter: bool,
}

impl ServiceCatalog {
    /// The spec a bus of this service subscribes with for `subscription` (one of
    /// [`subscriptions`](Self::subscriptions)): broker names with the namespace, the
    /// handled events and the prefetch, for tools that operate on the subscription
    /// through the transport (dead letters, backlog).
    pub fn subscription_spec(
        &self,
        subscription: &SubscriptionInfo,
    ) -> crate::transport::SubscriptionSpec {
        let name = match &self.namespace {
            Some(ns) => format!("{ns}.{}", subscription.name),
            None => subscription.name.clone(),
        };
        let events = subscription
            .handles
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let mut spec = crate::transport::SubscriptionSpec::new(
            &self.service,
            name,
            &subscription.broker_topic,
            events,
        );
        if let Some(prefetch) = subscription.prefetch {
            spec.prefetch = prefetch;
        }
        spec
    }

    /// The catalog as pretty JSON with a final newline: the file `tidings` reads.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a catalog serialises");
        json.push('\n');
        json
    }

    /// Read a catalog document; the error names what is wrong and where.
    pub fn from_json(json: &str) -> std::result::Result<Self, String> {
        if !json.trim_start().starts_with('{') {
            return Err("not a tidings catalog: it is not a JSON object (`{\"tidings_catalog\": 1, \"service\": ..}`); regenerate it from the service's bus with `bus.catalog().to_json()`".into());
        }
        let catalog: ServiceCatalog = serde_json::from_str(json).map_err(|e| {
            format!("not a tidings catalog: {e} (regenerate it from the service's bus with `bus.catalog().to_json()`)")
        })?;
        if catalog.tidings_catalog != CATALOG_FORMAT {
            return Err(format!(
                "catalog format {} is not supported (this version reads format {CATALOG_FORMAT}): regenerate it with this version of tidings",
                catalog.tidings_catalog
            ));
        }
        Ok(catalog)
    }

    /// Write the catalog to `dir/<service>.json`, creating `dir`; returns the path.
    pub fn write_to_dir(
        &self,
        dir: impl AsRef<std::path::Path>,
    ) -> std::io::Result<std::path::PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.service));
        std::fs::write(&path, self.to_json())?;
        Ok(path)
    }
}

/// The payload schema of the event named `name`, from a topic's `event_schema`.
pub(crate) type TopicSchemas = fn(&str) -> Option<Value>;

/// What the builder keeps for the catalog besides what it keeps anyway.
#[derive(Default)]
pub(crate) struct Sources {
    pub(crate) transport: TransportInfo,
    pub(crate) topic_schemas: HashMap<&'static str, TopicSchemas>,
}

/// An upcaster as the catalog sees it: registered by `Subscription::upcast`.
#[derive(Clone, Copy)]
pub(crate) struct UpcastSource {
    pub(crate) name: &'static str,
    pub(crate) from_version: u32,
    pub(crate) type_name: &'static str,
    pub(crate) schema: fn() -> Option<Value>,
}

impl UpcastSource {
    pub(crate) fn of<Old: crate::Event>() -> Self {
        let full = std::any::type_name::<Old>();
        UpcastSource {
            name: Old::NAME,
            from_version: Old::VERSION,
            type_name: full.rsplit("::").next().unwrap_or(full),
            schema: Old::payload_schema,
        }
    }
}

/// Everything `BusBuilder::catalog` reads, borrowed from the builder.
pub(crate) struct BusParts<'a> {
    pub(crate) service: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) codec: &'static str,
    pub(crate) retry: &'a crate::RetryPolicy,
    pub(crate) topics: &'a [(&'static str, &'static [crate::EventInfo])],
    pub(crate) subscriptions: &'a [crate::subscription::ErasedSubscription],
    pub(crate) sources: &'a Sources,
}

impl BusParts<'_> {
    fn broker(&self, name: &str) -> String {
        match self.namespace {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_string(),
        }
    }

    pub(crate) fn catalog(&self) -> ServiceCatalog {
        let publishes = self
            .topics
            .iter()
            .map(|(topic, events)| {
                let schemas = self.sources.topic_schemas.get(topic);
                PublishedTopic {
                    topic: topic.to_string(),
                    broker_topic: self.broker(topic),
                    events: events
                        .iter()
                        .map(|e| EventContract {
                            name: e.name.to_string(),
                            version: e.version,
                            type_name: e.type_name.to_string(),
                            schema: schemas.and_then(|f| f(e.name)),
                        })
                        .collect(),
                }
            })
            .collect();
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|s| {
                let handles = s
                    .handlers
                    .iter()
                    .map(|h| {
                        let info = s.topic_events.iter().find(|e| e.name == h.name);
                        let mut upcasts: Vec<UpcastInfo> = s
                            .upcast_sources
                            .iter()
                            .filter(|u| u.name == h.name)
                            .map(|u| UpcastInfo {
                                from_version: u.from_version,
                                type_name: u.type_name.to_string(),
                                schema: (u.schema)(),
                            })
                            .collect();
                        upcasts.sort_by_key(|u| u.from_version);
                        upcasts.dedup_by_key(|u| u.from_version);
                        HandledEvent {
                            name: h.name.to_string(),
                            version: h.version,
                            type_name: info.map(|i| i.type_name).unwrap_or(h.name).to_string(),
                            schema: (s.topic_schemas)(h.name),
                            upcasts,
                        }
                    })
                    .collect();
                SubscriptionInfo {
                    name: s.name.clone().unwrap_or_else(|| self.service.to_string()),
                    topic: s.topic.to_string(),
                    broker_topic: self.broker(s.topic),
                    handles,
                    retry: s.policy.as_ref().unwrap_or(self.retry).catalog(),
                    concurrency: s.concurrency,
                    prefetch: s.prefetch,
                }
            })
            .collect();
        ServiceCatalog {
            tidings_catalog: CATALOG_FORMAT,
            service: self.service.to_string(),
            namespace: self.namespace.map(str::to_string),
            transport: self.sources.transport.clone(),
            codec: self.codec.to_string(),
            publishes,
            subscriptions,
        }
    }
}
