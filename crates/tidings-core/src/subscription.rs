//! Subscriptions: one service's durable interest in some events of one topic, with the
//! handlers, shared state, upcasters, retry policy and concurrency limit that go with it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::bus::Bus;
use crate::codec::{Codec, DecodeLimits};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, Topic, TopicMember};
use crate::handler::{Context, Handler, HandlerError};
use crate::retry::RetryPolicy;

/// A subscription under construction: `Subscription::to::<LendingEvents>()`, then state,
/// handlers and options, then `BusBuilder::subscribe`.
///
/// ```
/// # use tidings_core::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct BookBorrowed;
/// # impl Event for BookBorrowed { const NAME: &'static str = "lending.book-borrowed"; const VERSION: u32 = 1; }
/// # impl TopicMember for BookBorrowed { type Topic = LendingEvents; }
/// # struct LendingEvents;
/// # impl Topic for LendingEvents { const NAME: &'static str = "lending"; fn events() -> &'static [EventInfo] { &[] } }
/// #[derive(Default)]
/// struct Inventory;
///
/// async fn book_borrowed(_e: BookBorrowed, cx: Context<Inventory>) -> Result<(), HandlerError> {
///     let _inventory: &Inventory = cx.state();
///     Ok(())
/// }
///
/// let subscription = Subscription::to::<LendingEvents>()
///     .with_state(Inventory::default())
///     .on(book_borrowed)
///     .concurrency(8)
///     .retry(RetryPolicy::default().immediate(2));
/// ```
pub struct Subscription<T, S = ()> {
    name: Option<String>,
    state: Arc<S>,
    handlers: Vec<HandlerEntry>,
    upcasters: HashMap<(&'static str, u32), Upcaster>,
    policy: Option<RetryPolicy>,
    concurrency: usize,
    prefetch: Option<u16>,
    errors: Vec<String>,
    upcast_sources: Vec<crate::catalog::UpcastSource>,
    _topic: PhantomData<fn() -> T>,
}

impl Subscription<(), ()> {
    /// A subscription to the events of topic `T`, with no state yet.
    pub fn to<T: Topic>() -> Subscription<T, ()> {
        Subscription {
            name: None,
            state: Arc::new(()),
            handlers: Vec::new(),
            upcasters: HashMap::new(),
            policy: None,
            concurrency: 1,
            prefetch: None,
            errors: Vec::new(),
            upcast_sources: Vec::new(),
            _topic: PhantomData,
        }
    }
}

impl<T: Topic, S: Send + Sync + 'static> Subscription<T, S> {
    /// Shared state handed to the handlers registered after this call (`cx.state()`).
    pub fn with_state<S2: Send + Sync + 'static>(self, state: S2) -> Subscription<T, S2> {
        self.with_shared_state(Arc::new(state))
    }

    /// Like [`with_state`](Self::with_state), with state already in an `Arc`.
    pub fn with_shared_state<S2: Send + Sync + 'static>(
        self,
        state: Arc<S2>,
    ) -> Subscription<T, S2> {
        Subscription {
            name: self.name,
            state,
            handlers: self.handlers,
            upcasters: self.upcasters,
            policy: self.policy,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            errors: self.errors,
            upcast_sources: self.upcast_sources,
            _topic: PhantomData,
        }
    }

    /// Name the subscription (default: the service name). Instances with the same
    /// subscription name compete for its events; a second subscription of one service to
    /// one topic needs its own name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Handle events of type `E` (an event of topic `T`) with `handler`: an
    /// `async fn(E, Context<S>) -> Result<(), HandlerError>` or a [`Handler`] type.
    pub fn on<E, H>(mut self, handler: H) -> Self
    where
        E: TopicMember<Topic = T>,
        H: Handler<E, S>,
    {
        if self.handlers.iter().any(|h| h.name == E::NAME) {
            self.errors.push(format!(
                "two handlers for event `{}` ({}) in one subscription to `{}`: register one handler per event, or use a second subscription with `.named(..)`",
                E::NAME,
                std::any::type_name::<E>(),
                T::NAME
            ));
            return self;
        }
        self.handlers.push(HandlerEntry {
            name: E::NAME,
            version: E::VERSION,
            handler: Box::new(Typed::<E, S, H> {
                handler,
                state: self.state.clone(),
                _event: PhantomData,
            }),
        });
        self
    }

    /// Read `Old`, an earlier version of event `New`, by converting it with
    /// `New::from(old)`. `Old` is the old shape with `#[event(name = <same name>, version =
    /// <old version>)]`. Envelopes of an older version without an upcaster are decoded
    /// directly as the current type (fine for additive changes with `#[serde(default)]`).
    pub fn upcast<Old, New>(mut self) -> Self
    where
        Old: Event,
        New: TopicMember<Topic = T> + From<Old>,
    {
        if Old::NAME != New::NAME || Old::VERSION >= New::VERSION {
            self.errors.push(format!(
                "upcaster from `{}` v{} to `{}` v{}: the old type must have the same wire name and a lower version",
                Old::NAME,
                Old::VERSION,
                New::NAME,
                New::VERSION
            ));
            return self;
        }
        let f: UpcastFn<New> =
            |bytes, codec, limits| codec.decode::<Old>(bytes, limits).map(New::from);
        self.upcasters
            .insert((New::NAME, Old::VERSION), Box::new(f));
        self.upcast_sources
            .push(crate::catalog::UpcastSource::of::<Old>());
        self
    }

    /// How many handlers of this subscription may run at once (default 1). Events with
    /// the same ordering key are still handled one at a time, in publish order.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// How many deliveries the broker may push ahead of acknowledgements (default: 100, at
    /// least the concurrency).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// The retry policy of this subscription (default: the bus's).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
}

impl<T, S> fmt::Debug for Subscription<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &std::any::type_name::<T>())
            .field("name", &self.name)
            .field(
                "handles",
                &self.handlers.iter().map(|h| h.name).collect::<Vec<_>>(),
            )
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A subscription with its topic erased, as the bus builder keeps it.
pub(crate) struct ErasedSubscription {
    pub(crate) topic: &'static str,
    pub(crate) topic_events: &'static [crate::event::EventInfo],
    pub(crate) name: Option<String>,
    pub(crate) handlers: Vec<HandlerEntry>,
    pub(crate) upcasters: HashMap<(&'static str, u32), Upcaster>,
    pub(crate) policy: Option<RetryPolicy>,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: Option<u16>,
    pub(crate) errors: Vec<String>,
    /// For the catalog: the topic's payload schemas and the upcasters' old shapes.
    pub(crate) topic_schemas: crate::catalog::TopicSchemas,
    pub(crate) upcast_sources: Vec<crate::catalog::UpcastSource>,
}

impl<T: Topic, S> From<Subscription<T, S>> for ErasedSubscription {
    fn from(s: Subscription<T, S>) -> Self {
        ErasedSubscription {
            topic: T::NAME,
            topic_events: T::events(),
            name: s.name,
            handlers: s.handlers,
            upcasters: s.upcasters,
            policy: s.policy,
            concurrency: s.concurrency,
            prefetch: s.prefetch,
            errors: s.errors,
            topic_schemas: T::event_schema,
            upcast_sources: s.upcast_sources,
        }
    }
}

type UpcastFn<E> = fn(&[u8], Codec, DecodeLimits) -> Result<E>;
pub(crate) type Upcaster = Box<dyn Any + Send + Sync>;

pub(crate) struct HandlerEntry {
    pub(crate) name: &'static str,
    pub(crate) version: u32,
    pub(crate) handler: Box<dyn ErasedHandler>,
}

/// Why a handler run did not succeed.
pub(crate) enum Failure {
    /// The envelope can never be handled (undecodable): dead-letter at once.
    Poison(Error),
    /// The handler returned an error.
    Handler(HandlerError),
}

/// Everything a handler run needs besides the handler itself.
pub(crate) struct Call<'a> {
    pub(crate) envelope: &'a Arc<Envelope>,
    pub(crate) codec: Codec,
    pub(crate) limits: DecodeLimits,
    pub(crate) upcaster: Option<&'a (dyn Any + Send + Sync)>,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
    pub(crate) bus: Bus,
}

pub(crate) trait ErasedHandler: Send + Sync {
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<(), Failure>>;
}

struct Typed<E, S, H> {
    handler: H,
    state: Arc<S>,
    _event: PhantomData<fn() -> E>,
}

impl<E, S, H> ErasedHandler for Typed<E, S, H>
where
    E: Event,
    S: Send + Sync + 'static,
    H: Handler<E, S>,
{
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<(), Failure>> {
        // User code runs here before the handler's future exists (`Deserialize`, an
        // upcaster's `From`, the synchronous part of `handle`): a panic in it is a handler
        // failure like a panic in the future, never an unwind through the consumer loop.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let env = call.envelope;
            let decoded = match call.upcaster {
                Some(up) => match up.downcast_ref::<UpcastFn<E>>() {
                    Some(f) => f(&env.payload, call.codec, call.limits),
                    None => Err(Error::new(
                        ErrorKind::Config,
                        "upcaster registered for another type",
                    )),
                },
                None => call.codec.decode::<E>(&env.payload, call.limits),
            };
            let event = decoded.map_err(Failure::Poison)?;
            let cx = Context::new(
                self.state.clone(),
                env.clone(),
                call.attempt,
                call.redelivered,
                call.bus,
            );
            Ok(self.handler.handle(event, cx))
        }));
        let fut = match started {
            Ok(Ok(fut)) => std::panic::AssertUnwindSafe(fut).catch_unwind(),
            Ok(Err(failure)) => return Box::pin(futures::future::ready(Err(failure))),
            Err(panic) => return Box::pin(futures::future::ready(Err(panicked(panic)))),
        };
        Box::pin(async move {
            match fut.await {
                Ok(result) => result.map_err(Failure::Handler),
                Err(panic) => Err(panicked(panic)),
            }
        })
    }
}

/// A panic in user code as a handler failure carrying the panic message.
fn panicked(panic: Box<dyn Any + Send>) -> Failure {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    Failure::Handler(HandlerError::msg(format!("handler panicked: {msg}")))
}
