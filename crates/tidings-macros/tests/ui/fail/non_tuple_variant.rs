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

#[derive(Topic)]
#[topic(name = "lending")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
    BookReturned { event: BookReturned },
    BookLost,
    BookRenewed(BookBorrowed, BookReturned),
}

#[derive(Topic)]
#[topic(name = "catalog")]
struct CatalogEvents {
    book_borrowed: BookBorrowed,
}

fn main() {}
