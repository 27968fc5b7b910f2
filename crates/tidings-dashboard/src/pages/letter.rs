//! One dead letter: its attributes, headers, failure and payload; edit the payload and
//! replay it as a new delivery, checked against the event's JSON Schema first.

use std::sync::Arc;

use axum::extract::{Path, RawForm, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use tidings_core::{Codec, DeadLetter, DecodeLimits, Replay};
use uuid::Uuid;

use super::letters::audit;
use super::{find, frame, problem, submitted, time, token_field, Base};
use crate::audit::Action;
use crate::auth::Who;
use crate::subscriptions::{schema_for, Sub};
use crate::State;

/// `GET /subscriptions/{key}/letters/{id}`.
pub(crate) async fn page(
    AxumState(state): AxumState<Arc<State>>,
    base: Base,
    Path((key, id)): Path<(String, String)>,
) -> Response {
    let (sub, letter) = match load(&state, &base, &key, &id).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    show(&state, &base, sub, &letter, None, &[], StatusCode::OK)
}

/// The subscription and its dead letter `id`, or the page that says why not.
async fn load<'a>(
    state: &'a Arc<State>,
    base: &Base,
    key: &str,
    id: &str,
) -> Result<(&'a Sub, DeadLetter), Box<Response>> {
    let sub = find(state, base, key)?;
    let Ok(uuid) = Uuid::parse_str(id) else {
        return Err(Box::new(problem(
            state,
            base,
            StatusCode::NOT_FOUND,
            "No such dead letter",
            &format!("`{id}` is not a dead letter id."),
        )));
    };
    match state.transport.dead_letter_dyn(&sub.spec, uuid).await {
        Ok(Some(letter)) => Ok((sub, letter)),
        Ok(None) => Err(Box::new(problem(
            state,
            base,
            StatusCode::NOT_FOUND,
            "No such dead letter",
            &format!("Subscription `{}` has no dead letter {uuid}: it was replayed or purged, or the id is wrong.", sub.spec.name),
        ))),
        Err(e) => Err(Box::new(problem(
            state,
            base,
            StatusCode::BAD_GATEWAY,
            "Cannot read the dead letter",
            &format!("Looking up dead letter {uuid} of `{}` failed: {e}", sub.spec.name),
        ))),
    }
}

/// The payload as indented JSON, or why it cannot be shown so.
fn pretty_payload(letter: &DeadLetter) -> Result<String, String> {
    letter
        .envelope
        .payload_json(DecodeLimits::default())
        .map(|v| serde_json::to_string_pretty(&v).expect("a JSON value serialises"))
        .map_err(|e| e.to_string())
}

/// The page of one dead letter, its edit form holding `edited` (by default the payload),
/// with `problems` of the last edit listed above it.
fn show(
    state: &State,
    base: &Base,
    sub: &Sub,
    letter: &DeadLetter,
    edited: Option<&str>,
    problems: &[String],
    status: StatusCode,
) -> Response {
    let env = &letter.envelope;
    let here = format!("{}/letters/{}", base.subscription(sub), env.id);
    let claimed = env.header(tidings_core::claim_check::CLAIM_CHECK);
    let decoded = match claimed {
        Some(location) => Err(format!(
            "it is in the claim-check store at `{location}` ({} bytes), which this dashboard does not read",
            env.header(tidings_core::claim_check::CLAIM_CHECK_SIZE).unwrap_or("?")
        )),
        None => pretty_payload(letter),
    };
    let edited = edited.unwrap_or_else(|| decoded.as_deref().unwrap_or(""));
    let body = html! {
        p { a href=(base.subscription(sub)) { "← dead letters of " (sub.spec.name) } }
        h1 { (env.event_type) " v" (env.version) }
        h2 { "Failure" }
        table {
            tr { th { "Reason" } td.reason { (letter.info.reason) } }
            tr { th { "Attempts" } td { (letter.info.attempts) } }
            tr { th { "Dead-lettered at" } td { (time(letter.info.time)) } }
            tr { th { "By service" } td { (letter.info.service) } }
        }
        h2 { "Attributes and headers" }
        (attributes(letter))
        h2 { "Payload" }
        @match &decoded {
            Ok(json) => pre.payload { (json) },
            Err(e) if claimed.is_some() => p.problem { "The payload is not shown: " (e) ". Replaying it as it is sends the reference again; an edited payload replaces it." },
            Err(e) => p.problem { "The payload (" (env.payload.len()) " bytes, " (env.content_type) ") does not decode: " (e) },
        }
        h2 { "Fix and replay" }
        @if !problems.is_empty() {
            div.problem role="alert" {
                p { "Not replayed: the edited payload is not valid." }
                ul { @for p in problems { li { (p) } } }
            }
        }
        form method="post" action=(format!("{here}/replay")) {
            (token_field(state))
            p.muted { "Edit the payload as JSON; it is checked against the event's schema, encoded as " (env.content_type) " and delivered to this subscription only, and the dead letter is removed." }
            textarea name="payload" aria-label="payload" spellcheck="false" { (edited) }
            p {
                label { input type="radio" name="id_choice" value="keep" checked; " keep the id " (env.id) " (a consumer that deduplicates by id takes it as the same event, which never completed)" }
                br;
                label { input type="radio" name="id_choice" value="new"; " give it a new id (a new event, caused by this one)" }
            }
            button type="submit" { "Replay the edited event" }
        }
    };
    (
        status,
        frame(state, base, &format!("Dead letter {}", env.id), body),
    )
        .into_response()
}

fn attributes(letter: &DeadLetter) -> Markup {
    html! {
        table {
            @for (name, value) in letter.envelope.attributes() {
                tr { th { (name) } td { (value) } }
            }
        }
    }
}

/// `POST /subscriptions/{key}/letters/{id}/replay`: `payload` (JSON), `id_choice`
/// (`keep` or `new`).
pub(crate) async fn replay_edited(
    AxumState(state): AxumState<Arc<State>>,
    base: Base,
    Extension(who): Extension<Who>,
    Path((key, id)): Path<(String, String)>,
    RawForm(body): RawForm,
) -> Response {
    let fields = match submitted(&state, &base, &key, &body) {
        Ok((_, fields)) => fields,
        Err(response) => return *response,
    };
    let (sub, letter) = match load(&state, &base, &key, &id).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let text = fields.get("payload").unwrap_or("");
    let refuse = |problems: Vec<String>| {
        show(
            &state,
            &base,
            sub,
            &letter,
            Some(text),
            &problems,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return refuse(vec![format!("not JSON: {e}")]),
    };
    let env = &letter.envelope;
    if let Some(schema) = schema_for(&state.catalogs, sub, &env.event_type, env.version) {
        match jsonschema::validator_for(schema) {
            Ok(validator) => {
                let problems: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| match e.instance_path().to_string() {
                        path if path.is_empty() => e.to_string(),
                        path => format!("{path}: {e}"),
                    })
                    .collect();
                if !problems.is_empty() {
                    return refuse(problems);
                }
            }
            Err(e) => {
                return refuse(vec![format!(
                    "the catalog's schema of {} v{} is not usable: {e}",
                    env.event_type, env.version
                )])
            }
        }
    }
    let Some(codec) = Codec::for_content_type(&env.content_type) else {
        return refuse(vec![format!(
            "no codec for the content type {:?}, so an edited payload cannot be encoded",
            env.content_type
        )]);
    };
    let payload = match codec.encode(&value) {
        Ok(bytes) => bytes,
        Err(e) => return refuse(vec![format!("cannot encode the payload: {e}")]),
    };
    let mut edited = env.clone();
    edited.payload = payload.into();
    if fields.get("id_choice") == Some("new") {
        edited.id = Uuid::now_v7();
        edited.causation_id = Some(env.id);
    }
    let (original, sent_as) = (env.id, edited.id);
    let which = Replay::Edited {
        id: original,
        envelope: Box::new(edited),
    };
    match state.transport.replay_dead_letters_dyn(&sub.spec, &which).await {
        Ok(0) => problem(
            &state,
            &base,
            StatusCode::CONFLICT,
            "Not replayed",
            &format!("Dead letter {original} was replayed or purged meanwhile; nothing was sent."),
        ),
        Ok(_) => {
            audit(&state, &who, sub, Action::ReplayEdited { original, sent_as });
            let message = if original == sent_as {
                format!("Replayed dead letter {original} with the edited payload, keeping its id.")
            } else {
                format!("Replayed dead letter {original} with the edited payload as the new event {sent_as}.")
            };
            base.done(sub, &message)
        }
        Err(e) => problem(
            &state,
            &base,
            StatusCode::BAD_GATEWAY,
            "Replay failed",
            &format!("Replaying the edited dead letter {original} failed: {e}. It is still a dead letter, unchanged."),
        ),
    }
}
