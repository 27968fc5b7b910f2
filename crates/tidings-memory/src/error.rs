//! The errors the memory transport returns, all [`tidings_core::Error`]s.

use tidings_core::{Error, ErrorKind};

/// A configuration error (bad URL, conflicting hub settings).
pub(crate) fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// A subscription that was never provisioned on this hub.
pub(crate) fn not_provisioned(name: &str, topic: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "the memory hub has no subscription `{name}` to topic `{topic}`: provision it first (Bus::build does)"
        ),
    )
}

/// An envelope over the hub's size limit.
pub(crate) fn too_large(event_type: &str, size: usize, limit: usize) -> Error {
    Error::new(
        ErrorKind::MessageTooLarge,
        format!(
            "`{event_type}` takes about {size} bytes, over the memory transport's limit of {limit} bytes: publish a reference to the data instead, or raise MemoryConfig::max_message_size"
        ),
    )
}

/// A dead-letter list at capacity.
pub(crate) fn dead_letters_full(queue: &str, capacity: usize) -> Error {
    Error::new(
        ErrorKind::Rejected,
        format!(
            "the dead-letter list of `{queue}` is full ({capacity} envelopes): replay them (Bus::replay_dead_letters) or raise MemoryConfig::dead_letter_capacity; the delivery stays with the consumer"
        ),
    )
}

/// The queue's channel closed; cannot happen while the hub lives.
pub(crate) fn closed(queue: &str) -> Error {
    Error::closed(format!("the memory queue `{queue}` is closed"))
}
