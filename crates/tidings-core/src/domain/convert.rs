//! Domain events that become integration events: [`Converters`], a converter per domain
//! event kind, each returning the integration event other contexts get, or `None` when the
//! domain event is not for the outside.

use std::fmt;
use std::sync::Arc;

use crate::bus::{Bus, PublishOptions};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::event::Publishable;

/// One converter, erased: the integration envelope of a domain event as `bus` publishes
/// it, with its broker topic; `None` when it is not for the outside.
type Erased<E> =
    Arc<dyn Fn(&Bus, &E, PublishOptions) -> Option<Result<(String, Envelope)>> + Send + Sync>;

/// How a context's domain events become the integration events it publishes.
///
/// Each converter maps a domain event to at most one integration event; several
/// converters may apply to one domain event, and each one that returns an event adds one.
/// The same `Converters` serve both ways of publishing:
///
/// - [`EventQueueBuilder::publish_converted`](super::EventQueueBuilder::publish_converted):
///   the queue publishes the converted events after the domain event is raised;
/// - `Outbox::enqueue_converted` (crate `tidings-outbox`): the converted events are written
///   to the outbox in the transaction of the domain change, so they are published if and
///   only if it commits.
///
/// ```
/// use tidings_core::domain::Converters;
/// # use serde::{Deserialize, Serialize};
/// # use tidings_core::{Event, EventInfo, Topic, TopicMember};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # struct BookBorrowed { book: String }
/// # impl Event for BookBorrowed {
/// #     const NAME: &'static str = "lending.book-borrowed";
/// #     const VERSION: u32 = 1;
/// # }
/// # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
/// # struct LendingEvents;
/// # impl Topic for LendingEvents {
/// #     const NAME: &'static str = "lending";
/// #     fn events() -> &'static [EventInfo] {
/// #         &[EventInfo { name: "lending.book-borrowed", version: 1, type_name: "BookBorrowed" }]
/// #     }
/// # }
/// // `BookBorrowed`: the minimal integration event (usually `#[derive(Event)]`).
///
/// /// Rich, inside Lending.
/// #[derive(Debug, Clone)]
/// enum LendingDomainEvent {
///     BookBorrowed { book: String, staff_copy: bool },
/// }
///
/// let converters = Converters::new().convert(|e: &LendingDomainEvent| match e {
///     // Loans of staff copies are nobody else's business.
///     LendingDomainEvent::BookBorrowed { staff_copy: true, .. } => None,
///     LendingDomainEvent::BookBorrowed { book, .. } => Some(BookBorrowed { book: book.clone() }),
/// });
/// # let _ = converters;
/// ```
pub struct Converters<E> {
    list: Vec<Erased<E>>,
}

impl<E> Clone for Converters<E> {
    fn clone(&self) -> Self {
        Converters {
            list: self.list.clone(),
        }
    }
}

impl<E> Default for Converters<E> {
    fn default() -> Self {
        Converters { list: Vec::new() }
    }
}

impl<E> fmt::Debug for Converters<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Converters")
            .field("converters", &self.list.len())
            .finish()
    }
}

impl<E: 'static> Converters<E> {
    /// No converters.
    pub fn new() -> Self {
        Converters::default()
    }

    /// Add a converter: `convert(&domain_event)` returns the integration event to publish,
    /// or `None` when the domain event is not for the outside (or not this converter's).
    pub fn convert<I, F>(mut self, convert: F) -> Self
    where
        I: Publishable,
        F: Fn(&E) -> Option<I> + Send + Sync + 'static,
    {
        self.list
            .push(Arc::new(move |bus: &Bus, event: &E, options| {
                let integration = convert(event)?;
                Some(bus.topic_name::<I::Topic>().and_then(|topic| {
                    let envelope = bus.envelope(&integration, options)?;
                    Ok((topic.to_string(), envelope))
                }))
            }));
        self
    }

    /// The integration envelopes of `event`, as `bus` publishes them (its source and
    /// codec, `options`' flow ids and headers), each with its broker topic; empty when no
    /// converter returns an event. Fails when `bus` does not publish a converted event's
    /// topic.
    pub fn envelopes(
        &self,
        bus: &Bus,
        event: &E,
        options: &PublishOptions,
    ) -> Result<Vec<(String, Envelope)>> {
        self.list
            .iter()
            .filter_map(|convert| convert(bus, event, options.clone()))
            .collect()
    }

    /// Publish the integration events of `event` on `bus`; their ids (none when no
    /// converter returns an event).
    pub async fn publish(
        &self,
        bus: &Bus,
        event: &E,
        options: &PublishOptions,
    ) -> Result<Vec<uuid::Uuid>> {
        let mut ids = Vec::new();
        for (topic, envelope) in self.envelopes(bus, event, options)? {
            ids.push(envelope.id);
            bus.publish_envelopes_to(&topic, vec![envelope]).await?;
        }
        Ok(ids)
    }
}
