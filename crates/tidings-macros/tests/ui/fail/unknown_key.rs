#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", verison = 2)]
struct BookBorrowed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event]
struct BookReturned {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-renewed", name = "lending.book-extended")]
struct BookRenewed {
    book_id: u64,
}

#[derive(Topic)]
#[topic(name = "lending", exchange = "lending-x")]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
}

fn main() {}
