//! Who may use the dashboard, and the checks every request and every form goes through.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tidings_core::Secret;

use crate::State;

/// How requests prove who they are.
#[non_exhaustive]
#[derive(Clone)]
pub enum Auth {
    /// A shared token: `Authorization: Bearer <token>`, or HTTP basic auth with the token
    /// as the password and any user name (which the audit trail records), so a browser
    /// can log in by its own prompt.
    Token(Secret),
    /// One user name and password, by HTTP basic auth.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
}

impl Auth {
    /// A shared token (see [`Auth::Token`]).
    pub fn token(token: impl Into<String>) -> Self {
        Auth::Token(Secret::new(token))
    }

    /// One user by HTTP basic auth.
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Self {
        Auth::Basic {
            user: user.into(),
            password: Secret::new(password),
        }
    }

    /// Who the request is, if its credentials are right.
    fn check(&self, headers: &HeaderMap) -> Option<String> {
        let given = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, value) = given.split_once(' ')?;
        match (self, scheme.to_ascii_lowercase().as_str()) {
            (Auth::Token(token), "bearer") => {
                same(value.trim(), token.expose()).then(|| "token".to_string())
            }
            (_, "basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                let ok = match self {
                    Auth::Token(token) => same(password, token.expose()),
                    Auth::Basic {
                        user: expected,
                        password: secret,
                    } => same(user, expected) & same(password, secret.expose()),
                };
                let who = if user.is_empty() { "token" } else { user };
                ok.then(|| who.to_string())
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}:***)"),
        }
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Who made the request, for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct Who(pub(crate) String);

/// Every request: the credentials when auth is on, and for changes, that the browser did
/// not send them from another site.
pub(crate) async fn require(
    AxumState(state): AxumState<Arc<State>>,
    mut request: Request,
    next: Next,
) -> Response {
    let who = match &state.auth {
        None => "anonymous".to_string(),
        Some(auth) => match auth.check(request.headers()) {
            Some(who) => who,
            None => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"tidings dashboard\", charset=\"UTF-8\"",
                    )],
                    "This dashboard needs credentials: HTTP basic auth, or Authorization: Bearer <token>.\n",
                )
                    .into_response()
            }
        },
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Err(why) = same_site(request.headers()) {
            return (StatusCode::FORBIDDEN, why).into_response();
        }
    }
    request.extensions_mut().insert(Who(who));
    next.run(request).await
}

/// Refuse a change the browser says comes from another site (`Sec-Fetch-Site`), or whose
/// `Origin` is not this host.
fn same_site(headers: &HeaderMap) -> Result<(), &'static str> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return Err("Refused: the browser says this request comes from another site.\n");
    }
    if let (Some(origin), Some(host)) = (text("origin"), text("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin != "null" && origin_host != host {
            return Err("Refused: this request comes from a page of another origin.\n");
        }
    }
    Ok(())
}

/// Whether a form's anti-forgery token is this dashboard's.
pub(crate) fn form_token_ok(state: &State, given: Option<&str>) -> bool {
    given.is_some_and(|t| same(t, &state.form_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn a_token_is_accepted_as_bearer_or_as_the_basic_password() {
        let auth = Auth::token("s3cret");
        let bearer = headers(&[("authorization", "Bearer s3cret")]);
        assert_eq!(auth.check(&bearer).as_deref(), Some("token"));
        let browser = headers(&[("authorization", &basic("alice:s3cret"))]);
        assert_eq!(auth.check(&browser).as_deref(), Some("alice"));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            &basic("alice:nope"),
            "s3cret",
        ] {
            assert_eq!(
                auth.check(&headers(&[("authorization", wrong)])),
                None,
                "{wrong}"
            );
        }
        assert_eq!(auth.check(&HeaderMap::new()), None);
    }

    #[test]
    fn basic_auth_needs_the_user_and_the_password() {
        let auth = Auth::basic("ops", "pw");
        let ok = headers(&[("authorization", &basic("ops:pw"))]);
        assert_eq!(auth.check(&ok).as_deref(), Some("ops"));
        let other_user = headers(&[("authorization", &basic("eve:pw"))]);
        assert_eq!(auth.check(&other_user), None);
        let bearer = headers(&[("authorization", "Bearer pw")]);
        assert_eq!(auth.check(&bearer), None);
        assert_eq!(format!("{auth:?}"), "Basic(ops:***)");
    }

    #[test]
    fn changes_from_another_site_are_refused() {
        assert!(same_site(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        let foreign = headers(&[("origin", "http://evil.test"), ("host", "127.0.0.1:8080")]);
        assert!(same_site(&foreign).is_err());
        let own = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(same_site(&own).is_ok());
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
    }
}
