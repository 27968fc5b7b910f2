//! The subscriptions of the catalogs, each with the key its pages are found by and the
//! spec the transport operates on, and the payload schemas of the events they handle.

use serde_json::Value;
use tidings_core::catalog::{ServiceCatalog, SubscriptionInfo};
use tidings_core::transport::SubscriptionSpec;

/// One subscription of a service.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    /// `<service>~<subscription>~<topic>` (broker names): stable across restarts.
    pub(crate) key: String,
    pub(crate) service: String,
    pub(crate) info: SubscriptionInfo,
    pub(crate) spec: SubscriptionSpec,
}

/// Every subscription of the catalogs, by service, then topic.
#[derive(Debug, Clone)]
pub(crate) struct Subscriptions(Vec<Sub>);

impl Subscriptions {
    pub(crate) fn new(catalogs: &[ServiceCatalog]) -> Self {
        let mut subs: Vec<Sub> = catalogs
            .iter()
            .flat_map(|c| {
                c.subscriptions.iter().map(move |info| {
                    let spec = c.subscription_spec(info);
                    Sub {
                        key: format!("{}~{}~{}", c.service, spec.name, spec.topic),
                        service: c.service.clone(),
                        info: info.clone(),
                        spec,
                    }
                })
            })
            .collect();
        subs.sort_by(|a, b| a.key.cmp(&b.key));
        subs.dedup_by(|a, b| a.key == b.key);
        Subscriptions(subs)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Sub> {
        self.0.iter().find(|s| s.key == key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Sub> {
        self.0.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The JSON Schema an edited payload of `event` at `version` must meet for `sub`: the
/// handler's schema when it reads that version, the upcast's when it upcasts it, else the
/// publisher's contract of that version in any catalog. `None` when no catalog has one.
pub(crate) fn schema_for<'a>(
    catalogs: &'a [ServiceCatalog],
    sub: &'a Sub,
    event: &str,
    version: u32,
) -> Option<&'a Value> {
    let handled = sub.info.handles.iter().find(|h| h.name == event);
    let from_handler = handled.and_then(|h| {
        if h.version == version {
            h.schema.as_ref()
        } else {
            h.upcasts
                .iter()
                .find(|u| u.from_version == version)
                .and_then(|u| u.schema.as_ref())
        }
    });
    from_handler.or_else(|| {
        catalogs
            .iter()
            .flat_map(|c| &c.publishes)
            .flat_map(|t| &t.events)
            .find(|e| e.name == event && e.version == version)
            .and_then(|e| e.schema.as_ref())
    })
}
