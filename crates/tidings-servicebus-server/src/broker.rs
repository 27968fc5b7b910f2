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
    pub(crate) dead_letters: BTreeMap<i64, Message>,
    pub(crate) notify: Arc<Notify>,
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

    // ---- management ----

    /// Create a topic; `Err(409)` if it exists.
    pub(crate) fn create_topic(
        &self,
        name: &str,
        default_ttl: Option<Duration>,
        max_size_mb: Option<u64>,
    ) -> Result<(), Fault> {
        let mut topics = self.lock();
        if topics.contains_key(&key(name)) {
            return Err(Fault(
                409,
                format!("MessagingEntityAlreadyExists: topic {name} already exists"),
            ));
        }
        let now = SystemTime::now();
        topics.insert(
            key(name),
            Topic {
                name: name.to_string(),
                created: now,
                updated: now,
                default_ttl: default_ttl.unwrap_or(MAX_TTL),
                max_size_mb: max_size_mb.unwrap_or(1024),
                subscriptions: BTreeMap::new(),
                next_sequence: 1,
            },
        );
        Ok(())
    }

    pub(crate) fn update_topic(
        &self,
        name: &str,
        default_ttl: Option<Duration>,
        max_size_mb: Option<u64>,
    ) -> Result<(), Fault> {
        let mut topics = self.lock();
        let t = topics
            .get_mut(&key(name))
            .ok_or_else(|| Fault(404, format!("topic {name} does not exist")))?;
        if let Some(ttl) = default_ttl {
            t.default_ttl = ttl;
        }
        if let Some(m) = max_size_mb {
            t.max_size_mb = m;
        }
        t.updated = SystemTime::now();
        Ok(())
    }

    pub(crate) fn delete_topic(&self, name: &str) -> Result<(), Fault> {
        let removed = self.lock().remove(&key(name));
        match removed {
            Some(t) => {
                for s in t.subscriptions.values() {
                    s.notify.notify_waiters();
                }
                Ok(())
            }
            None => Err(Fault(
                404,
                format!("MessagingEntityNotFound: topic {name} does not exist"),
            )),
        }
    }

    pub(crate) fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        settings: SubscriptionSettings,
        default_rule: Option<Filter>,
    ) -> Result<(), Fault> {
        let mut topics = self.lock();
        let t = topics.get_mut(&key(topic)).ok_or_else(|| {
            Fault(
                404,
                format!("MessagingEntityNotFound: topic {topic} does not exist"),
            )
        })?;
        if t.subscriptions.contains_key(&key(name)) {
            return Err(Fault(
                409,
                format!("MessagingEntityAlreadyExists: subscription {topic}/{name} already exists"),
            ));
        }
        let now = SystemTime::now();
        let mut rules = BTreeMap::new();
        rules.insert(
            key("$Default"),
            Rule {
                name: "$Default".into(),
                filter: default_rule.unwrap_or(Filter::True),
                created: now,
            },
        );
        t.subscriptions.insert(
            key(name),
            Subscription {
                name: name.to_string(),
                created: now,
                updated: now,
                settings,
                rules,
                active: BTreeMap::new(),
                dead_letters: BTreeMap::new(),
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(())
    }

    pub(crate) fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        settings: SubscriptionSettings,
    ) -> Result<(), Fault> {
        self.with_subscription(topic, name, 404, |s| {
            s.settings = settings;
            s.updated = SystemTime::now();
        })
    }

    pub(crate) fn delete_subscription(&self, topic: &str, name: &str) -> Result<(), Fault> {
        let mut topics = self.lock();
        let t = topics.get_mut(&key(topic)).ok_or_else(|| {
            Fault(
                404,
                format!("MessagingEntityNotFound: topic {topic} does not exist"),
            )
        })?;
        match t.subscriptions.remove(&key(name)) {
            Some(s) => {
                s.notify.notify_waiters();
                Ok(())
            }
            None => Err(Fault(
                404,
                format!("MessagingEntityNotFound: subscription {topic}/{name} does not exist"),
            )),
        }
    }

    /// Create (or with `update`, replace) a rule.
    pub(crate) fn put_rule(
        &self,
        topic: &str,
        sub: &str,
        name: &str,
        filter: Filter,
        update: bool,
    ) -> Result<bool, Fault> {
        let mut created = false;
        let mut result = Ok(());
        self.with_subscription(topic, sub, 404, |s| match s.rules.get_mut(&key(name)) {
            Some(rule) if update => rule.filter = filter.clone(),
            Some(_) => {
                result = Err(Fault(
                    409,
                    format!("MessagingEntityAlreadyExists: rule {name} already exists"),
                ));
            }
            None => {
                created = true;
                s.rules.insert(
                    key(name),
                    Rule {
                        name: name.to_string(),
                        filter: filter.clone(),
                        created: SystemTime::now(),
                    },
                );
            }
        })?;
        result.map(|_| created)
    }

    pub(crate) fn delete_rule(&self, topic: &str, sub: &str, name: &str) -> Result<(), Fault> {
        let mut found = false;
        self.with_subscription(topic, sub, 404, |s| {
            found = s.rules.remove(&key(name)).is_some()
        })?;
        if found {
            Ok(())
        } else {
            Err(Fault(
                404,
                format!("MessagingEntityNotFound: rule {name} does not exist"),
            ))
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

    // ---- runtime ----

    /// Enqueue messages to every subscription of `topic` whose rules match (one copy per
    /// subscription however many rules match).
    pub(crate) fn send(&self, topic: &str, messages: Vec<Message>) -> Result<(), Fault> {
        for m in &messages {
            if m.body.len() > self.limits.max_message_size {
                return Err(Fault(
                    403,
                    format!(
                        "MessageSizeExceeded: the message body is {} bytes, over the limit of {} bytes",
                        m.body.len(),
                        self.limits.max_message_size
                    ),
                ));
            }
        }
        let mut topics = self.lock();
        let t = topics
            .get_mut(&key(topic))
            .ok_or_else(|| Fault::gone(format_args!("topic {topic}")))?;
        let now = SystemTime::now();
        for mut m in messages {
            m.sequence_number = t.next_sequence;
            t.next_sequence += 1;
            m.enqueued_time = Some(m.scheduled_enqueue_time.filter(|s| *s > now).unwrap_or(now));
            if m.message_id.is_none() {
                m.message_id = Some(Uuid::new_v4().simple().to_string());
            }
            for s in t.subscriptions.values_mut() {
                if !s.rules.values().any(|r| r.filter.matches(&m)) {
                    continue;
                }
                let mut copy = m.clone();
                let ttl = [
                    copy.time_to_live,
                    Some(s.settings.default_ttl),
                    Some(t.default_ttl),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(MAX_TTL);
                copy.time_to_live = Some(ttl);
                copy.expires_at = copy.enqueued_time.and_then(|e| e.checked_add(ttl));
                s.active.insert(copy.sequence_number, copy);
                s.notify.notify_waiters();
            }
        }
        Ok(())
    }

    /// The notifier of a subscription, to wait for messages.
    pub(crate) fn notifier(&self, topic: &str, sub: &str) -> Result<Arc<Notify>, Fault> {
        self.with_subscription(topic, sub, 410, |s| s.notify.clone())
            .map_err(|_| Fault::gone(format_args!("subscription {topic}/{sub}")))
    }

    /// Take the first available message, if any.
    pub(crate) fn receive(
        &self,
        topic: &str,
        sub: &str,
        queue: SubQueue,
        mode: ReceiveMode,
    ) -> Result<Receive, Fault> {
        let now = SystemTime::now();
        self.with_subscription(topic, sub, 410, |s| {
            s.housekeep(now);
            let settings = s.settings.clone();
            let q = match queue {
                SubQueue::Active => &mut s.active,
                SubQueue::DeadLetter => &mut s.dead_letters,
            };
            let mut wake: Option<SystemTime> = None;
            let mut soonest = |t: SystemTime| wake = Some(wake.map_or(t, |w| w.min(t)));
            let mut chosen = None;
            for (seq, m) in q.iter() {
                if let Some(lock) = m.lock.filter(|l| l.until > now) {
                    soonest(lock.until);
                    continue;
                }
                match m.scheduled_enqueue_time {
                    Some(at) if at > now => soonest(at),
                    _ => {
                        chosen = Some(*seq);
                        break;
                    }
                }
            }
            let Some(seq) = chosen else {
                return Receive::Empty(wake);
            };
            match mode {
                ReceiveMode::ReceiveAndDelete => {
                    let mut m = q.remove(&seq).expect("chosen from the map");
                    m.delivery_count += 1;
                    m.lock = None;
                    Receive::Message(Box::new(m))
                }
                ReceiveMode::PeekLock => {
                    let m = q.get_mut(&seq).expect("chosen from the map");
                    m.delivery_count += 1;
                    m.lock = Some(Lock {
                        token: Uuid::new_v4(),
                        until: now + settings.lock_duration,
                    });
                    Receive::Message(Box::new(m.clone()))
                }
            }
        })
        .map_err(|_| Fault::gone(format_args!("subscription {topic}/{sub}")))
    }

    /// Find a locked message by its sequence number or message id and lock token, and
    /// apply `op` to the subscription queue; 404 when no such live lock exists.
    fn with_lock<R>(
        &self,
        topic: &str,
        sub: &str,
        queue: SubQueue,
        id: &str,
        token: &str,
        op: impl FnOnce(&mut Subscription, SubQueue, i64) -> R,
    ) -> Result<R, Fault> {
        let now = SystemTime::now();
        let token = Uuid::parse_str(token).map_err(|_| {
            Fault(
                404,
                format!("MessageLockLost: {token:?} is not a lock token"),
            )
        })?;
        let mut topics = self.lock();
        let s = topics
            .get_mut(&key(topic))
            .and_then(|t| t.subscriptions.get_mut(&key(sub)))
            .ok_or_else(|| Fault::gone(format_args!("subscription {topic}/{sub}")))?;
        let q = match queue {
            SubQueue::Active => &s.active,
            SubQueue::DeadLetter => &s.dead_letters,
        };
        let seq = q
            .iter()
            .find(|(seq, m)| {
                (id.parse::<i64>().ok() == Some(**seq) || m.message_id.as_deref() == Some(id))
                    && m.lock.is_some_and(|l| l.token == token && l.until > now)
            })
            .map(|(seq, _)| *seq)
            .ok_or_else(|| {
                Fault(
                    404,
                    "MessageLockLost: no message was found with the specified MessageId or LockToken (the lock may have expired)".into(),
                )
            })?;
        Ok(op(s, queue, seq))
    }

    /// Complete: delete the locked message.
    pub(crate) fn complete(
        &self,
        topic: &str,
        sub: &str,
        queue: SubQueue,
        id: &str,
        token: &str,
    ) -> Result<(), Fault> {
        self.with_lock(topic, sub, queue, id, token, |s, q, seq| {
            s.queue(q).remove(&seq);
        })
    }

    /// Unlock (abandon): the message is available again; past MaxDeliveryCount it moves to
    /// the dead-letter subqueue.
    pub(crate) fn unlock(
        &self,
        topic: &str,
        sub: &str,
        queue: SubQueue,
        id: &str,
        token: &str,
    ) -> Result<(), Fault> {
        self.with_lock(topic, sub, queue, id, token, |s, q, seq| {
            if let Some(m) = s.queue(q).get_mut(&seq) {
                m.lock = None;
            }
            if q == SubQueue::Active {
                s.dead_letter_if_exhausted(seq);
            }
            s.notify.notify_waiters();
        })
    }

    /// Renew a lock for another lock duration; returns the new expiry.
    pub(crate) fn renew(
        &self,
        topic: &str,
        sub: &str,
        queue: SubQueue,
        id: &str,
        token: &str,
    ) -> Result<SystemTime, Fault> {
        self.with_lock(topic, sub, queue, id, token, |s, q, seq| {
            let until = SystemTime::now() + s.settings.lock_duration;
            if let Some(lock) = s.queue(q).get_mut(&seq).and_then(|m| m.lock.as_mut()) {
                lock.until = until;
            }
            until
        })
    }
}

impl Subscription {
    fn queue(&mut self, q: SubQueue) -> &mut BTreeMap<i64, Message> {
        match q {
            SubQueue::Active => &mut self.active,
            SubQueue::DeadLetter => &mut self.dead_letters,
        }
    }

    /// Release expired locks (dead-lettering messages that used up their deliveries) and
    /// expire messages past their time-to-live.
    fn housekeep(&mut self, now: SystemTime) {
        let expired_locks: Vec<i64> = self
            .active
            .iter()
            .filter(|(_, m)| m.lock.is_some() && !m.locked_at(now))
            .map(|(s, _)| *s)
            .collect();
        for seq in expired_locks {
            if let Some(m) = self.active.get_mut(&seq) {
                m.lock = None;
            }
            self.dead_letter_if_exhausted(seq);
        }
        for m in self.dead_letters.values_mut() {
            if m.lock.is_some() && !m.locked_at(now) {
                m.lock = None;
            }
        }
        let expired: Vec<i64> = self
            .active
            .iter()
            .filter(|(_, m)| !m.locked_at(now) && m.expires_at.is_some_and(|e| e <= now))
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            let m = self.active.remove(&seq).expect("listed above");
            if self.settings.dead_lettering_on_message_expiration {
                self.move_to_dead_letters(
                    m,
                    "TTLExpiredException",
                    "The message expired and was dead lettered.",
                );
            }
        }
    }

    fn dead_letter_if_exhausted(&mut self, seq: i64) {
        let max = self.settings.max_delivery_count;
        if self
            .active
            .get(&seq)
            .is_some_and(|m| m.delivery_count >= max)
        {
            let m = self.active.remove(&seq).expect("checked");
            self.move_to_dead_letters(
                m,
                "MaxDeliveryCountExceeded",
                &format!("Message could not be consumed after {max} delivery attempts."),
            );
        }
    }

    fn move_to_dead_letters(&mut self, mut m: Message, reason: &str, description: &str) {
        m.lock = None;
        m.expires_at = None;
        m.set_property("DeadLetterReason", reason.to_string());
        m.set_property("DeadLetterErrorDescription", description.to_string());
        self.dead_letters.insert(m.sequence_number, m);
        self.notify.notify_waiters();
    }
}
