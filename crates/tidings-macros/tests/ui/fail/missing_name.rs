#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
struct BookBorrowed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(version = 2)]
struct BookReturned {
    book_id: u64,
}

#[derive(Topic)]
enum LendingEvents {
    BookBorrowed(BookBorrowed),
}

fn main() {}
