//! The event the facade's benchmarks publish, shared by `memory.rs` and `telemetry.rs`.

use serde::{Deserialize, Serialize};

/// The event of every benchmark: two numbers and a title.
#[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
#[event(name = "bench.book-borrowed", version = 1)]
pub(crate) struct BookBorrowed {
    pub(crate) book_id: u64,
    pub(crate) patron_id: u64,
    pub(crate) title: String,
}

/// The topic the benchmarks publish to.
#[derive(tidings::Topic)]
#[topic(name = "bench")]
pub(crate) enum BenchEvents {
    BookBorrowed(BookBorrowed),
}

/// The `i`th event.
pub(crate) fn event(i: u64) -> BookBorrowed {
    BookBorrowed {
        book_id: i,
        patron_id: i ^ 0x5a5a,
        title: "The Left Hand of Darkness".to_string(),
    }
}
