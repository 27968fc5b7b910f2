//! Handler errors as users write them: `?` on `anyhow::Error`, on any `std::error::Error`
//! and on a message, and `.permanent()?` to skip retries without a `map_err`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
#[event(name = "loans.book-borrowed", version = 1)]
struct BookBorrowed {
    isbn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, tidings::Event)]
#[event(name = "loans.book-returned", version = 1)]
struct BookReturned {
    isbn: String,
}

#[derive(tidings::Topic)]
#[topic(name = "loans")]
enum Loans {
    BookBorrowed(BookBorrowed),
    BookReturned(BookReturned),
}

/// A lookup in an application's own code, failing the anyhow way.
fn catalog_lookup(isbn: &str) -> anyhow::Result<u32> {
    use anyhow::Context as _;
    Err(anyhow::anyhow!("catalog offline")).with_context(|| format!("looking up {isbn}"))
}

/// Runs of each handler, and a bus whose handlers use `?` the two ways.
async fn library(memory: &Memory, runs: &Arc<[AtomicU32; 2]>) -> Bus {
    let (borrowed, returned) = (runs.clone(), runs.clone());
    Bus::builder("catalog")
        .transport(memory.clone())
        .retry(RetryPolicy::none().immediate(3))
        .subscribe(
            Subscription::to::<Loans>()
                .on(move |e: BookBorrowed, _: Context| {
                    let runs = borrowed.clone();
                    async move {
                        runs[0].fetch_add(1, Ordering::SeqCst);
                        // An ISBN that does not parse never will: no retries.
                        let _isbn: u64 = e.isbn.parse().permanent()?;
                        Ok(())
                    }
                })
                .on(move |e: BookReturned, _: Context| {
                    let runs = returned.clone();
                    async move {
                        runs[1].fetch_add(1, Ordering::SeqCst);
                        // anyhow straight through `?`: transient, retried by the policy.
                        catalog_lookup(&e.isbn)?;
                        Ok(())
                    }
                }),
        )
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn permanent_skips_retries_and_anyhow_errors_are_retried_then_dead_lettered() {
    let memory = Memory::new();
    let runs: Arc<[AtomicU32; 2]> = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let catalog = library(&memory, &runs).await;
    let loans = Bus::builder("loans")
        .transport(memory.clone())
        .publishes::<Loans>()
        .build()
        .await
        .unwrap();
    loans
        .publish(BookBorrowed {
            isbn: "not-an-isbn".into(),
        })
        .await
        .unwrap();
    loans
        .publish(BookReturned {
            isbn: "9780441013593".into(),
        })
        .await
        .unwrap();
    memory.idle().await;

    assert_eq!(
        runs[0].load(Ordering::SeqCst),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(
        runs[1].load(Ordering::SeqCst),
        3,
        "immediate(3): three runs"
    );
    let letters = catalog.dead_letters::<Loans>(10).await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let borrowed = letters
        .iter()
        .find(|d| d.envelope.event_type == "loans.book-borrowed")
        .expect("the borrowed event is dead-lettered");
    assert_eq!(borrowed.info.attempts, 1);
    assert!(
        borrowed.info.reason.contains("invalid digit"),
        "the parse error is the reason: {}",
        borrowed.info.reason
    );
    let returned = letters
        .iter()
        .find(|d| d.envelope.event_type == "loans.book-returned")
        .expect("the returned event is dead-lettered");
    assert_eq!(returned.info.attempts, 3);
    assert!(
        returned
            .info
            .reason
            .contains("looking up 9780441013593: catalog offline"),
        "the anyhow context chain is the reason: {}",
        returned.info.reason
    );
    catalog.shutdown().await;
    loans.shutdown().await;
}

#[test]
fn question_mark_takes_std_errors_anyhow_and_messages() {
    fn std_error() -> Result<(), HandlerError> {
        let _: u8 = "300".parse::<u8>()?;
        Ok(())
    }
    fn anyhow_error() -> Result<(), HandlerError> {
        catalog_lookup("1")?;
        Ok(())
    }
    fn message() -> Result<(), HandlerError> {
        Err("no such member")?
    }
    fn transient_marked() -> Result<(), HandlerError> {
        "x".parse::<u8>().transient()?;
        Ok(())
    }
    for (what, err) in [
        ("std", std_error().unwrap_err()),
        ("anyhow", anyhow_error().unwrap_err()),
        ("message", message().unwrap_err()),
        ("transient()", transient_marked().unwrap_err()),
    ] {
        assert!(!err.is_permanent(), "{what}: `?` means transient");
    }
    assert_eq!(message().unwrap_err().to_string(), "no such member");
    assert_eq!(
        anyhow_error().unwrap_err().to_string(),
        "looking up 1: catalog offline"
    );
}
