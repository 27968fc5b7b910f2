//! The reminders of the example: the contract, Lending's scheduling and Notifications'
//! handler.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tidings::prelude::*;

/// A loan's return date has come: remind the patron.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "lending.loan-due", version = 1)]
pub struct LoanDue {
    /// The borrowed book.
    pub book: String,
    /// When the loan is due, as Lending scheduled it.
    pub due: SystemTime,
}

/// What Lending publishes.
#[derive(Topic, Debug, Clone)]
#[topic(name = "lending")]
pub enum LendingEvents {
    /// See [`LoanDue`].
    LoanDue(LoanDue),
}

/// A reminder Notifications sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The book it was about.
    pub book: String,
    /// When it was due.
    pub due: SystemTime,
    /// When it was handled.
    pub at: SystemTime,
}

impl Sent {
    /// How long after its due time it was handled (zero if it was early).
    pub fn late(&self) -> Duration {
        self.at.duration_since(self.due).unwrap_or_default()
    }
}

/// Notifications' handler: "send" the reminder (record it).
async fn send_reminder(event: LoanDue, cx: Context<Mutex<Vec<Sent>>>) -> Result<(), HandlerError> {
    cx.state().lock().expect("sent").push(Sent {
        book: event.book,
        due: event.due,
        at: SystemTime::now(),
    });
    Ok(())
}

/// Schedule one reminder per `(book, due in)` with Lending's bus, and return the
/// reminders Notifications sent, in the order it sent them, once all were.
pub async fn remind(
    url: &str,
    loans: &[(&str, Duration)],
) -> Result<Vec<Sent>, Box<dyn std::error::Error>> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let notifications = Bus::builder("notifications")
        .transport_url(url)
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(sent.clone())
                .on(send_reminder),
        )
        .build()
        .await?;
    let lending = Bus::builder("lending")
        .transport_url(url)
        .publishes::<LendingEvents>()
        .build()
        .await?;
    for (book, after) in loans {
        let due = SystemTime::now() + *after;
        let reminder = LoanDue {
            book: book.to_string(),
            due,
        };
        lending.publish_at(reminder, due).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sent.lock().expect("sent").len() < loans.len() {
        if tokio::time::Instant::now() > deadline {
            return Err("the reminders did not all arrive within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lending.shutdown().await;
    notifications.shutdown().await;
    let sent = sent.lock().expect("sent").clone();
    Ok(sent)
}
