//! [`MemoryConfig`]: the limits of a memory hub, set in code or in a `memory://` URL.

use tidings_core::transport::ParsedUrl;
use tidings_core::Result;

use crate::error;

/// The limits of one memory hub: queue and dead-letter capacities and the largest
/// envelope.
///
/// ```
/// use tidings_memory::{Memory, MemoryConfig};
/// let memory = Memory::with_config(
///     MemoryConfig::default()
///         .queue_capacity(1_000)        // a full queue makes publishers wait
///         .dead_letter_capacity(10_000) // a full dead-letter list refuses more
///         .max_message_size(64 * 1024),
/// );
/// # drop(memory);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) dead_letter_capacity: usize,
    pub(crate) max_message_size: usize,
}

impl Default for MemoryConfig {
    /// Queues of 10 000 envelopes, 100 000 dead letters per subscription, 1 MiB envelopes.
    fn default() -> Self {
        MemoryConfig {
            queue_capacity: 10_000,
            dead_letter_capacity: 100_000,
            max_message_size: 1024 * 1024,
        }
    }
}

impl MemoryConfig {
    /// How many envelopes each subscription queue holds before `publish` waits for the
    /// consumers (default 10 000, at least 1; URL option `queue_capacity`).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// How many dead letters each subscription keeps; when full, dead-lettering fails and
    /// the delivery is retried later (default 100 000; URL option `dead_letter_capacity`).
    pub fn dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity;
        self
    }

    /// The largest envelope `publish` accepts, in bytes as counted by
    /// [`Envelope::wire_size`](tidings_core::Envelope::wire_size) (default 1 MiB; URL option
    /// `max_message_size`).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}

/// A parsed `memory://[name][?option=value&...]` URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HubUrl {
    /// The hub name; empty for the default hub.
    pub(crate) name: String,
    /// The settings, if the URL sets any.
    pub(crate) config: Option<MemoryConfig>,
}

impl HubUrl {
    /// Parse a `memory://` URL; a clear [`Config`](tidings_core::ErrorKind::Config) error
    /// otherwise.
    pub(crate) fn parse(url: &str) -> Result<HubUrl> {
        let mut parsed = ParsedUrl::parse(
            "memory",
            url,
            &["memory"],
            "`memory://` for the process-wide hub or `memory://name` for a named one",
        )?;
        let name = parsed.hosts().first().cloned().unwrap_or_default();
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || parsed.hosts().len() > 1
            || !parsed.path().is_empty()
        {
            return Err(error::config(format!(
                "the memory hub name in {url:?} may only hold ASCII letters, digits, '-', '_' and '.'"
            )));
        }
        let whole = "a whole number";
        let defaults = MemoryConfig::default();
        let queue_capacity = parsed.parsed("queue_capacity", whole)?;
        let dead_letter_capacity = parsed.parsed("dead_letter_capacity", whole)?;
        let max_message_size = parsed.parsed("max_message_size", whole)?;
        parsed.finish()?;
        let config = (queue_capacity.is_some()
            || dead_letter_capacity.is_some()
            || max_message_size.is_some())
        .then(|| {
            defaults
                .queue_capacity(queue_capacity.unwrap_or(defaults.queue_capacity))
                .dead_letter_capacity(dead_letter_capacity.unwrap_or(defaults.dead_letter_capacity))
                .max_message_size(max_message_size.unwrap_or(defaults.max_message_size))
        });
        Ok(HubUrl { name, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::ErrorKind;

    #[test]
    fn parses_default_named_and_options() {
        assert_eq!(
            HubUrl::parse("memory://").unwrap(),
            HubUrl {
                name: String::new(),
                config: None
            }
        );
        assert_eq!(HubUrl::parse("memory://orders/").unwrap().name, "orders");
        let url = HubUrl::parse("MEMORY://t?queue_capacity=5&max_message_size=99").unwrap();
        assert_eq!(url.name, "t");
        assert_eq!(
            url.config,
            Some(
                MemoryConfig::default()
                    .queue_capacity(5)
                    .max_message_size(99)
            )
        );
    }

    #[test]
    fn bad_urls_are_config_errors_that_say_why() {
        for (url, needle) in [
            ("amqp://localhost", "takes memory://, not amqp://"),
            ("memory", "has no scheme"),
            ("memory://a b", "is not a memory URL"),
            ("memory://a,b", "may only hold"),
            ("memory://a/b", "may only hold"),
            ("memory://x?queue_capacity=lots", "queue_capacity=\"lots\" is not a whole number"),
            (
                "memory://x?colour=blue",
                "unknown memory URL option `colour` in memory://x?colour=blue; the options are queue_capacity, dead_letter_capacity, max_message_size",
            ),
        ] {
            let err = HubUrl::parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.message().contains(needle), "{url}: {err}");
        }
    }
}
