#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::Event;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", version = 0)]
struct BookBorrowed {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", version = "2")]
struct BookReturned {
    book_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-renewed", version = -1)]
struct BookRenewed {
    book_id: u64,
}

fn main() {}
