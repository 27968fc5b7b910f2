//! Message flow: sending to subscriptions, receiving, and settling peek-locked messages
//! (complete, unlock, renew).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Notify;
use uuid::Uuid;

use super::{key, Broker, Fault, Lock, Message, Receive, ReceiveMode, SubQueue, Subscription};
use crate::util::MAX_TTL;

impl Broker {
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
                match copy.scheduled_enqueue_time.filter(|at| *at > now) {
                    Some(at) => {
                        s.scheduled.insert((at, copy.sequence_number), copy);
                    }
                    None => {
                        s.may_expire_at(copy.expires_at);
                        s.active.insert(copy.sequence_number, copy);
                    }
                }
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
                if queue == SubQueue::Active {
                    if let Some((at, _)) = s.scheduled.keys().next() {
                        soonest(*at);
                    }
                }
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
                    let until = now + settings.lock_duration;
                    m.delivery_count += 1;
                    m.lock = Some(Lock {
                        token: Uuid::new_v4(),
                        until,
                    });
                    let m = Box::new(m.clone());
                    s.may_expire_at(Some(until));
                    Receive::Message(m)
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
        let held = |m: &Message| m.lock.is_some_and(|l| l.token == token && l.until > now);
        // A sequence number (what lock URIs carry) is looked up directly; a message id
        // needs a scan.
        let by_sequence = id
            .parse::<i64>()
            .ok()
            .filter(|seq| q.get(seq).is_some_and(held));
        let seq = by_sequence
            .or_else(|| {
                q.iter()
                    .find(|(_, m)| m.message_id.as_deref() == Some(id) && held(m))
                    .map(|(seq, _)| *seq)
            })
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
            s.may_expire_at(Some(until));
            until
        })
    }
}
