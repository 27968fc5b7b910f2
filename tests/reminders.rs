//! The reminders example on the memory transport: reminders published at once, due in
//! 1.5 s, 0.5 s and 1 s, are each handled at their time (never before), in the order of
//! their times.

#![allow(unreachable_pub)]

#[path = "../examples/reminders/loans.rs"]
mod loans;

use std::time::Duration;

#[tokio::test]
async fn reminders_are_sent_at_their_time_in_the_order_of_their_times() {
    let due = [
        ("Dune", Duration::from_millis(1500)),
        ("Solaris", Duration::from_millis(500)),
        ("Ubik", Duration::from_millis(1000)),
    ];
    let sent = loans::remind("memory://", &due).await.expect("reminders");
    let order: Vec<&str> = sent.iter().map(|s| s.book.as_str()).collect();
    assert_eq!(order, ["Solaris", "Ubik", "Dune"], "{sent:?}");
    for s in &sent {
        assert!(s.at >= s.due, "{} was sent before its time: {s:?}", s.book);
        println!("{}: {:?} after its time", s.book, s.late());
    }
}
