//! The inbox: handlers that run in a database transaction together with the record that
//! the event was handled, so a redelivered event has no second effect.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tidings_core::{
    Context, Error, ErrorKind, Event, Handler, HandlerError, PublishOptions, Publishable, Result,
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

use crate::backend::{db_error, Backend};
use crate::outbox::Outbox;

/// Makes handlers idempotent with records in the outbox's database; get it with
/// [`Outbox::inbox`].
///
/// ```no_run
/// # #[cfg(feature = "sqlite")] {
/// # use tidings_core::*;
/// # use tidings_outbox::{InboxContext, Outbox};
/// # use sqlx::Sqlite;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct BookBorrowed { book: String }
/// # impl Event for BookBorrowed { const NAME: &'static str = "lending.book-borrowed"; const VERSION: u32 = 1; }
/// # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
/// # struct LendingEvents;
/// # impl Topic for LendingEvents { const NAME: &'static str = "lending"; fn events() -> &'static [EventInfo] { &[] } }
/// async fn book_borrowed(e: BookBorrowed, cx: InboxContext<(), Sqlite>) -> Result<(), HandlerError> {
///     let mut tx = cx.tx()?;
///     sqlx::query("UPDATE inventory SET on_loan = on_loan + 1 WHERE book = ?")
///         .bind(&e.book)
///         .execute(&mut *tx)
///         .await?;
///     Ok(())
/// }
/// # async fn f(outbox: Outbox<Sqlite>) {
/// let subscription = Subscription::to::<LendingEvents>().on(outbox.inbox().handler(book_borrowed));
/// # }
/// # }
/// ```
pub struct Inbox<DB: Backend> {
    outbox: Outbox<DB>,
    scope: Option<Arc<str>>,
}

impl<DB: Backend> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Inbox {
            outbox: self.outbox.clone(),
            scope: self.scope.clone(),
        }
    }
}

impl<DB: Backend> fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("table", &self.outbox.inbox_table())
            .field("scope", &self.scope)
            .finish()
    }
}

impl<DB: Backend> Inbox<DB> {
    pub(crate) fn new(outbox: Outbox<DB>) -> Self {
        Inbox {
            outbox,
            scope: None,
        }
    }

    /// Record handled events under `scope` instead of the service name of the bus the
    /// handler runs on. Needed when one service has two subscriptions (`.named(..)`)
    /// that handle the same events: give each its own scope, or the second would take
    /// every event as already handled.
    pub fn scoped(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(Arc::from(scope.into()));
        self
    }

    /// Wrap `handler` so that it runs in a database transaction that also records
    /// `(scope, event id)`: if the record exists the event was handled before and is
    /// acknowledged without running `handler`; otherwise `handler` runs with the
    /// transaction ([`InboxContext::tx`]) and the transaction commits when it returns
    /// `Ok`. An error rolls everything back and goes to the subscription's retry policy.
    pub fn handler<E, S, H>(&self, handler: H) -> Idempotent<H, DB, E, S>
    where
        H: InboxHandler<E, S, DB>,
    {
        Idempotent {
            handler,
            inbox: self.clone(),
            _marker: PhantomData,
        }
    }

    /// Whether `(scope, event id)` is recorded, i.e. the event was handled.
    pub async fn was_handled(&self, scope: &str, id: Uuid) -> Result<bool> {
        let mut tx = self
            .outbox
            .pool()
            .begin()
            .await
            .map_err(|e| db_error("opening a transaction for the inbox", e))?;
        // Recording and rolling back answers the question without a query per database.
        let fresh = DB::record(&mut tx, self.outbox.names(), scope, id, "").await?;
        drop(tx);
        Ok(!fresh)
    }
}

/// A handler that runs inside the inbox transaction: `async fn(E, InboxContext<S, DB>)
/// -> Result<(), HandlerError>`, or a type implementing this trait.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle `{E}` events in the inbox",
    note = "an inbox handler is `async fn(event: {E}, cx: InboxContext<{S}, {DB}>) -> Result<(), HandlerError>`"
)]
pub trait InboxHandler<E, S, DB: Backend>: Send + Sync + 'static {
    /// Handle one event inside the inbox transaction.
    fn handle(
        &self,
        event: E,
        cx: InboxContext<S, DB>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<E, S, DB, F, Fut> InboxHandler<E, S, DB> for F
where
    E: Event,
    S: Send + Sync + 'static,
    DB: Backend,
    F: Fn(E, InboxContext<S, DB>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        event: E,
        cx: InboxContext<S, DB>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(event, cx)
    }
}

/// The idempotent wrapper of an [`InboxHandler`], from [`Inbox::handler`]; register it
/// with `Subscription::on` like any handler.
pub struct Idempotent<H, DB: Backend, E, S> {
    handler: H,
    inbox: Inbox<DB>,
    _marker: PhantomData<fn(E, S)>,
}

impl<H, DB: Backend, E, S> fmt::Debug for Idempotent<H, DB, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotent")
            .field("handler", &std::any::type_name::<H>())
            .field("inbox", &self.inbox)
            .finish()
    }
}

type SharedTx<DB> = Arc<Mutex<Option<sqlx::Transaction<'static, DB>>>>;

impl<H, DB, E, S> Handler<E, S> for Idempotent<H, DB, E, S>
where
    H: InboxHandler<E, S, DB>,
    DB: Backend,
    E: Event,
    S: Send + Sync + 'static,
{
    async fn handle(&self, event: E, cx: Context<S>) -> Result<(), HandlerError> {
        let outbox = &self.inbox.outbox;
        let scope: Arc<str> = match &self.inbox.scope {
            Some(s) => s.clone(),
            None => Arc::from(cx.bus().service()),
        };
        let mut tx =
            outbox.pool().begin().await.map_err(|e| {
                HandlerError::transient(db_error("opening the inbox transaction", e))
            })?;
        let fresh = DB::record(
            &mut tx,
            outbox.names(),
            &scope,
            cx.id(),
            &cx.envelope().event_type,
        )
        .await
        .map_err(HandlerError::transient)?;
        if !fresh {
            tracing::debug!(
                %scope, id = %cx.id(), event_type = %cx.envelope().event_type,
                "event handled before (inbox record found); acknowledged without running the handler"
            );
            return Ok(());
        }
        let shared: SharedTx<DB> = Arc::new(Mutex::new(Some(tx)));
        let enqueued = Arc::new(AtomicBool::new(false));
        let icx = InboxContext {
            cx,
            tx: shared.clone(),
            outbox: outbox.clone(),
            enqueued: enqueued.clone(),
            scope,
        };
        self.handler.handle(event, icx).await?;
        // The handler returned, so only a clone it moved into spawned work could still hold
        // the transaction; wait for it.
        let tx = shared
            .lock()
            .await
            .take()
            .ok_or_else(|| HandlerError::msg("the inbox transaction is gone"))?;
        tx.commit().await.map_err(|e| {
            HandlerError::transient(db_error("committing the inbox transaction", e))
        })?;
        if enqueued.load(Ordering::Relaxed) {
            outbox.wake();
        }
        Ok(())
    }
}

/// What an inbox handler gets: the [`Context`] (through `Deref`: state, id, envelope, …),
/// the transaction that records the event ([`tx`](Self::tx)), and publishing through the
/// outbox in that transaction ([`publish`](Self::publish)).
pub struct InboxContext<S, DB: Backend> {
    cx: Context<S>,
    tx: SharedTx<DB>,
    outbox: Outbox<DB>,
    enqueued: Arc<AtomicBool>,
    scope: Arc<str>,
}

impl<S, DB: Backend> InboxContext<S, DB> {
    /// The transaction: run your queries on `&mut *tx`. It commits, with the inbox record
    /// and the events you published, when the handler returns `Ok`, and rolls back on
    /// error. Drop the guard before calling [`publish`](Self::publish); a second guard
    /// while one is alive is an error, not a deadlock.
    pub fn tx(&self) -> Result<MappedMutexGuard<'_, DB::Connection>> {
        let guard = self.tx.try_lock().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                "the inbox transaction is in use: drop the guard from `cx.tx()` before taking it again or calling `cx.publish`",
            )
        })?;
        if guard.is_none() {
            return Err(Error::closed(
                "the inbox transaction has ended: the handler returned",
            ));
        }
        Ok(MutexGuard::map(guard, |tx| {
            &mut **tx.as_mut().expect("checked above")
        }))
    }

    /// Publish an event caused by this one through the outbox, in this transaction: it is
    /// published after the commit, with correlation and causation ids carried on
    /// ([`Context::follow_up`]). (`cx.context().publish(..)` would instead publish at
    /// once, outside the transaction, even if the handler then fails.)
    pub async fn publish<P: Publishable>(&self, event: P) -> Result<Uuid> {
        self.publish_with(event, self.cx.follow_up()).await
    }

    /// [`publish`](Self::publish) with options of your own (start from
    /// `cx.follow_up()` to keep the flow ids).
    pub async fn publish_with<P: Publishable>(
        &self,
        event: P,
        options: PublishOptions,
    ) -> Result<Uuid> {
        let mut conn = self.tx()?;
        let id = self
            .outbox
            .enqueue_with(&mut conn, self.cx.bus(), event, options)
            .await?;
        self.enqueued.store(true, Ordering::Relaxed);
        Ok(id)
    }

    /// The plain handler context.
    pub fn context(&self) -> &Context<S> {
        &self.cx
    }

    /// The scope the event is recorded under (the service name unless
    /// [`Inbox::scoped`]).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The outbox of this inbox.
    pub fn outbox(&self) -> &Outbox<DB> {
        &self.outbox
    }
}

impl<S, DB: Backend> Deref for InboxContext<S, DB> {
    type Target = Context<S>;
    fn deref(&self) -> &Context<S> {
        &self.cx
    }
}

impl<S, DB: Backend> fmt::Debug for InboxContext<S, DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxContext")
            .field("context", &self.cx)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
