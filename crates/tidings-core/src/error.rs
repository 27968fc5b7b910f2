//! The one error type of tidings: a kind to match on, a message with context, and the
//! backend error as its source.

use std::borrow::Cow;
use std::fmt;

/// A boxed error from a backend (broker client, database driver, codec).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the tidings [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, to match on. Backend details live in the error's source.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bus or a subscription is configured wrongly (found by `build()`).
    Config,
    /// An event of a topic the service did not declare with `publishes::<T>()`.
    NotDeclared,
    /// An event could not be encoded.
    Encode,
    /// A payload could not be decoded (bad bytes, too deep, wrong shape).
    Decode,
    /// A message is larger than the configured or broker limit.
    MessageTooLarge,
    /// The broker cannot be reached or the connection dropped; retrying may help.
    Unavailable,
    /// The broker refused the operation (negative acknowledgement, policy, quota).
    Rejected,
    /// The operation did not finish in time; retrying may help.
    Timeout,
    /// Credentials were refused.
    Unauthorized,
    /// A topic, queue or subscription does not exist.
    NotFound,
    /// The bus or transport was shut down.
    Closed,
    /// The transport cannot do what was asked.
    Unsupported,
    /// Any other backend failure.
    Backend,
}

impl ErrorKind {
    /// A short, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::NotDeclared => "not-declared",
            ErrorKind::Encode => "encode",
            ErrorKind::Decode => "decode",
            ErrorKind::MessageTooLarge => "message-too-large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Closed => "closed",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tidings error: a [`ErrorKind`], a message that says what happened and what to do,
/// and optionally the backend error that caused it.
///
/// ```
/// use tidings_core::{Error, ErrorKind};
/// let e = Error::new(ErrorKind::Unavailable, "cannot reach the broker at localhost:5672");
/// assert!(e.is_retryable());
/// assert_eq!(e.kind(), ErrorKind::Unavailable);
/// ```
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the backend error that caused this one.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Prefix the message with more context (`"publishing to lending: <message>"`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message).into();
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying the same operation again later may succeed (the broker was
    /// unreachable or slow), as opposed to a refusal or a bad input.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// Shorthand for a [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Shorthand for an [`ErrorKind::Closed`] error.
    pub fn closed(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Closed, message)
    }

    /// Shorthand for an [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for an [`ErrorKind::Backend`] error wrapping `source`.
    pub fn backend(message: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Error::new(ErrorKind::Backend, message).with_source(source)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)?;
        // The cause chain, each cause once: a source whose text its parent already shows
        // (clients that print their source in their own message) is not repeated.
        let mut shown = String::new();
        let mut next = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.contains(&text) && !self.message.contains(&text) {
                write!(f, ": {text}")?;
                shown.push_str(&text);
            }
            next = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_message_kind_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::unavailable("cannot reach broker")
            .with_source(io)
            .context("publishing to lending");
        assert_eq!(
            e.to_string(),
            "publishing to lending: cannot reach broker (unavailable): refused"
        );
        assert!(e.is_retryable());
        assert!(!Error::config("x").is_retryable());
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "request failed: {}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn display_shows_the_whole_cause_chain_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let nested = Error::unavailable("cannot reach broker").with_source(Wrapper(io));
        assert_eq!(
            nested.to_string(),
            "cannot reach broker (unavailable): request failed: refused"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let deeper = Error::backend("outer", Error::unavailable("inner").with_source(io));
        assert_eq!(
            deeper.to_string(),
            "outer (backend): inner (unavailable): refused"
        );
    }
}
