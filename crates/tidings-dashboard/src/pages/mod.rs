//! The pages: the frame every page shares (title, navigation, styles inline so that
//! nothing is fetched from elsewhere) and what the handlers share.

pub(crate) mod flow;
pub(crate) mod letter;
pub(crate) mod letters;
pub(crate) mod overview;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::subscriptions::Sub;
use crate::State;

/// The path the dashboard is mounted at (empty at the root), so that links work wherever
/// a service nests it.
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path().to_string();
        let original = OriginalUri::from_request_parts(parts, state)
            .await
            .map(|o| o.0.path().to_string())
            .unwrap_or_else(|_| inner.clone());
        // Nested at `/ops`, the overview is `/ops` (inner `/`) and a page `/ops/flow`.
        let base = match original.strip_suffix(inner.as_str()) {
            Some(base) => base,
            None if inner == "/" => original.as_str(),
            None => "",
        };
        let base = base.trim_end_matches('/').to_string();
        Ok(Base(base))
    }
}

/// What stays unescaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Base {
    /// The link to `path` (which starts with `/`); the overview of a nested dashboard is
    /// the mount path itself (axum matches `/ops`, not `/ops/`).
    pub(crate) fn to(&self, path: &str) -> String {
        match path {
            "/" if !self.0.is_empty() => self.0.clone(),
            _ => format!("{}{path}", self.0),
        }
    }

    /// The page of a subscription's dead letters.
    pub(crate) fn subscription(&self, sub: &Sub) -> String {
        self.to(&format!(
            "/subscriptions/{}",
            utf8_percent_encode(&sub.key, SEGMENT)
        ))
    }

    /// The page of a subscription's dead letters, with a message saying what was done.
    pub(crate) fn done(&self, sub: &Sub, message: &str) -> Response {
        let query: String = url_encode(message);
        Redirect::to(&format!("{}?done={query}", self.subscription(sub))).into_response()
    }
}

fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
header { background: #1f3a68; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.2rem; align-items: baseline; }
header a { color: #dfe8ff; text-decoration: none; } header strong { font-size: 1.1rem; }
main { padding: 1rem 1.2rem; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre, textarea { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #fff; border: 1px solid #e3e6eb; padding: .6rem; overflow: auto; }
textarea { width: 100%; box-sizing: border-box; min-height: 14rem; }
.notice { background: #e7f6ea; border: 1px solid #9fd3a9; padding: .5rem .8rem; margin: .6rem 0; }
.problem { background: #fdecec; border: 1px solid #e5a0a0; padding: .5rem .8rem; margin: .6rem 0; }
.muted { color: #6b7280; } .actions { display: flex; gap: .5rem; margin: .6rem 0; flex-wrap: wrap; }
button { padding: .3rem .8rem; cursor: pointer; } button.danger { color: #a11; }
form.inline { display: inline; } .filters { display: flex; gap: .6rem; margin: .6rem 0; align-items: end; }
"#;

/// A whole page.
pub(crate) fn frame(state: &State, base: &Base, title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (state.title) " dashboard" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header {
                        strong { (state.title) " dashboard" }
                        a href=(base.to("/")) { "Subscriptions" }
                        a href=(base.to("/flow")) { "Flow" }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page that says what went wrong and what to do, with `status`.
pub(crate) fn problem(
    state: &State,
    base: &Base,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        p.problem { (message) }
        p { a href=(base.to("/")) { "Back to the subscriptions" } }
    };
    (status, frame(state, base, title, body)).into_response()
}

/// The subscription a page names, or the page saying there is none.
pub(crate) fn find<'a>(
    state: &'a Arc<State>,
    base: &Base,
    key: &str,
) -> Result<&'a Sub, Box<Response>> {
    state.subscriptions.get(key).ok_or_else(|| {
        Box::new(problem(
            state,
            base,
            StatusCode::NOT_FOUND,
            "No such subscription",
            &format!("No subscription `{key}` in the catalogs this dashboard was started with."),
        ))
    })
}

/// A change's form: the subscription it names and its fields, once its anti-forgery
/// token is checked; or the page refusing it.
pub(crate) fn submitted<'a>(
    state: &'a Arc<State>,
    base: &Base,
    key: &str,
    body: &[u8],
) -> Result<(&'a Sub, Fields), Box<Response>> {
    let fields = Fields::parse(body);
    if !crate::auth::form_token_ok(state, fields.get("token")) {
        return Err(Box::new(forged(state, base)));
    }
    Ok((find(state, base, key)?, fields))
}

/// A refused form: its anti-forgery token is missing or not this dashboard's.
fn forged(state: &State, base: &Base) -> Response {
    problem(
        state,
        base,
        StatusCode::FORBIDDEN,
        "Refused",
        "The form did not carry this dashboard's token (a page of another site, or a dashboard restarted since the page was loaded): reload the page and try again. Nothing was changed.",
    )
}

/// The fields of a submitted form, repeated names kept (`id=..&id=..`).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Fields(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 3339 to the second, UTC.
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The hidden field every form carries.
pub(crate) fn token_field(state: &State) -> Markup {
    html! { input type="hidden" name="token" value=(state.form_token); }
}
