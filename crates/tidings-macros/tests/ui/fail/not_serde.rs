#[allow(unused_imports)]
use tidings_macros::*;
use tidings_core::Event;

#[derive(Debug, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed {
    book_id: u64,
}

fn main() {}
