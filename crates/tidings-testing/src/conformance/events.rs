//! The contracts the suite publishes and handles: a small topic written out by hand (not
//! derived) so the suite depends on nothing but the core traits.
//!
//! - [`Ping`] v2 (`conformance.ping`): a number and an ordering key (an empty key means
//!   no ordering key, so the transport's own delayed redelivery is used on retries);
//! - [`PingV1`]: the old shape of `conformance.ping`, upcast to [`Ping`];
//! - [`Pong`] (`conformance.pong`): what a `Ping` handler publishes in the correlation case;
//! - [`Unhandled`] (`conformance.unhandled`): an event subscriptions deliberately have no
//!   handler for;
//! - [`StrayEvents`]: a topic no bus of the suite declares;
//! - [`ClashEvents`]: a topic whose event reuses `conformance.ping`'s wire name.

use serde::{Deserialize, Serialize};
use tidings_core::{Codec, Event, EventInfo, Publishable, Result, Topic, TopicMember};

/// The name of the suite's topic (prefixed by each case's namespace on the broker).
pub(crate) const TOPIC: &str = "conformance";

/// The key an upcast [`PingV1`] gets, so handlers can tell it went through the upcaster.
pub(crate) const UPCAST_KEY: &str = "upcast-from-v1";

/// The current (v2) ping: a number to identify it and an ordering key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ping {
    /// Identifies the ping within a case.
    pub(crate) n: u64,
    /// The ordering key; empty for none.
    pub(crate) key: String,
}

impl Ping {
    /// A ping with an ordering key.
    pub(crate) fn keyed(n: u64, key: impl Into<String>) -> Self {
        Ping { n, key: key.into() }
    }

    /// A ping without an ordering key.
    pub(crate) fn unkeyed(n: u64) -> Self {
        Ping {
            n,
            key: String::new(),
        }
    }
}

impl Event for Ping {
    const NAME: &'static str = "conformance.ping";
    const VERSION: u32 = 2;
    fn ordering_key(&self) -> Option<String> {
        (!self.key.is_empty()).then(|| self.key.clone())
    }
}

impl TopicMember for Ping {
    type Topic = ConfEvents;
}

/// Version 1 of `conformance.ping`: only a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PingV1 {
    /// Identifies the ping within a case.
    pub(crate) n: u64,
}

impl Event for PingV1 {
    const NAME: &'static str = "conformance.ping";
    const VERSION: u32 = 1;
}

impl TopicMember for PingV1 {
    type Topic = ConfEventsV1;
}

impl From<PingV1> for Ping {
    fn from(old: PingV1) -> Self {
        Ping {
            n: old.n,
            key: UPCAST_KEY.to_string(),
        }
    }
}

/// The reply a handler publishes from inside a `Ping` handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pong {
    /// The number of the ping it answers.
    pub(crate) n: u64,
}

impl Event for Pong {
    const NAME: &'static str = "conformance.pong";
    const VERSION: u32 = 1;
}

impl TopicMember for Pong {
    type Topic = ConfEvents;
}

/// An event of the topic that subscriptions in the suite leave without a handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unhandled {
    /// Identifies it within a case.
    pub(crate) n: u64,
}

impl Event for Unhandled {
    const NAME: &'static str = "conformance.unhandled";
    const VERSION: u32 = 1;
}

impl TopicMember for Unhandled {
    type Topic = ConfEvents;
}

/// The suite's topic, current versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfEvents {
    /// A [`Ping`].
    Ping(Ping),
    /// A [`Pong`].
    Pong(Pong),
    /// An [`Unhandled`].
    Unhandled(Unhandled),
}

static CONF_EVENTS: [EventInfo; 3] = [
    EventInfo {
        name: Ping::NAME,
        version: Ping::VERSION,
        type_name: "Ping",
    },
    EventInfo {
        name: Pong::NAME,
        version: Pong::VERSION,
        type_name: "Pong",
    },
    EventInfo {
        name: Unhandled::NAME,
        version: Unhandled::VERSION,
        type_name: "Unhandled",
    },
];

impl Topic for ConfEvents {
    const NAME: &'static str = TOPIC;
    fn events() -> &'static [EventInfo] {
        &CONF_EVENTS
    }
}

impl Publishable for ConfEvents {
    type Topic = ConfEvents;
    fn event_name(&self) -> &'static str {
        match self {
            ConfEvents::Ping(e) => e.event_name(),
            ConfEvents::Pong(e) => e.event_name(),
            ConfEvents::Unhandled(e) => e.event_name(),
        }
    }
    fn event_version(&self) -> u32 {
        match self {
            ConfEvents::Ping(e) => e.event_version(),
            ConfEvents::Pong(e) => e.event_version(),
            ConfEvents::Unhandled(e) => e.event_version(),
        }
    }
    fn event_ordering_key(&self) -> Option<String> {
        match self {
            ConfEvents::Ping(e) => Publishable::event_ordering_key(e),
            ConfEvents::Pong(e) => Publishable::event_ordering_key(e),
            ConfEvents::Unhandled(e) => Publishable::event_ordering_key(e),
        }
    }
    fn encode(&self, codec: Codec) -> Result<Vec<u8>> {
        match self {
            ConfEvents::Ping(e) => e.encode(codec),
            ConfEvents::Pong(e) => e.encode(codec),
            ConfEvents::Unhandled(e) => e.encode(codec),
        }
    }
}

impl From<Ping> for ConfEvents {
    fn from(e: Ping) -> Self {
        ConfEvents::Ping(e)
    }
}

impl From<Pong> for ConfEvents {
    fn from(e: Pong) -> Self {
        ConfEvents::Pong(e)
    }
}

impl From<Unhandled> for ConfEvents {
    fn from(e: Unhandled) -> Self {
        ConfEvents::Unhandled(e)
    }
}

/// The suite's topic as an older publisher knows it: the same topic name, with `Ping` at
/// version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // a type subscriptions name; no value of it is built
pub(crate) enum ConfEventsV1 {
    /// A [`PingV1`].
    PingV1(PingV1),
}

static CONF_EVENTS_V1: [EventInfo; 1] = [EventInfo {
    name: PingV1::NAME,
    version: PingV1::VERSION,
    type_name: "PingV1",
}];

impl Topic for ConfEventsV1 {
    const NAME: &'static str = TOPIC;
    fn events() -> &'static [EventInfo] {
        &CONF_EVENTS_V1
    }
}

/// The contract of a topic with one event, written out by hand like the rest: `Event` for
/// `$event` (wire name `$name`, version 1) and the topic enum `$topic` named `$topic_name`.
macro_rules! one_event_topic {
    ($(#[$doc:meta])* $topic:ident($event:ident) = $topic_name:expr, $name:expr) => {
        impl tidings_core::Event for $event {
            const NAME: &'static str = $name;
            const VERSION: u32 = 1;
        }

        impl tidings_core::TopicMember for $event {
            type Topic = $topic;
        }

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(dead_code)] // a type subscriptions name; no value of it is built
        pub(crate) enum $topic {
            #[doc = concat!("A [`", stringify!($event), "`].")]
            $event($event),
        }

        impl tidings_core::Topic for $topic {
            const NAME: &'static str = $topic_name;
            fn events() -> &'static [tidings_core::EventInfo] {
                static EVENTS: [tidings_core::EventInfo; 1] = [tidings_core::EventInfo {
                    name: $name,
                    version: 1,
                    type_name: stringify!($event),
                }];
                &EVENTS
            }
        }
    };
}
pub(crate) use one_event_topic;

/// An event of a topic that no bus in the suite declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stray {
    /// Anything.
    pub(crate) n: u64,
}

one_event_topic! {
    /// A topic no bus of the suite declares.
    StrayEvents(Stray) = "conformance-stray", "conformance-stray.stray"
}

/// An event of another topic that reuses `conformance.ping`'s wire name: a bus that knows
/// both [`ConfEvents`] and [`ClashEvents`] must refuse to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Clash {
    /// Anything.
    pub(crate) n: u64,
}

one_event_topic! {
    /// A topic whose one event clashes with [`Ping`]'s wire name.
    ClashEvents(Clash) = "conformance-clash", Ping::NAME
}
