//! Subscription housekeeping: lock expiry, time-to-live expiry and moving messages to the
//! dead-letter subqueue.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{Message, SubQueue, Subscription};

impl Subscription {
    pub(super) fn queue(&mut self, q: SubQueue) -> &mut BTreeMap<i64, Message> {
        match q {
            SubQueue::Active => &mut self.active,
            SubQueue::DeadLetter => &mut self.dead_letters,
        }
    }

    /// Make scheduled messages whose time has come active, release expired locks
    /// (dead-lettering messages that used up their deliveries) and expire messages past
    /// their time-to-live.
    pub(super) fn housekeep(&mut self, now: SystemTime) {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            self.may_expire_at(m.expires_at);
            self.active.insert(m.sequence_number, m);
        }
        if self.next_expiry.is_none_or(|t| t > now) {
            // Nothing can have run out yet.
            return;
        }
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
        self.next_expiry = self
            .active
            .values()
            .flat_map(|m| [m.lock.map(|l| l.until), m.expires_at])
            .chain(self.dead_letters.values().map(|m| m.lock.map(|l| l.until)))
            .flatten()
            .min();
    }

    /// Note that a lock or a time-to-live may run out at `t`, for [`housekeep`](Self::housekeep).
    pub(super) fn may_expire_at(&mut self, t: Option<SystemTime>) {
        if let Some(t) = t {
            self.next_expiry = Some(self.next_expiry.map_or(t, |n| n.min(t)));
        }
    }

    pub(super) fn dead_letter_if_exhausted(&mut self, seq: i64) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::{Broker, Limits, Message, Receive, ReceiveMode, SubQueue};
    use crate::filter::Filter;

    fn broker(max_delivery_count: u32, expiry_dead_letters: bool) -> Broker {
        let broker = Broker::new(Limits {
            lock_duration: Duration::from_secs(1),
            max_delivery_count,
            max_message_size: 1024,
        });
        broker.create_topic("t", None, None).unwrap();
        let mut settings = broker.default_settings();
        settings.dead_lettering_on_message_expiration = expiry_dead_letters;
        broker
            .create_subscription("t", "s", settings, Some(Filter::True))
            .unwrap();
        broker
    }

    /// Housekeep the subscription as at `at`; its (active, dead-letter) counts.
    fn housekeep(broker: &Broker, at: SystemTime) -> (usize, usize) {
        let mut topics = broker.lock();
        let s = topics
            .get_mut("t")
            .unwrap()
            .subscriptions
            .get_mut("s")
            .unwrap();
        s.housekeep(at);
        (s.active.len(), s.dead_letters.len())
    }

    #[test]
    fn an_expired_lock_is_released_once_it_runs_out_and_not_before() {
        let b = broker(1, false);
        b.send("t", vec![Message::default()]).unwrap();
        let Receive::Message(m) = b
            .receive("t", "s", SubQueue::Active, ReceiveMode::PeekLock)
            .unwrap()
        else {
            panic!("a message");
        };
        let until = m.lock.unwrap().until;
        assert_eq!(housekeep(&b, until - Duration::from_millis(1)), (1, 0));
        // Its one delivery used, it goes to the dead-letter subqueue.
        assert_eq!(housekeep(&b, until), (0, 1));
    }

    #[test]
    fn a_message_past_its_time_to_live_expires_even_after_other_locks_were_settled() {
        let b = broker(10, true);
        let short = Message {
            time_to_live: Some(Duration::from_secs(5)),
            ..Message::default()
        };
        b.send("t", vec![Message::default(), short]).unwrap();
        let Receive::Message(first) = b
            .receive("t", "s", SubQueue::Active, ReceiveMode::PeekLock)
            .unwrap()
        else {
            panic!("a message");
        };
        let token = first.lock.unwrap().token.to_string();
        b.complete(
            "t",
            "s",
            SubQueue::Active,
            &first.sequence_number.to_string(),
            &token,
        )
        .unwrap();
        let now = SystemTime::now();
        assert_eq!(housekeep(&b, now + Duration::from_secs(2)), (1, 0));
        assert_eq!(housekeep(&b, now + Duration::from_secs(6)), (0, 1));
    }
}
