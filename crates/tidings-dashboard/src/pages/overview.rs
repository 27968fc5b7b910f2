//! The overview: one row per subscription, with its dead letters and backlog read from
//! the broker now.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State as AxumState;
use axum::response::Html;
use maud::{html, Markup};

use super::{frame, time, Base};
use crate::subscriptions::Sub;
use crate::State;

/// Dead letters counted per subscription at most; more shows as `1000+`.
pub(crate) const COUNT_LIMIT: usize = 1000;

/// What the broker said about one subscription.
struct Row<'a> {
    sub: &'a Sub,
    dead_letters: Result<usize, String>,
    backlog: Result<Option<u64>, String>,
}

async fn read<'a>(state: &State, sub: &'a Sub) -> Row<'a> {
    let transport = &state.transport;
    let (dead, backlog) = futures::join!(
        transport.dead_letters_dyn(&sub.spec, COUNT_LIMIT),
        transport.backlog_dyn(&sub.spec)
    );
    Row {
        sub,
        dead_letters: dead.map(|d| d.len()).map_err(|e| e.to_string()),
        backlog: backlog.map_err(|e| e.to_string()),
    }
}

/// `GET /`.
pub(crate) async fn page(AxumState(state): AxumState<Arc<State>>, base: Base) -> Html<String> {
    let rows = futures::future::join_all(state.subscriptions.iter().map(|s| read(&state, s))).await;
    let body = html! {
        h1 { "Subscriptions" }
        @if rows.is_empty() {
            p.problem { "The catalogs name no subscriptions: start the dashboard with the catalogs of the services that subscribe (--catalog)." }
        } @else {
            table {
                thead { tr {
                    th { "Service" } th { "Subscription" } th { "Topic" } th { "Handles" }
                    th.num { "Dead letters" } th.num { "Backlog" }
                } }
                tbody {
                    @for row in &rows { (row_markup(&base, row)) }
                }
            }
        }
        p.muted { "Read from the broker at " (time(SystemTime::now())) ". Reload to refresh." }
    };
    frame(&state, &base, "Subscriptions", body)
}

fn row_markup(base: &Base, row: &Row<'_>) -> Markup {
    let sub = row.sub;
    html! {
        tr {
            td { (sub.service) }
            td { a href=(base.subscription(sub)) { (sub.spec.name) } }
            td { (sub.spec.topic) }
            td {
                @for (i, h) in sub.info.handles.iter().enumerate() {
                    @if i > 0 { ", " }
                    (h.name) " v" (h.version)
                }
            }
            td.num {
                @match &row.dead_letters {
                    Ok(n) if *n >= COUNT_LIMIT => a href=(base.subscription(sub)) { (COUNT_LIMIT) "+" },
                    Ok(n) => a href=(base.subscription(sub)) { (n) },
                    Err(e) => span.problem { "cannot read: " (e) },
                }
            }
            td.num {
                @match &row.backlog {
                    Ok(Some(n)) => (n),
                    Ok(None) => span.muted title="this broker does not tell" { "—" },
                    Err(e) => span.problem { "cannot read: " (e) },
                }
            }
        }
    }
}
