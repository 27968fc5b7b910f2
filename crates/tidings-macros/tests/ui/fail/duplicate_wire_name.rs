#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned")]
struct BookReturned {
    book_id: u64,
}

// Copy-pasted from BookBorrowed and the name not changed.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 2)]
struct BookRenewed {
    book_id: u64,
}

#[derive(Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
    BookRenewed(BookRenewed),
}

fn main() {}
