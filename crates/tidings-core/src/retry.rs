//! The retry policy: some immediate attempts, then delayed redeliveries with exponential
//! backoff and jitter, then the dead-letter destination. The same for every transport.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How a failing handler is retried before its envelope is dead-lettered.
///
/// Each delivery runs the handler up to [`immediate`](RetryPolicy::immediate) times in a
/// row; if all fail, the envelope is redelivered after the next backoff delay, up to
/// [`redeliveries`](RetryPolicy::redeliveries) times; after that it is dead-lettered. A
/// handler error marked permanent ([`HandlerError::permanent`](crate::HandlerError::permanent))
/// skips the retries.
///
/// ```
/// use std::time::Duration;
/// use tidings_core::RetryPolicy;
/// // 2 tries in place, then redeliver after ~100ms, ~200ms, ~400ms, then dead-letter.
/// let policy = RetryPolicy::default()
///     .immediate(2)
///     .backoff(Duration::from_millis(100), 2.0, Duration::from_secs(10))
///     .redeliveries(3);
/// assert_eq!(policy.max_handler_runs(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    immediate: u32,
    redeliveries: u32,
    min_delay: Duration,
    factor: f32,
    max_delay: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// 3 immediate attempts, then 3 redeliveries after about 1 s, 2 s and 4 s (with
    /// jitter), then the dead-letter destination.
    fn default() -> Self {
        RetryPolicy {
            immediate: 3,
            redeliveries: 3,
            min_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all: the first failure dead-letters the envelope.
    pub fn none() -> Self {
        RetryPolicy {
            immediate: 1,
            redeliveries: 0,
            ..Default::default()
        }
    }

    /// Handler runs per delivery (at least 1).
    pub fn immediate(mut self, attempts: u32) -> Self {
        self.immediate = attempts.max(1);
        self
    }

    /// Delayed redeliveries after the immediate attempts of a delivery failed.
    pub fn redeliveries(mut self, count: u32) -> Self {
        self.redeliveries = count;
        self
    }

    /// The backoff between redeliveries: the first delay, the factor it grows by, and its
    /// cap.
    pub fn backoff(mut self, first: Duration, factor: f32, max: Duration) -> Self {
        self.min_delay = first;
        self.factor = factor.max(1.0);
        self.max_delay = max.max(first);
        self
    }

    /// Whether delays get random jitter (on by default), so that many failing consumers
    /// don't retry in lockstep.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Handler runs per delivery.
    pub fn immediate_attempts(&self) -> u32 {
        self.immediate
    }

    /// Delayed redeliveries before dead-lettering.
    pub fn max_redeliveries(&self) -> u32 {
        self.redeliveries
    }

    /// The policy as the catalog shows it.
    pub(crate) fn catalog(&self) -> crate::catalog::RetryInfo {
        crate::catalog::RetryInfo {
            immediate: self.immediate,
            redeliveries: self.redeliveries,
            first_delay_ms: self.min_delay.as_millis() as u64,
            factor: self.factor,
            max_delay_ms: self.max_delay.as_millis() as u64,
            jitter: self.jitter,
        }
    }

    /// The most times a handler can run for one envelope.
    pub fn max_handler_runs(&self) -> u32 {
        self.immediate * (self.redeliveries + 1)
    }

    /// The delay before redelivery number `n` (1-based), or `None` when the policy has no
    /// more redeliveries and the envelope should be dead-lettered.
    pub fn redelivery_delay(&self, n: u32) -> Option<Duration> {
        if n == 0 || n > self.redeliveries {
            return None;
        }
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_factor(self.factor)
            .with_max_delay(self.max_delay)
            .with_max_times(n as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        // Whole milliseconds: the f32 factor leaves nanosecond noise.
        let delay = builder.build().nth(n as usize - 1)?;
        Some(Duration::from_millis(delay.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_and_stop_after_the_last_redelivery() {
        let p = RetryPolicy::default()
            .backoff(Duration::from_millis(100), 2.0, Duration::from_secs(1))
            .redeliveries(5)
            .jitter(false);
        let delays: Vec<_> = (1..=6).map(|n| p.redelivery_delay(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(800)),
                Some(Duration::from_secs(1)),
                None
            ]
        );
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let p =
            RetryPolicy::default().backoff(Duration::from_millis(100), 2.0, Duration::from_secs(9));
        for _ in 0..100 {
            let d = p.redelivery_delay(2).unwrap();
            assert!(
                d >= Duration::from_millis(200) && d < Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn none_dead_letters_at_once() {
        assert_eq!(RetryPolicy::none().redelivery_delay(1), None);
        assert_eq!(RetryPolicy::none().max_handler_runs(), 1);
    }
}
