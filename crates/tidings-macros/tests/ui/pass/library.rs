// The Library contracts: newtype ids, two lending events, the lending topic.
#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Codec, DecodeLimits, Event, EventInfo, Publishable, Topic, TopicMember};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookId(u64);

impl std::fmt::Display for BookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "book-{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatronId(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 1, key = book_id)]
pub struct BookBorrowed {
    pub book_id: BookId,
    pub patron_id: PatronId,
}

/// Version left out: defaults to 1. No key: no ordering key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned")]
pub struct BookReturned {
    pub book_id: BookId,
    pub patron_id: PatronId,
}

#[derive(Debug, Clone, PartialEq, Topic)]
#[topic(name = "lending")]
pub enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

fn member_of<E: TopicMember<Topic = LendingEvents>>() {}
fn topic_of<P: Publishable<Topic = LendingEvents>>(_: &P) {}

fn main() {
    assert_eq!(BookBorrowed::NAME, "lending.book-borrowed");
    assert_eq!(BookBorrowed::VERSION, 1);
    assert_eq!(BookReturned::VERSION, 1);
    assert_eq!(LendingEvents::NAME, "lending");
    assert_eq!(
        LendingEvents::events(),
        &[
            EventInfo {
                name: "lending.book-borrowed",
                version: 1,
                type_name: "BookBorrowed"
            },
            EventInfo {
                name: "lending.book-returned",
                version: 1,
                type_name: "BookReturned"
            },
        ]
    );
    member_of::<BookBorrowed>();
    member_of::<BookReturned>();

    let borrowed = BookBorrowed {
        book_id: BookId(7),
        patron_id: PatronId(42),
    };
    let returned = BookReturned {
        book_id: BookId(7),
        patron_id: PatronId(42),
    };
    assert_eq!(Event::ordering_key(&borrowed).as_deref(), Some("book-7"));
    assert_eq!(Event::ordering_key(&returned), None);

    // A single event publishes through the blanket impl ...
    topic_of(&borrowed);
    assert_eq!(Publishable::event_name(&borrowed), "lending.book-borrowed");

    // ... and a value of the topic enum through the derived one, which delegates.
    let as_topic = LendingEvents::from(borrowed.clone());
    topic_of(&as_topic);
    assert_eq!(as_topic, LendingEvents::BookBorrowed(borrowed.clone()));
    assert_eq!(as_topic.event_name(), "lending.book-borrowed");
    assert_eq!(as_topic.event_version(), 1);
    assert_eq!(
        Publishable::event_ordering_key(&as_topic).as_deref(),
        Some("book-7")
    );
    let returned_topic: LendingEvents = returned.clone().into();
    assert_eq!(returned_topic.event_name(), "lending.book-returned");
    assert_eq!(Publishable::event_ordering_key(&returned_topic), None);

    // The enum encodes its event, not itself: subscribers decode the event type.
    let bytes = as_topic.encode(Codec::MessagePack).unwrap();
    assert_eq!(bytes, borrowed.encode(Codec::MessagePack).unwrap());
    let decoded: BookBorrowed = Codec::MessagePack
        .decode(&bytes, DecodeLimits::default())
        .unwrap();
    assert_eq!(decoded, borrowed);
    let bytes = returned_topic.encode(Codec::MessagePack).unwrap();
    let decoded: BookReturned = Codec::MessagePack
        .decode(&bytes, DecodeLimits::default())
        .unwrap();
    assert_eq!(decoded, returned);
}
