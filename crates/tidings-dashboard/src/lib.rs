//! A web dashboard for failed messages: every subscription's dead letters, read one, fix
//! its payload and replay it, replay or purge many, and the flow of events between
//! services. Server-rendered pages with a few lines of script at most, nothing loaded from
//! elsewhere: it works offline.
//!
//! Run it with the `tidings` command against a broker
//! (`tidings dashboard --transport amqp://... --catalog catalog/`), or mount it inside a
//! service's own [axum](https://docs.rs/axum) app, which is the only way to see the dead
//! letters of the in-process memory transport:
//!
//! ```no_run
//! # async fn run(bus: tidings_core::Bus) -> std::io::Result<()> {
//! use tidings_dashboard::{Auth, Dashboard};
//!
//! let dashboard = Dashboard::for_bus(&bus).auth(Auth::token("s3cret"));
//! let app = axum::Router::new().nest("/dead-letters", dashboard.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # Pages
//!
//! - **Overview** (`/`): one row per subscription of the catalogs: service, topic, handled
//!   events, dead letters, backlog where the broker can tell (queue depth, consumer lag,
//!   message counts), when it was read.
//! - **Dead letters of a subscription**: time, event, version, reason, attempts,
//!   correlation id; filters by reason and event, pages of 50; replay or purge the selected
//!   ones or all (a purge asks to confirm).
//! - **One dead letter**: every attribute and header, the payload as pretty JSON
//!   (MessagePack is decoded too), the failure; edit the payload and replay it as a new
//!   delivery, checked against the event's JSON Schema first, keeping the original id or
//!   taking a new one.
//! - **Flow** (`/flow`): which service's events reach which services, drawn as SVG.
//!
//! # Safe by default
//!
//! The command listens on loopback unless told otherwise, and refuses another address
//! without [`Auth`]. With auth on, every request needs it (a bearer token, or HTTP basic
//! auth, which browsers ask for). Every form carries a token that a page of another site
//! cannot read, and a request marked cross-site by the browser is refused. Payloads and
//! every other value are escaped. Every change (replay, edited replay, purge) goes to the
//! [audit sink](Dashboard::audit) with who did it and what: by default a `tracing` event
//! with target `tidings_dashboard::audit`.

mod audit;
mod auth;
mod pages;
mod subscriptions;

use std::sync::Arc;

use axum::routing::{get, post};
use tidings_core::catalog::ServiceCatalog;
use tidings_core::transport::DynTransport;

pub use audit::{Action, AuditEntry};
pub use auth::Auth;

use subscriptions::Subscriptions;

/// The dashboard over one transport and the catalogs of the services that use it.
#[derive(Clone)]
pub struct Dashboard {
    state: State,
}

/// What every page reads.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) transport: Arc<dyn DynTransport>,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) catalogs: Vec<ServiceCatalog>,
    pub(crate) title: String,
    pub(crate) auth: Option<Auth>,
    /// The anti-forgery token every form carries: random per dashboard, and readable only
    /// by pages of the dashboard itself.
    pub(crate) form_token: String,
    pub(crate) audit: Arc<dyn Fn(&AuditEntry) + Send + Sync>,
}

impl Dashboard {
    /// A dashboard of the subscriptions in `catalogs` (catalog documents as written by
    /// `bus.catalog().write_to_dir(..)`), reaching their dead letters through `transport`.
    pub fn new(transport: Arc<dyn DynTransport>, catalogs: Vec<ServiceCatalog>) -> Self {
        let subscriptions = Subscriptions::new(&catalogs);
        Dashboard {
            state: State {
                transport,
                subscriptions,
                catalogs,
                title: "tidings".to_string(),
                auth: None,
                form_token: uuid::Uuid::new_v4().simple().to_string(),
                audit: Arc::new(audit::to_tracing),
            },
        }
    }

    /// A dashboard of one bus: its own catalog and transport, for mounting inside the
    /// service (the only way to see a memory transport's dead letters).
    pub fn for_bus(bus: &tidings_core::Bus) -> Self {
        Dashboard::new(bus.transport().clone(), vec![bus.catalog().clone()])
    }

    /// Require `auth` on every request.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.state.auth = Some(auth);
        self
    }

    /// The name in every page's title and heading (default `tidings`), e.g. the
    /// workspace's.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.state.title = title.into();
        self
    }

    /// Where every change goes, with who made it and what it was, instead of the default
    /// `tracing` event (target `tidings_dashboard::audit`, level INFO).
    pub fn audit(mut self, sink: impl Fn(&AuditEntry) + Send + Sync + 'static) -> Self {
        self.state.audit = Arc::new(sink);
        self
    }

    /// The dashboard's routes, to serve or to [`nest`](axum::Router::nest) under a path of
    /// a service's own app (links are relative to where it is mounted).
    pub fn router(&self) -> axum::Router {
        let state = Arc::new(self.state.clone());
        axum::Router::new()
            .route("/", get(pages::overview::page))
            .route("/flow", get(pages::flow::page))
            .route("/flow.svg", get(pages::flow::picture))
            .route("/subscriptions/{key}", get(pages::letters::page))
            .route("/subscriptions/{key}/replay", post(pages::letters::replay))
            .route("/subscriptions/{key}/purge", post(pages::letters::purge))
            .route(
                "/subscriptions/{key}/letters/{id}",
                get(pages::letter::page),
            )
            .route(
                "/subscriptions/{key}/letters/{id}/replay",
                post(pages::letter::replay_edited),
            )
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require,
            ))
            .with_state(state)
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("title", &self.state.title)
            .field("subscriptions", &self.state.subscriptions.len())
            .field("auth", &self.state.auth)
            .finish_non_exhaustive()
    }
}
