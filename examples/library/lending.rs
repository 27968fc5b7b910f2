//! The Lending context: borrow and return commands. Each saves the loan, raises a domain
//! event (handled inside Lending: the patron's loan count) and publishes an integration
//! event (handled by other contexts: Catalog's inventory).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tidings::domain::{Converters, EventQueue};
use tidings::{Bus, HandlerError};
use uuid::Uuid;

use crate::contracts::{BookBorrowed, BookId, BookReturned, PatronId};

/// A loan of one book to one patron.
#[derive(Debug, Clone, PartialEq)]
pub struct Loan {
    /// The loan's id.
    pub id: Uuid,
    /// The book lent.
    pub book_id: BookId,
    /// The patron.
    pub patron_id: PatronId,
    /// Whether the book came back.
    pub returned: bool,
}

/// A patron and how many books they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Patron {
    /// The patron's id.
    pub id: PatronId,
    /// Their name.
    pub name: String,
    /// Books currently on loan.
    pub loans: u32,
}

/// Lending's own storage (in memory here; the persistent mode keeps it in SQLite).
#[derive(Debug, Default)]
pub struct LendingStore {
    loans: Mutex<HashMap<Uuid, Loan>>,
    patrons: Mutex<HashMap<PatronId, Patron>>,
}

impl LendingStore {
    /// Add a patron.
    pub fn seed_patron(&self, id: PatronId, name: &str) {
        let patron = Patron {
            id,
            name: name.to_string(),
            loans: 0,
        };
        self.patrons.lock().unwrap().insert(id, patron);
    }

    /// A patron by id.
    pub fn patron(&self, id: PatronId) -> Option<Patron> {
        self.patrons.lock().unwrap().get(&id).cloned()
    }

    fn book_on_loan(&self, book_id: BookId) -> bool {
        self.loans
            .lock()
            .unwrap()
            .values()
            .any(|l| l.book_id == book_id && !l.returned)
    }

    fn adjust_loans(&self, id: PatronId, delta: i32) {
        if let Some(p) = self.patrons.lock().unwrap().get_mut(&id) {
            p.loans = p.loans.saturating_add_signed(delta);
        }
    }
}

/// Domain events: facts that stay inside Lending.
#[derive(Debug, Clone, PartialEq)]
pub enum LendingDomainEvent {
    /// A book was lent to a patron.
    BookBorrowed {
        patron_id: PatronId,
        book_id: BookId,
    },
    /// A book came back.
    BookReturned {
        patron_id: PatronId,
        book_id: BookId,
    },
}

/// What other contexts learn of Lending's domain events: each becomes its integration
/// event (defined once in the contracts). Used by the in-memory Lending (published by the
/// domain event queue) and the persistent one (written to the outbox in the same
/// transaction as the loan).
pub fn converters() -> Converters<LendingDomainEvent> {
    Converters::new()
        .convert(|e: &LendingDomainEvent| match *e {
            LendingDomainEvent::BookBorrowed { patron_id, book_id } => {
                Some(BookBorrowed { book_id, patron_id })
            }
            LendingDomainEvent::BookReturned { .. } => None,
        })
        .convert(|e: &LendingDomainEvent| match *e {
            LendingDomainEvent::BookReturned { patron_id, book_id } => {
                Some(BookReturned { book_id, patron_id })
            }
            LendingDomainEvent::BookBorrowed { .. } => None,
        })
}

/// Why a command was refused.
#[derive(Debug)]
pub enum LendingError {
    /// No such patron.
    UnknownPatron(PatronId),
    /// No such loan, or already returned.
    UnknownLoan(Uuid),
    /// Someone else holds the book.
    BookOnLoan(BookId),
    /// The integration event could not be published.
    Publish(HandlerError),
}

impl fmt::Display for LendingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LendingError::UnknownPatron(id) => write!(f, "no patron {id}"),
            LendingError::UnknownLoan(id) => write!(f, "no open loan {id}"),
            LendingError::BookOnLoan(id) => write!(f, "book {id} is already on loan"),
            LendingError::Publish(e) => write!(f, "could not publish: {e}"),
        }
    }
}

impl std::error::Error for LendingError {}

/// The Lending context: its store and its domain event queue (which publishes on the bus).
#[derive(Debug, Clone)]
pub struct Lending {
    /// Lending's storage.
    pub store: Arc<LendingStore>,
    domain: EventQueue<LendingDomainEvent>,
}

impl Lending {
    /// Lending on `bus` (which must declare `.publishes::<LendingEvents>()`), with the domain
    /// event handlers that keep patrons' loan counts and publish the integration events
    /// ([`converters`]).
    pub fn new(bus: Bus, store: Arc<LendingStore>) -> Self {
        let counts = store.clone();
        let domain = EventQueue::builder()
            .handler(move |event: LendingDomainEvent| {
                let store = counts.clone();
                async move {
                    match event {
                        LendingDomainEvent::BookBorrowed { patron_id, .. } => {
                            store.adjust_loans(patron_id, 1)
                        }
                        LendingDomainEvent::BookReturned { patron_id, .. } => {
                            store.adjust_loans(patron_id, -1)
                        }
                    }
                    Ok::<(), HandlerError>(())
                }
            })
            .publish_converted(&bus, converters())
            .start();
        Lending { store, domain }
    }

    /// Lend `book_id` to `patron_id`: save the loan and raise the domain event (which
    /// publishes `lending.book-borrowed`).
    pub async fn borrow_book(
        &self,
        patron_id: PatronId,
        book_id: BookId,
    ) -> Result<Uuid, LendingError> {
        self.store
            .patron(patron_id)
            .ok_or(LendingError::UnknownPatron(patron_id))?;
        if self.store.book_on_loan(book_id) {
            return Err(LendingError::BookOnLoan(book_id));
        }
        let loan = Loan {
            id: Uuid::new_v4(),
            book_id,
            patron_id,
            returned: false,
        };
        self.store
            .loans
            .lock()
            .unwrap()
            .insert(loan.id, loan.clone());
        self.raise(LendingDomainEvent::BookBorrowed { patron_id, book_id })
            .await?;
        Ok(loan.id)
    }

    /// Take back the book of `loan_id`: close the loan and raise the domain event (which
    /// publishes `lending.book-returned`).
    pub async fn return_book(&self, loan_id: Uuid) -> Result<(), LendingError> {
        let loan = {
            let mut loans = self.store.loans.lock().unwrap();
            let loan = loans
                .get_mut(&loan_id)
                .filter(|l| !l.returned)
                .ok_or(LendingError::UnknownLoan(loan_id))?;
            loan.returned = true;
            loan.clone()
        };
        let (book_id, patron_id) = (loan.book_id, loan.patron_id);
        self.raise(LendingDomainEvent::BookReturned { patron_id, book_id })
            .await
    }

    /// Raise a domain event and wait for its handlers, the integration event's publish
    /// included; a failed publish is the command's error.
    async fn raise(&self, event: LendingDomainEvent) -> Result<(), LendingError> {
        let queued = self.domain.enqueue(event).await;
        queued.map_err(|e| LendingError::Publish(HandlerError::transient(e)))?;
        self.domain.drain().await.map_err(LendingError::Publish)
    }
}
