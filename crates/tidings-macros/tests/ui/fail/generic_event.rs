#[allow(unused_imports)]
use tidings_macros::*;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, Topic};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed<Id> {
    book_id: Id,
}

#[derive(Topic)]
#[topic(name = "lending")]
enum LendingEvents<E> {
    Event(E),
}

fn main() {}
