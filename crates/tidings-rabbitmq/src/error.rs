//! How lapin's errors become tidings errors: the AMQP reply code picks the kind, lapin's
//! error is kept as the source. Nothing here ever sees the password.

use lapin::protocol::AMQPError;
use tidings_core::{Error, ErrorKind};

/// AMQP reply codes the transport tells apart.
pub(crate) mod code {
    pub(crate) const CONNECTION_FORCED: u16 = 320;
    pub(crate) const CONTENT_TOO_LARGE: u16 = 311;
    pub(crate) const ACCESS_REFUSED: u16 = 403;
    pub(crate) const NOT_FOUND: u16 = 404;
    pub(crate) const RESOURCE_LOCKED: u16 = 405;
    pub(crate) const PRECONDITION_FAILED: u16 = 406;
    pub(crate) const NOT_ALLOWED: u16 = 530;
    pub(crate) const RESOURCE_ERROR: u16 = 506;
    pub(crate) const FRAME_ERROR: u16 = 501;
    pub(crate) const INTERNAL_ERROR: u16 = 541;
}

/// The AMQP error the broker answered with, if that is what `e` is.
pub(crate) fn amqp_error(e: &lapin::Error) -> Option<&AMQPError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp),
        _ => None,
    }
}

/// Whether the broker closed the channel because a message was over its
/// `max_message_size` ("message size N is larger than configured max size M").
fn is_size_refusal(amqp: &AMQPError) -> bool {
    let text = amqp.get_message().as_str();
    text.contains("message size") && text.contains("larger than")
}

/// The tidings kind for a lapin error.
pub(crate) fn kind_of(e: &lapin::Error) -> ErrorKind {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.get_id() {
            code::NOT_FOUND => ErrorKind::NotFound,
            code::PRECONDITION_FAILED if is_size_refusal(amqp) => ErrorKind::MessageTooLarge,
            code::ACCESS_REFUSED => ErrorKind::Unauthorized,
            code::PRECONDITION_FAILED | code::NOT_ALLOWED | code::RESOURCE_LOCKED => {
                ErrorKind::Config
            }
            code::CONTENT_TOO_LARGE | code::FRAME_ERROR => ErrorKind::MessageTooLarge,
            code::CONNECTION_FORCED | code::RESOURCE_ERROR | code::INTERNAL_ERROR => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Backend,
        },
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::RuntimeShutdownError(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::InvalidChannel(_)
        | lapin::ErrorKind::ChannelsLimitReached => ErrorKind::Unavailable,
        lapin::ErrorKind::AuthProviderError(_) => ErrorKind::Unauthorized,
        _ => ErrorKind::Backend,
    }
}

/// Whether trying again on a new channel or connection may help.
pub(crate) fn is_transient(e: &lapin::Error) -> bool {
    kind_of(e) == ErrorKind::Unavailable
}

/// A tidings error for a failed lapin operation: `what` says what was being done.
pub(crate) fn from_lapin(e: lapin::Error, what: impl std::fmt::Display) -> Error {
    let kind = kind_of(&e);
    let amqp = amqp_error(&e);
    let inequivalent = amqp.is_some_and(|a| a.get_message().as_str().contains("inequivalent arg"));
    let hint = match (kind, amqp.map(AMQPError::get_id)) {
        (ErrorKind::Config, Some(code::PRECONDITION_FAILED)) if inequivalent => {
            "; the queue or exchange exists with other settings (durability, type, arguments): delete it or keep the old settings"
        }
        (ErrorKind::Config, Some(code::NOT_ALLOWED)) => "; check the vhost in the URL and the user's permissions on it",
        (ErrorKind::Unauthorized, _) => "; check the user name and password in the URL",
        _ => "",
    };
    Error::new(kind, format!("{what}{hint}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

    #[test]
    fn reply_codes_pick_the_kind() {
        let not_found: lapin::Error = lapin::ErrorKind::ProtocolError(AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND),
            "NOT_FOUND - no exchange 'x'".into(),
        ))
        .into();
        assert_eq!(kind_of(&not_found), ErrorKind::NotFound);
        let refused: lapin::Error = lapin::ErrorKind::ProtocolError(AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q'".into(),
        ))
        .into();
        let e = from_lapin(refused, "declaring queue `q`");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("other settings"), "{e}");
        let io: lapin::Error = lapin::ErrorKind::IOError(std::sync::Arc::new(
            std::io::ErrorKind::ConnectionRefused.into(),
        ))
        .into();
        assert!(is_transient(&io));
    }

    #[test]
    fn a_message_over_the_brokers_max_size_is_message_too_large() {
        let too_large: lapin::Error = lapin::ErrorKind::ProtocolError(AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - message size 134217729 is larger than configured max size 134217728".into(),
        ))
        .into();
        assert_eq!(kind_of(&too_large), ErrorKind::MessageTooLarge);
        let e = from_lapin(too_large, "dead-lettering");
        assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
    }
}
