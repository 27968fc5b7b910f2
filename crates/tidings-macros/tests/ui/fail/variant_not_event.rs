#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed {
    book_id: u64,
}

// Serde, but no `#[derive(Event)]`.
#[derive(Serialize, Deserialize)]
struct BookReturned {
    book_id: u64,
}

#[derive(Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

fn main() {}
