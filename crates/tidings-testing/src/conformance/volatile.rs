//! The contracts of the panic case: an event whose decoding, upcasting and handler can be
//! made to panic on demand, on a topic of its own.
//!
//! - [`Volatile`] v2 (`conformance-volatile.volatile`): a number, an ordering key and a
//!   [`Volatile::fault`] that says where user code should panic: `"deserialize"` (its
//!   `Deserialize`), `"sync"` (the synchronous part of the handler's `handle`), `"future"`
//!   (the handler's future), or nothing (`""`, handled normally);
//! - [`VolatileV1`]: its old shape, whose upcast (`From`) panics on `"upcast"`.

use std::future::Future;

use serde::{Deserialize, Deserializer, Serialize};
use tidings_core::{Codec, Context, Event, EventInfo, Handler, HandlerError, Publishable};
use tidings_core::{Result, Topic, TopicMember};

use super::support::{Seen, Tap};

/// The panic message every volatile fault uses, so a dead letter can be matched to it.
pub(crate) const PANIC_MARK: &str = "conformance volatile fault";

/// An event that can make user code panic wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Volatile {
    /// Identifies it within a case.
    pub(crate) n: u64,
    /// The ordering key (every volatile event of a case shares one, so a panic that
    /// stopped the key's lane would show).
    pub(crate) key: String,
    /// Where to panic: `"deserialize"`, `"sync"`, `"future"`, or `""` for nowhere.
    #[serde(deserialize_with = "panicking_fault")]
    pub(crate) fault: String,
}

fn panicking_fault<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let fault = String::deserialize(d)?;
    if fault == "deserialize" {
        panic!("{PANIC_MARK}: in Deserialize");
    }
    Ok(fault)
}

impl Event for Volatile {
    const NAME: &'static str = "conformance-volatile.volatile";
    const VERSION: u32 = 2;
    fn ordering_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

impl TopicMember for Volatile {
    type Topic = VolatileEvents;
}

/// Version 1 of [`Volatile`]; upcasting it panics when its fault is `"upcast"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolatileV1 {
    /// Identifies it within a case.
    pub(crate) n: u64,
    /// The ordering key.
    pub(crate) key: String,
    /// `"upcast"` makes the upcast panic.
    pub(crate) fault: String,
}

impl Event for VolatileV1 {
    const NAME: &'static str = Volatile::NAME;
    const VERSION: u32 = 1;
    fn ordering_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

impl TopicMember for VolatileV1 {
    type Topic = VolatileEventsV1;
}

impl From<VolatileV1> for Volatile {
    fn from(old: VolatileV1) -> Self {
        if old.fault == "upcast" {
            panic!("{PANIC_MARK}: in an upcast");
        }
        Volatile {
            n: old.n,
            key: old.key,
            fault: old.fault,
        }
    }
}

/// A handler that panics where the event says, and records the runs that get through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VolatileHandler;

impl Handler<Volatile, Tap> for VolatileHandler {
    fn handle(
        &self,
        event: Volatile,
        cx: Context<Tap>,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send {
        if event.fault == "sync" {
            panic!("{PANIC_MARK}: in the synchronous part of handle");
        }
        async move {
            if event.fault == "future" {
                panic!("{PANIC_MARK}: in the handler's future");
            }
            let tap = cx.state();
            tap.probe.record(Seen::of(
                tap.label,
                Volatile::NAME,
                event.n,
                &event.key,
                &cx,
            ));
            Ok(())
        }
    }
}

macro_rules! one_event_topic {
    ($topic:ident, $event:ident, $variant:literal) => {
        #[doc = concat!("The volatile topic with one event, [`", stringify!($event), "`].")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(dead_code)] // a type subscriptions name; no value of it is built
        pub(crate) enum $topic {
            #[doc = concat!("A [`", stringify!($event), "`].")]
            $event($event),
        }

        impl Topic for $topic {
            const NAME: &'static str = "conformance-volatile";
            fn events() -> &'static [EventInfo] {
                static EVENTS: [EventInfo; 1] = [EventInfo {
                    name: $event::NAME,
                    version: $event::VERSION,
                    type_name: $variant,
                }];
                &EVENTS
            }
        }

        impl Publishable for $topic {
            type Topic = $topic;
            fn event_name(&self) -> &'static str {
                $event::NAME
            }
            fn event_version(&self) -> u32 {
                $event::VERSION
            }
            fn event_ordering_key(&self) -> Option<String> {
                let $topic::$event(e) = self;
                Publishable::event_ordering_key(e)
            }
            fn encode(&self, codec: Codec) -> Result<Vec<u8>> {
                let $topic::$event(e) = self;
                e.encode(codec)
            }
        }
    };
}

one_event_topic!(VolatileEvents, Volatile, "Volatile");
one_event_topic!(VolatileEventsV1, VolatileV1, "VolatileV1");
