// The derives expand to `::tidings::..`; here that is tidings-core.
extern crate tidings_core as tidings;
#[allow(unused_imports)]
use tidings_macros::*;
use tidings::Event;

#[derive(Debug, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed {
    book_id: u64,
}

fn main() {}
