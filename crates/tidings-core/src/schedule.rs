//! Scheduled publishing: an envelope that must not be handled before a given time.
//!
//! The time travels with the envelope as the `tidings-deliver-at` header (RFC 3339, UTC),
//! set by [`PublishOptions::deliver_at`](crate::PublishOptions::deliver_at) and kept by the
//! outbox, which stores the envelope whole. The rule is the core's, the same on every
//! transport: a delivery that arrives before its time is not handed to a handler but put
//! back until it is due, without counting as a delivery attempt. A transport that can hold
//! a message until a time (Service Bus' `ScheduledEnqueueTimeUtc`) does so on publish; on
//! the others the first subscriber to see the envelope puts it back through the delayed
//! redelivery it already has for retries (RabbitMQ's delay queues, Kafka's retry topic,
//! the memory hub's timers). [`Scheduling`] says what each transport offers.
//!
//! A scheduled event leaves its ordering key's order: it is handled at its time, after
//! the events of its key that were due before it, even those published after it. (Holding
//! the key back instead would stall a whole Kafka partition until the time.) Only on a
//! transport without delayed redelivery does an early delivery wait in place.

use std::time::{Duration, SystemTime};

use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};

/// The header that carries the time an envelope may be handled from (RFC 3339, UTC).
pub const DELIVER_AT: &str = "tidings-deliver-at";

/// What a transport offers for scheduled publishing (in
/// [`Capabilities::scheduling`](crate::transport::Capabilities)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduling {
    /// The furthest ahead an event may be scheduled; `None` for no limit. Publishing
    /// further ahead fails as [`ErrorKind::Config`].
    pub max_delay: Option<Duration>,
    /// How late after its time a scheduled event may reach its handler on a subscription
    /// that keeps up (no backlog, a free handler): the precision of the broker's timers.
    pub tolerance: Duration,
}

impl Scheduling {
    /// Scheduling with `tolerance` and no maximum delay.
    pub const fn new(tolerance: Duration) -> Self {
        Scheduling {
            max_delay: None,
            tolerance,
        }
    }

    /// The same, with a maximum delay.
    pub const fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = Some(max);
        self
    }
}

impl Default for Scheduling {
    /// No maximum, a tolerance of one second.
    fn default() -> Self {
        Scheduling::new(Duration::from_secs(1))
    }
}

/// Mark `env` to be handled no earlier than `at`, refusing a time further ahead than the
/// transport can hold. A time that has passed leaves the envelope as it is.
pub(crate) fn stamp(env: &mut Envelope, at: SystemTime, scheduling: &Scheduling) -> Result<()> {
    let Ok(ahead) = at.duration_since(SystemTime::now()) else {
        return Ok(());
    };
    if let Some(max) = scheduling.max_delay.filter(|max| ahead > *max) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "`{}` is scheduled {} ahead, beyond the {} this transport can hold: schedule it nearer, or keep it in your own store and publish it later",
                env.event_type,
                humantime::format_duration(round_ms(ahead)),
                humantime::format_duration(max)
            ),
        ));
    }
    set_deliver_at(env, at);
    Ok(())
}

/// Set the time `env` may be handled from to `at`, rounded up to the millisecond the
/// header keeps, so it is never handled before `at`: for transports that stamp the copies
/// they hold back themselves (RabbitMQ's wait queues).
pub fn set_deliver_at(env: &mut Envelope, at: SystemTime) {
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ms = since_epoch.as_nanos().div_ceil(1_000_000);
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
    env.set_header(DELIVER_AT, humantime::format_rfc3339_millis(at).to_string());
}

/// When `env` may be handled, if it carries a time (for transports that hold messages
/// until a time on publish). An unreadable time is an error that names the header; the
/// core dead-letters such a delivery rather than guess.
pub fn deliver_at(env: &Envelope) -> std::result::Result<Option<SystemTime>, String> {
    let Some(value) = env.header(DELIVER_AT) else {
        return Ok(None);
    };
    humantime::parse_rfc3339_weak(value.trim())
        .map(Some)
        .map_err(|e| {
            format!("undecodable: header `{DELIVER_AT}` is {value:?}, not an RFC 3339 time ({e})")
        })
}

/// When `env` could first be handled: its time, or its scheduled time when later (an
/// unreadable one counts as none). What the lag metric counts from.
pub(crate) fn ready_at(env: &Envelope) -> SystemTime {
    match deliver_at(env) {
        Ok(Some(at)) => at.max(env.time),
        _ => env.time,
    }
}

/// How long `env` must still wait before a handler may see it; `None` when it is due.
pub(crate) fn wait(env: &Envelope) -> std::result::Result<Option<Duration>, String> {
    Ok(deliver_at(env)?
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .filter(|d| !d.is_zero()))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope::new("t.e", 1, "s", "application/json", &b"{}"[..])
    }

    #[test]
    fn a_time_ahead_is_stamped_and_read_back_to_the_millisecond() {
        let mut e = env();
        let at = SystemTime::now() + Duration::from_secs(90);
        stamp(&mut e, at, &Scheduling::default()).unwrap();
        let back = deliver_at(&e).unwrap().unwrap();
        let later = back.duration_since(at).expect("never earlier than asked");
        assert!(later < Duration::from_millis(1), "{later:?}");
        let left = wait(&e).unwrap().unwrap();
        assert!(left > Duration::from_secs(89) && left <= Duration::from_millis(90_001));
    }

    #[test]
    fn an_event_is_ready_at_its_scheduled_time_or_its_own_time_whichever_is_later() {
        let mut e = env();
        assert_eq!(ready_at(&e), e.time);
        let later = e.time + Duration::from_secs(600);
        stamp(&mut e, later, &Scheduling::default()).unwrap();
        let ready = ready_at(&e);
        assert!(ready >= later && ready < later + Duration::from_millis(1));
        e.set_header(DELIVER_AT, "1970-01-01T00:00:00Z");
        assert_eq!(ready_at(&e), e.time, "a time before the event's own");
        e.set_header(DELIVER_AT, "soon");
        assert_eq!(ready_at(&e), e.time, "an unreadable time");
    }

    #[test]
    fn a_time_past_leaves_the_envelope_alone() {
        let mut e = env();
        stamp(
            &mut e,
            SystemTime::now() - Duration::from_secs(1),
            &Scheduling::default(),
        )
        .unwrap();
        assert_eq!(e.header(DELIVER_AT), None);
        assert_eq!(wait(&e), Ok(None));
    }

    #[test]
    fn beyond_the_maximum_is_refused_saying_both_durations() {
        let mut e = env();
        let limits = Scheduling::default().max_delay(Duration::from_secs(60));
        let err = stamp(
            &mut e,
            SystemTime::now() + Duration::from_secs(3600),
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(text.contains("1m") && text.contains("59m"), "{text}");
        assert_eq!(e.header(DELIVER_AT), None);
    }

    #[test]
    fn an_unreadable_time_is_an_error_naming_the_header() {
        let mut e = env();
        e.set_header(DELIVER_AT, "tomorrow");
        let err = deliver_at(&e).unwrap_err();
        assert!(
            err.contains(DELIVER_AT) && err.contains("tomorrow"),
            "{err}"
        );
    }
}
