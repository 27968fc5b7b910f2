//! Derives for tidings event contracts, re-exported by the `tidings` crate:
//! [`macro@Event`] gives a serde type a stable wire name and a version, [`macro@Topic`]
//! groups the events one context publishes.
//!
//! ```
//! # use tidings_core as tidings;
//! # use tidings_macros::{Event, Topic};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! #[event(name = "lending.book-borrowed", version = 1, key = book_id)]
//! pub struct BookBorrowed { pub book_id: u64, pub patron_id: u64 }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! #[event(name = "lending.book-returned")]
//! pub struct BookReturned { pub book_id: u64 }
//!
//! #[derive(Debug, Topic)]
//! #[topic(name = "lending")]
//! pub enum LendingEvents { BookBorrowed(BookBorrowed), BookReturned(BookReturned) }
//! # fn main() {}
//! ```
//!
//! # Attributes
//!
//! | attribute | key | meaning |
//! |---|---|---|
//! | `#[event(..)]` | `name = "ctx.event-name"` | required: the wire name, what crosses the broker |
//! | | `version = N` | the contract version, a whole number ≥ 1; default `1` |
//! | | `key = field` | the field (`Display`) whose value is the ordering key; `key = 0` for a tuple struct |
//! | | `crate = path` | where tidings is, when it is not a dependency named `tidings` (see below) |
//! | `#[topic(..)]` | `name = "ctx"` | required: the topic name, the publishing context |
//! | | `crate = path` | as for events |
//!
//! Names are 1 to 200 bytes of ASCII letters, digits, `.`, `-` and `_`.
//!
//! # Where the generated code finds tidings
//!
//! The derives look the deriving crate's `Cargo.toml` up (with `proc-macro-crate`): a
//! dependency on `tidings`, under any name it was renamed to, or else on `tidings-core`.
//! A crate that reaches tidings some other way, e.g. through a re-export of a shared
//! contracts crate, says where: `#[event(name = "..", crate = contracts::tidings)]`.
//!
//! # Mistakes are compile errors
//!
//! Each says what to write instead: a missing or malformed name, a version of 0, an unknown
//! key, a `key` that is not a field, a generic type, an event type without serde's
//! `Serialize`/`Deserialize`, a topic variant that does not wrap exactly one event, a
//! variant type that is not an event, and two events of one topic with the same wire name.

mod attrs;
mod event;
mod topic;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Makes a serde type an integration event: implements `tidings::Event`.
///
/// `#[event(name = "..")]` is required; `version` defaults to 1; `key = field` sets the
/// ordering key to that field's `to_string()` (events with one key are handled in publish
/// order). The type must derive `Serialize` and `Deserialize` and must not be generic.
///
/// ```
/// # use tidings_core as tidings;
/// # use tidings_macros::Event;
/// use serde::{Deserialize, Serialize};
/// use tidings::Event as _;
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "catalog.copies-changed", version = 2, key = book_id)]
/// struct CopiesChanged { book_id: u64, available: u32 }
///
/// # fn main() {
/// assert_eq!(CopiesChanged::NAME, "catalog.copies-changed");
/// assert_eq!(CopiesChanged::VERSION, 2);
/// let e = CopiesChanged { book_id: 7, available: 3 };
/// assert_eq!(e.ordering_key().as_deref(), Some("7"));
/// # }
/// ```
///
/// A forgotten name does not compile, and the error says what to add:
///
/// ```compile_fail
/// # use tidings_core as tidings;
/// # use tidings_macros::Event;
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// struct BookBorrowed { book_id: u64 } // missing wire name: add `#[event(name = ..)]`
/// # fn main() {}
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes an enum of events a topic: implements `tidings::Topic` and `tidings::Publishable`
/// for the enum, and `tidings::TopicMember` and `From<Event>` for each variant's event.
///
/// `#[topic(name = "..")]` is required. Every variant wraps exactly one `#[derive(Event)]`
/// type, `BookBorrowed(BookBorrowed)`; an event type belongs to one topic, and the enum
/// must be at least as public as its events (it is their `TopicMember::Topic`). Two events
/// with one wire name fail the build. Publishing a value of the enum publishes (and encodes)
/// the event inside it.
///
/// ```
/// # use tidings_core as tidings;
/// # use tidings_macros::{Event, Topic};
/// use serde::{Deserialize, Serialize};
/// use tidings::{Publishable, Topic as _};
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "lending.book-borrowed")]
/// struct BookBorrowed { book_id: u64 }
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "lending.book-returned", version = 2)]
/// struct BookReturned { book_id: u64 }
///
/// #[derive(Topic)]
/// #[topic(name = "lending")]
/// enum LendingEvents { BookBorrowed(BookBorrowed), BookReturned(BookReturned) }
///
/// # fn main() {
/// assert_eq!(LendingEvents::NAME, "lending");
/// assert_eq!(LendingEvents::events()[1].name, "lending.book-returned");
/// let e = LendingEvents::from(BookReturned { book_id: 7 });
/// assert_eq!((e.event_name(), e.event_version()), ("lending.book-returned", 2));
/// # }
/// ```
///
/// ```compile_fail
/// # use tidings_core as tidings;
/// # use tidings_macros::{Event, Topic};
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// #[event(name = "lending.book-borrowed")]
/// struct BookBorrowed { book_id: u64 }
///
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// #[event(name = "lending.book-borrowed")] // copy-pasted: same wire name
/// struct BookReturned { book_id: u64 }
///
/// #[derive(Topic)]
/// #[topic(name = "lending")]
/// enum LendingEvents { BookBorrowed(BookBorrowed), BookReturned(BookReturned) }
/// # fn main() {}
/// ```
#[proc_macro_derive(Topic, attributes(topic))]
pub fn derive_topic(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    topic::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
