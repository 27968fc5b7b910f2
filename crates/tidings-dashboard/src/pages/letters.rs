//! The dead letters of one subscription: a filtered, paged table; replay or purge the
//! selected ones or all (a purge asks to confirm, then deletes exactly what it listed).

use std::sync::Arc;

use axum::extract::{Path, Query, RawForm, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;
use serde::Deserialize;
use tidings_core::{DeadLetter, Replay};
use uuid::Uuid;

use super::{find, frame, problem, submitted, time, token_field, Base, Fields};
use crate::audit::{Action, AuditEntry};
use crate::auth::Who;
use crate::subscriptions::Sub;
use crate::State;

/// Dead letters per page.
const PAGE: usize = 50;
/// Dead letters read for the table at most.
const READ_LIMIT: usize = 10_000;

/// The table's filters and page, and a message from the last change.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct View {
    reason: Option<String>,
    event: Option<String>,
    page: Option<usize>,
    done: Option<String>,
}

/// `GET /subscriptions/{key}`.
pub(crate) async fn page(
    AxumState(state): AxumState<Arc<State>>,
    base: Base,
    Path(key): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let sub = match find(&state, &base, &key) {
        Ok(sub) => sub,
        Err(response) => return *response,
    };
    let letters = match state
        .transport
        .dead_letters_dyn(&sub.spec, READ_LIMIT)
        .await
    {
        Ok(letters) => letters,
        Err(e) => return unreadable(&state, &base, sub, &e),
    };
    let reason = view
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let event = view.event.as_deref().filter(|e| !e.is_empty());
    let mut events: Vec<&str> = letters.iter().map(|d| &*d.envelope.event_type).collect();
    events.sort_unstable();
    events.dedup();
    let shown: Vec<&DeadLetter> = letters
        .iter()
        .filter(|d| reason.is_none_or(|r| d.info.reason.contains(r)))
        .filter(|d| event.is_none_or(|e| d.envelope.event_type == e))
        .collect();
    let pages = shown.len().div_ceil(PAGE).max(1);
    let current = view.page.unwrap_or(1).clamp(1, pages);
    let on_page = shown.iter().skip((current - 1) * PAGE).take(PAGE);
    let here = base.subscription(sub);
    let page_link = |n: usize| {
        let mut query = vec![format!("page={n}")];
        if let Some(r) = reason {
            query.push(format!("reason={}", super::url_encode(r)));
        }
        if let Some(e) = event {
            query.push(format!("event={}", super::url_encode(e)));
        }
        format!("{here}?{}", query.join("&"))
    };
    let body = html! {
        h1 { "Dead letters of " (sub.spec.name) }
        p.muted { "Service " (sub.service) " · topic " (sub.spec.topic) " · "
            (letters.len()) @if letters.len() >= READ_LIMIT { "+" } " dead letters" }
        @if let Some(done) = &view.done { p.notice role="status" { (done) } }
        form.filters method="get" action=(here) {
            label { "Reason contains " input type="text" name="reason" value=(reason.unwrap_or("")); }
            label { "Event "
                select name="event" {
                    option value="" { "any" }
                    @for e in &events { option value=(e) selected[event == Some(*e)] { (e) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if shown.is_empty() {
            p { "No dead letters" @if reason.is_some() || event.is_some() { " match the filter" } "." }
        } @else {
            form method="post" id="selection" {
                (token_field(&state))
                div.actions {
                    button type="submit" formaction=(format!("{here}/replay")) { "Replay selected" }
                    button.danger type="submit" formaction=(format!("{here}/purge")) { "Purge selected…" }
                    button type="submit" name="all" value="1" formaction=(format!("{here}/replay")) { "Replay all" }
                    button.danger type="submit" name="all" value="1" formaction=(format!("{here}/purge")) { "Purge all…" }
                }
                table {
                    thead { tr {
                        th { input type="checkbox" title="select every row of this page" onclick="for (const b of document.querySelectorAll('input[name=id]')) b.checked = this.checked"; }
                        th { "Time" } th { "Event" } th.num { "Version" } th { "Reason" }
                        th.num { "Attempts" } th { "Correlation id" }
                    } }
                    tbody {
                        @for d in on_page {
                            tr {
                                td { input type="checkbox" name="id" value=(d.envelope.id) aria-label=(format!("select {}", d.envelope.id)); }
                                td { a href=(format!("{here}/letters/{}", d.envelope.id)) { (time(d.info.time)) } }
                                td { (d.envelope.event_type) }
                                td.num { (d.envelope.version) }
                                td.reason { (d.info.reason) }
                                td.num { (d.info.attempts) }
                                td { @if let Some(c) = d.envelope.correlation_id { (c) } @else { span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                p.actions {
                    @if current > 1 { a href=(page_link(current - 1)) { "← newer" } }
                    span { "page " (current) " of " (pages) }
                    @if current < pages { a href=(page_link(current + 1)) { "older →" } }
                }
            }
        }
    };
    frame(
        &state,
        &base,
        &format!("Dead letters of {}", sub.spec.name),
        body,
    )
    .into_response()
}

fn unreadable(state: &State, base: &Base, sub: &Sub, e: &tidings_core::Error) -> Response {
    problem(
        state,
        base,
        StatusCode::BAD_GATEWAY,
        "Cannot read the dead letters",
        &format!(
            "Reading the dead letters of subscription `{}` on topic `{}` failed: {e}",
            sub.spec.name, sub.spec.topic
        ),
    )
}

/// The ids a form selected; a malformed id is refused rather than skipped.
fn selected_ids(fields: &Fields) -> Result<Vec<Uuid>, String> {
    fields
        .all("id")
        .map(|id| Uuid::parse_str(id).map_err(|_| format!("`{id}` is not a dead letter id")))
        .collect()
}

/// `POST /subscriptions/{key}/replay`: the selected ids, or `all`.
pub(crate) async fn replay(
    AxumState(state): AxumState<Arc<State>>,
    base: Base,
    Extension(who): Extension<Who>,
    Path(key): Path<String>,
    RawForm(body): RawForm,
) -> Response {
    let (sub, fields) = match submitted(&state, &base, &key, &body) {
        Ok(form) => form,
        Err(response) => return *response,
    };
    let all = fields.get("all") == Some("1");
    let ids = match selected_ids(&fields) {
        Ok(ids) => ids,
        Err(e) => {
            return problem(
                &state,
                &base,
                StatusCode::BAD_REQUEST,
                "Nothing replayed",
                &e,
            )
        }
    };
    if !all && ids.is_empty() {
        return base.done(
            sub,
            "Nothing replayed: select dead letters first, or use Replay all.",
        );
    }
    let which = if all {
        Replay::All
    } else {
        Replay::Ids(ids.clone())
    };
    match state.transport.replay_dead_letters_dyn(&sub.spec, &which).await {
        Ok(replayed) => {
            audit(&state, &who, sub, Action::Replay { ids, all, replayed });
            base.done(sub, &format!("Replayed {replayed} dead letters."))
        }
        Err(e) => problem(
            &state,
            &base,
            StatusCode::BAD_GATEWAY,
            "Replay failed",
            &format!("Replaying dead letters of `{}` failed: {e}. What was not replayed is still a dead letter.", sub.spec.name),
        ),
    }
}

/// `POST /subscriptions/{key}/purge`: without `confirm`, the page that asks, listing the
/// ids it will delete; with it, deletes exactly those.
pub(crate) async fn purge(
    AxumState(state): AxumState<Arc<State>>,
    base: Base,
    Extension(who): Extension<Who>,
    Path(key): Path<String>,
    RawForm(body): RawForm,
) -> Response {
    let (sub, fields) = match submitted(&state, &base, &key, &body) {
        Ok(form) => form,
        Err(response) => return *response,
    };
    let mut ids = match selected_ids(&fields) {
        Ok(ids) => ids,
        Err(e) => return problem(&state, &base, StatusCode::BAD_REQUEST, "Nothing purged", &e),
    };
    if fields.get("confirm") == Some("yes") {
        if ids.is_empty() {
            return base.done(sub, "Nothing purged: nothing was selected.");
        }
        return match state
            .transport
            .purge_dead_letters_dyn(&sub.spec, &Replay::Ids(ids.clone()))
            .await
        {
            Ok(purged) => {
                audit(&state, &who, sub, Action::Purge { ids, purged });
                base.done(sub, &format!("Purged {purged} dead letters."))
            }
            Err(e) => problem(
                &state,
                &base,
                StatusCode::BAD_GATEWAY,
                "Purge failed",
                &format!("Purging dead letters of `{}` failed: {e}", sub.spec.name),
            ),
        };
    }
    if fields.get("all") == Some("1") {
        ids = match state
            .transport
            .dead_letters_dyn(&sub.spec, usize::MAX)
            .await
        {
            Ok(letters) => letters.iter().map(|d| d.envelope.id).collect(),
            Err(e) => return unreadable(&state, &base, sub, &e),
        };
    }
    if ids.is_empty() {
        return base.done(
            sub,
            "Nothing purged: select dead letters first, or use Purge all.",
        );
    }
    let here = base.subscription(sub);
    let body = html! {
        h1 { "Purge dead letters?" }
        p.problem { "Delete " (ids.len()) " dead letters of subscription " (sub.spec.name)
            " for good? They cannot be replayed afterwards. Dead letters that arrive after this page was made are not deleted." }
        form method="post" action=(format!("{here}/purge")) {
            (token_field(&state))
            input type="hidden" name="confirm" value="yes";
            @for id in &ids { input type="hidden" name="id" value=(id); }
            div.actions {
                button.danger type="submit" { "Delete " (ids.len()) " dead letters" }
                a href=(here) { "Cancel" }
            }
        }
        details { summary { "The ids" } ul { @for id in &ids { li { (id) } } } }
    };
    frame(&state, &base, "Purge dead letters?", body).into_response()
}

/// Record a change in the audit trail.
pub(crate) fn audit(state: &State, who: &Who, sub: &Sub, action: Action) {
    (state.audit)(&AuditEntry {
        time: std::time::SystemTime::now(),
        who: who.0.clone(),
        service: sub.service.clone(),
        subscription: sub.spec.name.clone(),
        topic: sub.spec.topic.clone(),
        action,
    });
}
