//! The events, handler state and helpers the transport tests share.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Context, HandlerError};
use tidings_macros::{Event, Topic};
use tidings_servicebus::ServiceBus;
use tokio::sync::Notify;

use crate::support;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sbtest.thing-happened", version = 1)]
pub struct ThingHappened {
    pub n: u64,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sbtest.other-thing", version = 1)]
pub struct OtherThing {
    pub n: u64,
}

#[derive(Debug, Clone, Topic)]
#[topic(name = "things")]
pub enum Things {
    ThingHappened(ThingHappened),
    OtherThing(OtherThing),
}

/// What handlers saw.
#[derive(Default)]
pub struct Seen {
    runs: Mutex<Vec<(u64, u32)>>,
    changed: Notify,
}

impl Seen {
    pub fn record(&self, n: u64, attempt: u32) {
        self.runs.lock().unwrap().push((n, attempt));
        self.changed.notify_waiters();
    }
    pub fn runs(&self) -> Vec<(u64, u32)> {
        self.runs.lock().unwrap().clone()
    }
    pub async fn wait_for(&self, count: usize) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.runs.lock().unwrap().len() >= count {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("expected {count} handler runs, saw {:?}", self.runs()));
    }
}

pub async fn record_thing(e: ThingHappened, cx: Context<Seen>) -> Result<(), HandlerError> {
    cx.state().record(e.n, cx.attempt());
    Ok(())
}

pub fn transport() -> ServiceBus {
    ServiceBus::new(support::config()).unwrap()
}

/// Whether the test runs against the in-process server.
pub fn in_process() -> bool {
    support::in_process_server()
}
