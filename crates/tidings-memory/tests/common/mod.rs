//! Hand-written events and helpers shared by the memory transport's tests.
#![allow(dead_code, unreachable_pub)]

use serde::{Deserialize, Serialize};
use tidings_core::{
    transport::{SubscriptionSpec, Topology},
    Envelope, Event, EventInfo, Topic, TopicMember,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Borrowed {
    pub book: u32,
    pub key: Option<String>,
}

impl Event for Borrowed {
    const NAME: &'static str = "lending.book-borrowed";
    const VERSION: u32 = 1;
    fn ordering_key(&self) -> Option<String> {
        self.key.clone()
    }
}
impl TopicMember for Borrowed {
    type Topic = Lending;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Returned {
    pub book: u32,
}

impl Event for Returned {
    const NAME: &'static str = "lending.book-returned";
    const VERSION: u32 = 1;
}
impl TopicMember for Returned {
    type Topic = Lending;
}

pub struct Lending;

impl Topic for Lending {
    const NAME: &'static str = "lending";
    fn events() -> &'static [EventInfo] {
        &[
            EventInfo {
                name: Borrowed::NAME,
                version: 1,
                type_name: "Borrowed",
            },
            EventInfo {
                name: Returned::NAME,
                version: 1,
                type_name: "Returned",
            },
        ]
    }
}

pub fn borrowed(book: u32) -> Borrowed {
    Borrowed { book, key: None }
}

/// A subscription spec for raw transport tests.
pub fn spec(name: &str, topic: &str, events: &[&str]) -> SubscriptionSpec {
    SubscriptionSpec::new(
        name,
        name,
        topic,
        events.iter().map(|e| e.to_string()).collect(),
    )
}

/// A topology holding `specs`.
pub fn topology(specs: &[&SubscriptionSpec]) -> Topology {
    let mut t = Topology::new("test");
    t.subscriptions = specs.iter().map(|s| (*s).clone()).collect();
    t
}

/// An envelope of wire name `event_type` with a small payload.
pub fn env(event_type: &'static str) -> Envelope {
    Envelope::new(event_type, 1, "test", "application/msgpack", &b"\x80"[..])
}
