#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending/book borrowed")]
struct BookBorrowed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "")]
struct BookReturned {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.ausgeliehenes-bücher")]
struct BuchAusgeliehen {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = lending.book-renewed)]
struct BookRenewed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
// 213 bytes: longer than the 200 allowed.
#[event(
    name = "lending.01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-lost"
)]
struct BookLost {
    book_id: u64,
}

#[derive(Topic)]
#[topic(name = "lending events")]
enum LendingEvents {}

fn main() {}
