//! The Catalog context: books and their available copies. Its handlers react to Lending's
//! integration events by dispatching an inventory update, the same path a librarian's
//! command would take.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use tidings::{Context, HandlerError, Subscription};
use tokio::sync::Notify;

use crate::contracts::{BookBorrowed, BookId, BookReturned, LendingEvents};

/// A book's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    /// The title.
    pub title: String,
    /// Copies on the shelf.
    pub available: u32,
    /// Copies owned.
    pub total: u32,
}

/// Catalog's inventory (in memory here; the persistent mode keeps it in SQLite).
#[derive(Debug, Default)]
pub struct Inventory {
    books: Mutex<BTreeMap<BookId, Stock>>,
    updates: Mutex<u64>,
    changed: Notify,
}

/// Why an inventory update was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InventoryError {
    /// The catalog doesn't know the book.
    UnknownBook(BookId),
    /// The update would leave fewer than 0 or more than all copies on the shelf.
    OutOfRange {
        book_id: BookId,
        available: u32,
        delta: i32,
    },
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InventoryError::UnknownBook(id) => write!(f, "the catalog has no book {id}"),
            InventoryError::OutOfRange {
                book_id,
                available,
                delta,
            } => {
                write!(
                    f,
                    "cannot change book {book_id} with {available} available by {delta}"
                )
            }
        }
    }
}

impl std::error::Error for InventoryError {}

impl Inventory {
    /// Add a book with `copies` copies.
    pub fn add_book(&self, id: BookId, title: &str, copies: u32) {
        let stock = Stock {
            title: title.to_string(),
            available: copies,
            total: copies,
        };
        self.books.lock().unwrap().insert(id, stock);
    }

    /// A book's stock.
    pub fn stock(&self, id: BookId) -> Option<Stock> {
        self.books.lock().unwrap().get(&id).cloned()
    }

    /// Every book's stock, by id.
    pub fn all(&self) -> Vec<(BookId, Stock)> {
        self.books
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// The dispatch path for inventory changes: validate, apply, tell waiters.
    pub fn update(&self, id: BookId, delta: i32) -> Result<Stock, InventoryError> {
        let stock = {
            let mut books = self.books.lock().unwrap();
            let stock = books.get_mut(&id).ok_or(InventoryError::UnknownBook(id))?;
            let available = stock
                .available
                .checked_add_signed(delta)
                .filter(|a| *a <= stock.total)
                .ok_or(InventoryError::OutOfRange {
                    book_id: id,
                    available: stock.available,
                    delta,
                })?;
            stock.available = available;
            stock.clone()
        };
        *self.updates.lock().unwrap() += 1;
        self.changed.notify_waiters();
        Ok(stock)
    }

    /// Wait until `n` updates have been applied since the start.
    pub async fn wait_for_updates(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            if *self.updates.lock().unwrap() >= n {
                return;
            }
            changed.await;
        }
    }
}

/// `lending.book-borrowed`: one copy fewer on the shelf.
pub async fn book_borrowed(
    event: BookBorrowed,
    cx: Context<Inventory>,
) -> Result<(), HandlerError> {
    let stock = cx
        .state()
        .update(event.book_id, -1)
        .map_err(HandlerError::permanent)?;
    println!(
        "catalog: {} borrowed -> {} of {} on the shelf",
        stock.title, stock.available, stock.total
    );
    Ok(())
}

/// `lending.book-returned`: one copy more on the shelf.
pub async fn book_returned(
    event: BookReturned,
    cx: Context<Inventory>,
) -> Result<(), HandlerError> {
    let stock = cx
        .state()
        .update(event.book_id, 1)
        .map_err(HandlerError::permanent)?;
    println!(
        "catalog: {} returned -> {} of {} on the shelf",
        stock.title, stock.available, stock.total
    );
    Ok(())
}

/// Catalog's subscription to Lending's events.
pub fn subscription(
    inventory: std::sync::Arc<Inventory>,
) -> Subscription<LendingEvents, Inventory> {
    Subscription::to::<LendingEvents>()
        .with_shared_state(inventory)
        .on(book_borrowed)
        .on(book_returned)
}
