#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::Event;

#[derive(Serialize, Deserialize)]
struct BookId(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed", key = bookid)]
struct BookBorrowed {
    book_id: u64,
    patron_id: u64,
}

// The key must be Display: BookId is not.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-returned", key = book_id)]
struct BookReturned {
    book_id: BookId,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-renewed", key = 1)]
struct BookRenewed(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.status", key = book_id)]
enum BookStatus {
    Lent { book_id: u64 },
}

fn main() {}
