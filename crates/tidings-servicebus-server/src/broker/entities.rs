//! Entity management: creating, updating and deleting topics, subscriptions and rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::{key, Broker, Fault, Rule, Subscription, SubscriptionSettings, Topic};
use crate::filter::Filter;
use crate::util::MAX_TTL;

impl Broker {
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
                scheduled: BTreeMap::new(),
                dead_letters: BTreeMap::new(),
                notify: Arc::new(Notify::new()),
                next_expiry: None,
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
}
