//! The Library's shared contracts: ids and the integration events Lending publishes.
//! Defined once, imported by the publisher (Lending) and the subscribers (Catalog).
//! `JsonSchema` gives each event its payload schema in the services' catalogs
//! (`examples/library/catalog/`), which `tidings validate` checks against `tidings.lock`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidings::{Event, Topic};
use uuid::Uuid;

/// A book of the catalog.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct BookId(pub Uuid);

/// A patron of the library.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct PatronId(pub Uuid);

impl BookId {
    /// A fresh id.
    pub fn new() -> Self {
        BookId(Uuid::new_v4())
    }
}

impl PatronId {
    /// A fresh id.
    pub fn new() -> Self {
        PatronId(Uuid::new_v4())
    }
}

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PatronId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A patron borrowed a book. Events of one book are handled in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "lending.book-borrowed", version = 1, key = book_id)]
pub struct BookBorrowed {
    /// The book.
    pub book_id: BookId,
    /// Who borrowed it.
    pub patron_id: PatronId,
}

/// A patron returned a book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "lending.book-returned", version = 1, key = book_id)]
pub struct BookReturned {
    /// The book.
    pub book_id: BookId,
    /// Who returned it.
    pub patron_id: PatronId,
}

/// What the Lending context publishes.
#[derive(Debug, Clone, Topic)]
#[topic(name = "lending")]
pub enum LendingEvents {
    /// See [`BookBorrowed`].
    BookBorrowed(BookBorrowed),
    /// See [`BookReturned`].
    BookReturned(BookReturned),
}
