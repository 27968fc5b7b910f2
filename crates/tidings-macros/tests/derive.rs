//! The derives against tidings-core alone (no facade), under the workspace lints: the
//! expansions compile warning-free and behave as documented.

use serde::{Deserialize, Serialize};
use tidings_core::{Codec, Event, Publishable, Topic, TopicMember};
use tidings_macros::{Event, Topic};

/// A book.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BookId(pub u64);

impl std::fmt::Display for BookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A book was lent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", key = book_id)]
pub struct BookBorrowed {
    /// Which book.
    pub book_id: BookId,
}

/// A book came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", version = 2)]
pub struct BookReturned(pub BookId);

/// The lending topic.
#[derive(Debug, Clone, PartialEq, Topic)]
#[topic(name = "lending")]
pub enum LendingEvents {
    /// Lent.
    BookBorrowed(BookBorrowed),
    /// Returned.
    BookReturned(BookReturned),
}

fn topic_of<E: TopicMember>() -> &'static str {
    E::Topic::NAME
}

#[test]
fn events_carry_name_version_and_key() {
    assert_eq!(
        (BookBorrowed::NAME, BookBorrowed::VERSION),
        ("lending.book-borrowed", 1)
    );
    assert_eq!(
        (BookReturned::NAME, BookReturned::VERSION),
        ("lending.book-returned", 2)
    );
    let e = BookBorrowed { book_id: BookId(7) };
    assert_eq!(Event::ordering_key(&e).as_deref(), Some("7"));
    assert_eq!(Event::ordering_key(&BookReturned(BookId(7))), None);
}

#[test]
fn topic_lists_its_events_and_owns_them() {
    assert_eq!(LendingEvents::NAME, "lending");
    let names: Vec<_> = LendingEvents::events()
        .iter()
        .map(|e| (e.name, e.version, e.type_name))
        .collect();
    assert_eq!(
        names,
        [
            ("lending.book-borrowed", 1, "BookBorrowed"),
            ("lending.book-returned", 2, "BookReturned")
        ]
    );
    assert_eq!(topic_of::<BookBorrowed>(), "lending");
    assert_eq!(topic_of::<BookReturned>(), "lending");
}

#[test]
fn topic_value_publishes_the_event_inside() {
    let returned = BookReturned(BookId(3));
    let e = LendingEvents::from(returned.clone());
    assert_eq!(
        (e.event_name(), e.event_version()),
        ("lending.book-returned", 2)
    );
    assert_eq!(Publishable::event_ordering_key(&e), None);
    let codec = Codec::default();
    assert_eq!(e.encode(codec).unwrap(), returned.encode(codec).unwrap());

    let e = LendingEvents::from(BookBorrowed { book_id: BookId(9) });
    assert_eq!(Publishable::event_ordering_key(&e).as_deref(), Some("9"));
    assert_eq!(e.event_name(), "lending.book-borrowed");
}
