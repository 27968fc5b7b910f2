//! The Lending context: borrow and return commands. Each saves the loan, raises a domain
//! event (handled inside Lending: the patron's loan count) and publishes an integration
//! event (handled by other contexts: Catalog's inventory).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tidings::domain::EventQueue;
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
    Publish(tidings::Error),
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

/// The Lending context: its store, its domain event queue and its bus.
#[derive(Debug, Clone)]
pub struct Lending {
    /// Lending's storage.
    pub store: Arc<LendingStore>,
    domain: EventQueue<LendingDomainEvent>,
    bus: Bus,
}

impl Lending {
    /// Lending on `bus` (which must declare `.publishes::<LendingEvents>()`), with the domain
    /// event handlers that keep patrons' loan counts.
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
            .start();
        Lending { store, domain, bus }
    }

    /// Lend `book_id` to `patron_id`: save the loan, raise the domain event, publish
    /// `lending.book-borrowed`.
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
            .await;
        self.bus
            .publish(BookBorrowed { book_id, patron_id })
            .await
            .map_err(LendingError::Publish)?;
        Ok(loan.id)
    }

    /// Take back the book of `loan_id`: close the loan, raise the domain event, publish
    /// `lending.book-returned`.
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
            .await;
        self.bus
            .publish(BookReturned { book_id, patron_id })
            .await
            .map_err(LendingError::Publish)?;
        Ok(())
    }

    /// Raise a domain event and wait for Lending's own handlers.
    async fn raise(&self, event: LendingDomainEvent) {
        if self.domain.enqueue(event).await.is_ok() {
            if let Err(e) = self.domain.drain().await {
                eprintln!("lending: a domain event handler failed: {e}");
            }
        }
    }
}
