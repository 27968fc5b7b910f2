//! Service Bus answers as tidings errors: the status decides the kind, the `<Detail>` of
//! the answer goes into the message. The SAS key is never part of one.

use tidings_core::{Error, ErrorKind};

use crate::client::Failure;

/// The `<Detail>` (or the start of the body) of an error answer, for messages.
pub(crate) fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let inner = match (text.find("<Detail>"), text.find("</Detail>")) {
        (Some(a), Some(b)) if b > a => &text[a + 8..b],
        _ => text.trim(),
    };
    let mut s: String = inner.chars().take(300).collect();
    if s.is_empty() {
        s = "no details".into();
    }
    s
}

/// An error for an unexpected status of `what` (`"sending to topic `lending`"`).
pub(crate) fn status_error(status: u16, body: &[u8], what: &str, key_name: &str) -> Error {
    let detail = detail(body);
    match status {
        401 => Error::new(
            ErrorKind::Unauthorized,
            format!("{what}: Service Bus refused the SAS policy `{key_name}` (401): {detail}"),
        ),
        403 if detail.contains("Size") || detail.contains("size") || detail.contains("large") => {
            Error::new(
                ErrorKind::MessageTooLarge,
                format!("{what}: the message is larger than the namespace accepts (403): {detail}"),
            )
        }
        403 => Error::new(
            ErrorKind::Rejected,
            format!("{what}: Service Bus refused it, quota exceeded or forbidden (403): {detail}"),
        ),
        404 | 410 => Error::new(
            ErrorKind::NotFound,
            format!("{what}: it does not exist ({status}): {detail}"),
        ),
        413 => Error::new(
            ErrorKind::MessageTooLarge,
            format!("{what}: the request is too large (413): {detail}"),
        ),
        400 | 409 => Error::new(
            ErrorKind::Rejected,
            format!("{what}: Service Bus rejected the request ({status}): {detail}"),
        ),
        408 | 429 | 500..=599 => Error::new(
            ErrorKind::Unavailable,
            format!("{what}: Service Bus is unavailable or busy ({status}): {detail}"),
        ),
        _ => Error::new(
            ErrorKind::Backend,
            format!("{what}: unexpected answer {status}: {detail}"),
        ),
    }
}

/// An error for a request that got no answer: one that could not be made (the endpoint
/// makes no URL, reqwest refuses a header) is [`ErrorKind::Backend`]; one sent without an
/// answer (no connection, a timeout, a broken connection) is [`ErrorKind::Unavailable`]
/// (retryable), naming `address` once. reqwest's error, without its URL, is the source,
/// never repeated in the message.
pub(crate) fn request_error(failure: Failure, what: &str, address: &str) -> Error {
    match failure {
        Failure::Endpoint(e) => Error::new(
            ErrorKind::Backend,
            format!("{what}: the endpoint is not a URL"),
        )
        .with_source(e),
        Failure::Request(e) => Error::new(
            ErrorKind::Backend,
            format!("{what}: cannot build the request"),
        )
        .with_source(e),
        Failure::NoAnswer(e) => {
            Error::unavailable(format!("{what}: no answer from Service Bus at {address}"))
                .with_source(e)
        }
    }
}
