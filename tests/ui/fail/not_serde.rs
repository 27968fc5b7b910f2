use tidings::Event;

#[derive(Debug, Event)]
#[event(name = "lending.book-borrowed")]
struct BookBorrowed {
    book_id: u64,
}

fn main() {}
