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
            self.active.insert(m.sequence_number, m);
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
