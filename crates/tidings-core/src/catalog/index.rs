//! The catalogs of a workspace by wire name: who publishes each event and who handles it.

use std::collections::BTreeMap;

use super::{EventContract, HandledEvent, ServiceCatalog};

/// A service publishing an event.
#[derive(Debug, Clone, Copy)]
pub struct Publisher<'a> {
    /// The publishing service.
    pub service: &'a str,
    /// The topic the event is published to.
    pub topic: &'a str,
    /// The event as the publisher's code defines it.
    pub contract: &'a EventContract,
    /// The publisher's codec (content type).
    pub codec: &'a str,
}

/// A subscription handling an event.
#[derive(Debug, Clone, Copy)]
pub struct Handler<'a> {
    /// The subscribing service.
    pub service: &'a str,
    /// The subscription's name.
    pub subscription: &'a str,
    /// The topic it subscribes to.
    pub topic: &'a str,
    /// The event as the subscriber's code reads it.
    pub handled: &'a HandledEvent,
}

/// Every event of a set of catalogs, by wire name (sorted), with its publishers and
/// handlers.
#[derive(Debug, Default)]
pub struct Index<'a> {
    /// Publishers of each wire name.
    pub publishers: BTreeMap<&'a str, Vec<Publisher<'a>>>,
    /// Handlers of each wire name.
    pub handlers: BTreeMap<&'a str, Vec<Handler<'a>>>,
}

impl<'a> Index<'a> {
    /// Index `catalogs`.
    pub fn new(catalogs: &'a [ServiceCatalog]) -> Self {
        let mut index = Index::default();
        for c in catalogs {
            for t in &c.publishes {
                for e in &t.events {
                    index
                        .publishers
                        .entry(&e.name)
                        .or_default()
                        .push(Publisher {
                            service: &c.service,
                            topic: &t.topic,
                            contract: e,
                            codec: &c.codec,
                        });
                }
            }
            for s in &c.subscriptions {
                for h in &s.handles {
                    index.handlers.entry(&h.name).or_default().push(Handler {
                        service: &c.service,
                        subscription: &s.name,
                        topic: &s.topic,
                        handled: h,
                    });
                }
            }
        }
        index
    }

    /// Every wire name, published or handled, sorted.
    pub fn names(&self) -> Vec<&'a str> {
        let mut names: Vec<&'a str> = self
            .publishers
            .keys()
            .chain(self.handlers.keys())
            .copied()
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The publishers of `name` (none if nobody publishes it).
    pub fn publishers_of(&self, name: &str) -> &[Publisher<'a>] {
        self.publishers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The handlers of `name` (none if nobody handles it).
    pub fn handlers_of(&self, name: &str) -> &[Handler<'a>] {
        self.handlers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}
