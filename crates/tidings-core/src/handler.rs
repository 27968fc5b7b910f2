//! Handlers: plain async functions `async fn(E, Context<S>) -> Result<(), HandlerError>`
//! or types implementing [`Handler`], with the subscription's shared state and the
//! envelope's metadata in the [`Context`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use crate::bus::{Bus, PublishOptions};
use crate::envelope::Envelope;
use crate::error::{BoxError, Result};
use crate::event::{Event, Publishable};

/// Handles one event type of a subscription.
///
/// Any `Fn(E, Context<S>) -> impl Future<Output = Result<(), HandlerError>>` is a handler,
/// so a plain `async fn` works. Implement the trait on a type when the handler carries its
/// own dependencies:
///
/// ```
/// use tidings_core::{Context, Handler, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct BookBorrowed;
/// # impl tidings_core::Event for BookBorrowed { const NAME: &'static str = "b"; const VERSION: u32 = 1; }
/// struct Audit;
/// impl Handler<BookBorrowed, ()> for Audit {
///     async fn handle(&self, _event: BookBorrowed, cx: Context<()>) -> Result<(), HandlerError> {
///         println!("{} handled on attempt {}", cx.id(), cx.attempt());
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle `{E}` events with state `{S}`",
    note = "a handler is `async fn(event: {E}, cx: Context<{S}>) -> Result<(), HandlerError>` or a type implementing `Handler<{E}, {S}>`; the state type must match the subscription's `with_state`"
)]
pub trait Handler<E, S>: Send + Sync + 'static {
    /// Handle one event. `Ok` acknowledges it; an error is retried by the subscription's
    /// retry policy, then dead-lettered.
    fn handle(
        &self,
        event: E,
        cx: Context<S>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<E, S, F, Fut> Handler<E, S> for F
where
    E: Event,
    S: Send + Sync + 'static,
    F: Fn(E, Context<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        event: E,
        cx: Context<S>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(event, cx)
    }
}

/// A handler's failure: transient (retried by policy, the default) or permanent
/// (dead-lettered at once).
///
/// `?` converts into it from anything that converts into a boxed error: every
/// `std::error::Error`, `anyhow::Error`, `String` and `&str`. [`ResultExt::permanent`]
/// marks a failure that retrying cannot fix, without a `map_err`:
///
/// ```
/// use tidings_core::{HandlerError, ResultExt};
///
/// fn parse_isbn(raw: &str) -> Result<u64, HandlerError> {
///     // Malformed input stays malformed: dead-letter it at once.
///     let isbn: u64 = raw.trim().parse().permanent()?;
///     if isbn == 0 {
///         return Err("ISBN 0 is not a book".into());
///     }
///     Ok(isbn)
/// }
///
/// assert!(parse_isbn("x").unwrap_err().is_permanent());
/// assert!(!parse_isbn("0").unwrap_err().is_permanent());
/// ```
pub struct HandlerError {
    error: BoxError,
    permanent: bool,
}

impl HandlerError {
    /// A transient failure with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError {
            error: message.to_string().into(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix: the envelope is dead-lettered without retries.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError {
            error: error.into(),
            permanent: true,
        }
    }

    /// A transient failure from a boxed error.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError {
            error: error.into(),
            permanent: false,
        }
    }

    /// Whether the failure skips retries.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::transient(error)
    }
}

/// Marks the error of a `Result` as a handler failure of a kind, for `?` in handlers.
pub trait ResultExt<T> {
    /// A failure that retrying cannot fix (dead-lettered at once): `value.permanent()?`.
    fn permanent(self) -> Result<T, HandlerError>;

    /// A failure worth retrying by the subscription's policy (what `?` does by itself).
    fn transient(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }

    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("error", &format_args!("{}", self.error))
            .field("permanent", &self.permanent)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)?;
        let mut source = self.error.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// What a handler gets beside the event: the subscription's state, the envelope's
/// metadata, and a way to publish that carries correlation and causation on.
pub struct Context<S = ()> {
    state: Arc<S>,
    envelope: Arc<Envelope>,
    attempt: u32,
    redelivered: bool,
    bus: Bus,
}

impl<S> Context<S> {
    pub(crate) fn new(
        state: Arc<S>,
        envelope: Arc<Envelope>,
        attempt: u32,
        redelivered: bool,
        bus: Bus,
    ) -> Self {
        Context {
            state,
            envelope,
            attempt,
            redelivered,
            bus,
        }
    }

    /// The subscription's shared state (`Subscription::with_state`).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The shared state as an `Arc`, to move into spawned work.
    pub fn state_arc(&self) -> Arc<S> {
        self.state.clone()
    }

    /// The envelope as received (payload still encoded).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The event's id; redeliveries keep it, so it is the idempotency key.
    pub fn id(&self) -> Uuid {
        self.envelope.id
    }

    /// The publishing service.
    pub fn source(&self) -> &str {
        &self.envelope.source
    }

    /// When the event was published.
    pub fn time(&self) -> SystemTime {
        self.envelope.time
    }

    /// The contract version the event was published with (before any upcast).
    pub fn version(&self) -> u32 {
        self.envelope.version
    }

    /// The correlation id, if the event is part of a flow.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.envelope.correlation_id
    }

    /// The id of the event whose handler published this one.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.envelope.causation_id
    }

    /// A custom header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope.header(name)
    }

    /// Which run of the handler this is for this envelope: 1 the first time, counting
    /// immediate retries and redeliveries (an earlier delivery counts as a full round of
    /// the policy's immediate attempts, since a consumer that stopped can't say how many
    /// it made).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the broker delivered this envelope before.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The bus the subscription runs on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Options that continue this event's flow: the correlation id carried on (or this
    /// event's id when it started the flow), the causation id set to this event's id, and
    /// the trace context carried on.
    pub fn follow_up(&self) -> PublishOptions {
        let env = &self.envelope;
        let mut opts = PublishOptions::new()
            .correlation_id(env.correlation_id.unwrap_or(env.id))
            .causation_id(env.id);
        if let Some(tp) = &env.traceparent {
            opts = opts.traceparent(tp.clone());
        }
        if let Some(ts) = &env.tracestate {
            opts = opts.tracestate(ts.clone());
        }
        opts
    }

    /// Publish an event caused by this one (see [`Context::follow_up`]).
    pub async fn publish<P: Publishable>(&self, event: P) -> Result<Uuid> {
        self.bus.publish_with(event, self.follow_up()).await
    }
}

impl<S> Clone for Context<S> {
    fn clone(&self) -> Self {
        Context {
            state: self.state.clone(),
            envelope: self.envelope.clone(),
            attempt: self.attempt,
            redelivered: self.redelivered,
            bus: self.bus.clone(),
        }
    }
}

impl<S> fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.envelope.id)
            .field("event_type", &self.envelope.event_type)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}
