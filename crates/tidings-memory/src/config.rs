//! Configuration of a memory hub: queue and dead-letter capacities and the size limit, set
//! with [`MemoryBuilder`] or in a `memory://` URL.

use crate::error;
use tidings_core::Result;

/// Default capacity of each subscription queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default capacity of each subscription's dead-letter list.
pub const DEFAULT_DEAD_LETTER_CAPACITY: usize = 100_000;
/// Default largest envelope accepted, in bytes ([`Envelope::wire_size`](tidings_core::Envelope::wire_size)).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// The settings of one hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) dead_letter_capacity: usize,
    pub(crate) max_message_size: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            dead_letter_capacity: DEFAULT_DEAD_LETTER_CAPACITY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Builds a private [`Memory`](crate::Memory) hub with custom limits.
///
/// ```
/// use tidings_memory::Memory;
/// let memory = Memory::builder()
///     .queue_capacity(1_000)        // a full queue makes publishers wait
///     .dead_letter_capacity(10_000) // a full dead-letter list refuses more
///     .max_message_size(64 * 1024)
///     .build();
/// # drop(memory);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBuilder {
    config: MemoryConfig,
}

impl MemoryBuilder {
    /// How many envelopes each subscription queue holds before `publish` waits for the
    /// consumers (default 10 000, at least 1).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.config.queue_capacity = capacity.max(1);
        self
    }

    /// How many dead letters each subscription keeps; when full, dead-lettering fails and
    /// the delivery is retried later (default 100 000).
    pub fn dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.config.dead_letter_capacity = capacity;
        self
    }

    /// The largest envelope `publish` accepts, in bytes as counted by
    /// [`Envelope::wire_size`](tidings_core::Envelope::wire_size) (default 1 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// A new private hub with these settings.
    pub fn build(self) -> crate::Memory {
        crate::Memory::with_config(None, self.config)
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
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("memory") => rest,
            _ => {
                return Err(error::config(format!(
                    "{url:?} is not a memory transport URL: write `memory://` for the process-wide hub or `memory://name` for a named one"
                )))
            }
        };
        let (name, query) = match rest.split_once('?') {
            Some((name, query)) => (name, Some(query)),
            None => (rest, None),
        };
        let name = name.trim_end_matches('/');
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(error::config(format!(
                "memory hub name {name:?} in {url:?} may only hold ASCII letters, digits, '-', '_' and '.'"
            )));
        }
        let config = match query {
            None | Some("") => None,
            Some(query) => {
                let mut config = MemoryConfig::default();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let slot = match key {
                        "queue_capacity" => &mut config.queue_capacity,
                        "dead_letter_capacity" => &mut config.dead_letter_capacity,
                        "max_message_size" => &mut config.max_message_size,
                        _ => {
                            return Err(error::config(format!(
                                "unknown option `{key}` in {url:?}: the memory transport takes queue_capacity, dead_letter_capacity and max_message_size"
                            )))
                        }
                    };
                    *slot = value.parse().map_err(|_| {
                        error::config(format!(
                            "option `{key}` in {url:?} needs a whole number, got {value:?}"
                        ))
                    })?;
                }
                config.queue_capacity = config.queue_capacity.max(1);
                Some(config)
            }
        };
        Ok(HubUrl {
            name: name.to_string(),
            config,
        })
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
            Some(MemoryConfig {
                queue_capacity: 5,
                dead_letter_capacity: DEFAULT_DEAD_LETTER_CAPACITY,
                max_message_size: 99
            })
        );
    }

    #[test]
    fn bad_urls_are_config_errors_that_say_why() {
        for (url, needle) in [
            ("amqp://localhost", "not a memory transport URL"),
            ("memory", "not a memory transport URL"),
            ("memory://a b", "may only hold"),
            ("memory://x?queue_capacity=lots", "whole number"),
            ("memory://x?colour=blue", "unknown option `colour`"),
        ] {
            let err = HubUrl::parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.message().contains(needle), "{url}: {err}");
        }
    }
}
