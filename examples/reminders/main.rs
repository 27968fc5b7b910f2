//! Scheduled publishing: Lending schedules a reminder for each loan when it is due, and
//! Notifications sends it then, not before.
//!
//! ```text
//! cargo run --example reminders                                  # memory transport
//! cargo run --example reminders -- amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//!
//! The three reminders are published at once, due in 3 s, 1 s and 2 s; each is handled at
//! its time, in the order of their times:
//!
//! ```text
//! notifications: reminder for Solaris, 4 ms after its time
//! notifications: reminder for Dune, 2 ms after its time
//! notifications: reminder for Ubik, 3 ms after its time
//! ```

// `loans` stands for a module of the service's crate (hence `pub`), shared with
// tests/reminders.rs.
#![allow(unreachable_pub)]

mod loans;

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let due = [
        ("Dune", Duration::from_secs(3)),
        ("Solaris", Duration::from_secs(1)),
        ("Ubik", Duration::from_secs(2)),
    ];
    for sent in loans::remind(&url, &due).await? {
        println!(
            "notifications: reminder for {}, {} ms after its time",
            sent.book,
            sent.late().as_millis()
        );
    }
    Ok(())
}
