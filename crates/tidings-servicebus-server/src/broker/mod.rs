//! The namespace's state: topics, subscriptions with their rules, and the messages of each
//! subscription and of its dead-letter subqueue, with locks, delivery counts, scheduled
//! enqueue times and time-to-live.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::filter::Filter;
use crate::util::MAX_TTL;

mod dead_letter;
mod entities;
mod settlement;

/// A protocol error: the HTTP status and a message for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault(pub(crate) u16, pub(crate) String);

impl Fault {
    pub(crate) fn gone(what: impl std::fmt::Display) -> Self {
        Fault(
            410,
            format!("MessagingEntityNotFound: {what} does not exist"),
        )
    }
    pub(crate) fn bad(what: impl std::fmt::Display) -> Self {
        Fault(400, format!("BadRequest: {what}"))
    }
}

/// One message as stored in a subscription or its dead-letter subqueue.
#[derive(Debug, Clone, Default)]
pub(crate) struct Message {
    pub(crate) sequence_number: i64,
    pub(crate) message_id: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) reply_to_session_id: Option<String>,
    pub(crate) partition_key: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) time_to_live: Option<Duration>,
    pub(crate) scheduled_enqueue_time: Option<SystemTime>,
    pub(crate) enqueued_time: Option<SystemTime>,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) body: Bytes,
    pub(crate) delivery_count: u32,
    pub(crate) lock: Option<Lock>,
    pub(crate) expires_at: Option<SystemTime>,
}

/// A peek-lock: its token and when it runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) token: Uuid,
    pub(crate) until: SystemTime,
}

impl Message {
    /// A custom (user) property, by case-insensitive name.
    pub(crate) fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_property(&mut self, name: &str, value: String) {
        match self
            .properties
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.properties.push((name.to_string(), value)),
        }
    }

    /// A system property as the SQL filter's `sys.` scope names it.
    pub(crate) fn system_property(&self, name: &str) -> Option<String> {
        match name.to_ascii_lowercase().as_str() {
            "label" | "subject" => self.label.clone(),
            "messageid" => self.message_id.clone(),
            "correlationid" => self.correlation_id.clone(),
            "to" => self.to.clone(),
            "replyto" => self.reply_to.clone(),
            "sessionid" => self.session_id.clone(),
            "replytosessionid" => self.reply_to_session_id.clone(),
            "contenttype" => self.content_type.clone(),
            "deliverycount" => Some(self.delivery_count.to_string()),
            "sequencenumber" => Some(self.sequence_number.to_string()),
            _ => None,
        }
    }

    fn locked_at(&self, now: SystemTime) -> bool {
        self.lock.is_some_and(|l| l.until > now)
    }
}

/// A topic and its subscriptions.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) created: SystemTime,
    pub(crate) updated: SystemTime,
    pub(crate) default_ttl: Duration,
    pub(crate) max_size_mb: u64,
    pub(crate) subscriptions: BTreeMap<String, Subscription>,
    next_sequence: i64,
}

/// A subscription: settings, rules, messages and dead letters.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) name: String,
    pub(crate) created: SystemTime,
    pub(crate) updated: SystemTime,
    pub(crate) settings: SubscriptionSettings,
    pub(crate) rules: BTreeMap<String, Rule>,
    pub(crate) active: BTreeMap<i64, Message>,
    /// Messages sent with a `ScheduledEnqueueTimeUtc` ahead, by that time: they join
    /// `active` when it comes (kept apart so receiving never scans them).
    pub(crate) scheduled: BTreeMap<(SystemTime, i64), Message>,
    pub(crate) dead_letters: BTreeMap<i64, Message>,
    pub(crate) notify: Arc<Notify>,
    /// No lock and no time-to-live in this subscription runs out before this time (a lower
    /// bound, lowered whenever one is set): housekeeping scans the queues only once it has
    /// come, not on every receive.
    pub(crate) next_expiry: Option<SystemTime>,
}

/// The settable parts of a subscription description.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionSettings {
    pub(crate) lock_duration: Duration,
    pub(crate) max_delivery_count: u32,
    pub(crate) default_ttl: Duration,
    pub(crate) dead_lettering_on_message_expiration: bool,
    pub(crate) dead_lettering_on_filter_evaluation_exceptions: bool,
}

/// A rule: a name and a filter (rule actions are not supported).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) filter: Filter,
    pub(crate) created: SystemTime,
}

/// Which queue of a subscription an operation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubQueue {
    Active,
    DeadLetter,
}

/// How a receive takes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiveMode {
    PeekLock,
    ReceiveAndDelete,
}

/// The outcome of one attempt to receive.
pub(crate) enum Receive {
    Message(Box<Message>),
    /// Nothing available now; something may become available at this time (a lock or a
    /// schedule running out).
    Empty(Option<SystemTime>),
}

/// Defaults for new entities, and limits.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) lock_duration: Duration,
    pub(crate) max_delivery_count: u32,
    pub(crate) max_message_size: usize,
}

/// The broker state of one namespace.
#[derive(Debug)]
pub(crate) struct Broker {
    topics: Mutex<BTreeMap<String, Topic>>,
    pub(crate) limits: Limits,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Broker {
    pub(crate) fn new(limits: Limits) -> Self {
        Broker {
            topics: Mutex::new(BTreeMap::new()),
            limits,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn default_settings(&self) -> SubscriptionSettings {
        SubscriptionSettings {
            lock_duration: self.limits.lock_duration,
            max_delivery_count: self.limits.max_delivery_count,
            default_ttl: MAX_TTL,
            dead_lettering_on_message_expiration: false,
            dead_lettering_on_filter_evaluation_exceptions: true,
        }
    }

    fn with_subscription<R>(
        &self,
        topic: &str,
        sub: &str,
        missing_status: u16,
        f: impl FnOnce(&mut Subscription) -> R,
    ) -> Result<R, Fault> {
        let mut topics = self.lock();
        let s = topics
            .get_mut(&key(topic))
            .and_then(|t| t.subscriptions.get_mut(&key(sub)))
            .ok_or_else(|| {
                Fault(
                    missing_status,
                    format!("MessagingEntityNotFound: subscription {topic}/{sub} does not exist"),
                )
            })?;
        Ok(f(s))
    }
}
