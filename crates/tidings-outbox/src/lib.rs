#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Parts of the SQL plumbing are used by one database only.
#![cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]

mod backend;
mod inbox;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
mod row;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use backend::Backend;
pub use inbox::{Idempotent, Inbox, InboxContext, InboxHandler};
pub use outbox::{Outbox, OutboxBuilder, OutboxCounts, ParkedRow, DEFAULT_TABLE_PREFIX};
pub use relay::{BusBuilderExt, RelayConfig};

/// The sqlx this crate is built with: use it (or the same version) for the pool and your
/// queries, so the transaction you pass to [`Outbox::enqueue`] is of the same type.
pub use sqlx;

/// An outbox in SQLite.
#[cfg(feature = "sqlite")]
pub type SqliteOutbox = Outbox<sqlx::Sqlite>;
/// An outbox in PostgreSQL.
#[cfg(feature = "postgres")]
pub type PgOutbox = Outbox<sqlx::Postgres>;
