//! Turning librdkafka errors into tidings [`Error`]s with a kind to match on.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tidings_core::{Error, ErrorKind};

use crate::config::is_secret_key;

/// The tidings error kind of a librdkafka error code.
pub(crate) fn kind_of_code(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            ErrorKind::MessageTooLarge
        }
        C::BrokerTransportFailure
        | C::Resolve
        | C::AllBrokersDown
        | C::NetworkException
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::PreferredLeaderNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::CoordinatorLoadInProgress
        | C::QueueFull
        // A record not acknowledged within message.timeout.ms: the brokers stayed away.
        | C::MessageTimedOut => ErrorKind::Unavailable,
        C::OperationTimedOut | C::RequestTimedOut => {
            ErrorKind::Timeout
        }
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed => ErrorKind::Unauthorized,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => ErrorKind::NotFound,
        C::UnsupportedFeature | C::UnsupportedVersion => ErrorKind::Unsupported,
        C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::PolicyViolation
        | C::InvalidRequiredAcks
        | C::InvalidRecord
        | C::InvalidProducerEpoch
        | C::OutOfOrderSequenceNumber
        | C::DuplicateSequenceNumber
        | C::ProducerFenced => ErrorKind::Rejected,
        _ => ErrorKind::Backend,
    }
}

/// A tidings error for a librdkafka error, with `what` saying what was being done.
pub(crate) fn from_kafka(what: impl std::fmt::Display, error: KafkaError) -> Error {
    let kind = match &error {
        KafkaError::ClientConfig(_, desc, key, value) => {
            // librdkafka echoes the value; keep secrets out of the message.
            let value = if is_secret_key(key) {
                "***"
            } else {
                value.as_str()
            };
            return Error::config(format!(
                "{what}: invalid Kafka setting {key}={value}: {desc}"
            ));
        }
        KafkaError::ClientCreation(_) => ErrorKind::Config,
        KafkaError::Canceled => ErrorKind::Closed,
        KafkaError::Nul(_) => ErrorKind::Config,
        other => other
            .rdkafka_error_code()
            .map(kind_of_code)
            .unwrap_or(ErrorKind::Backend),
    };
    let hint = match kind {
        ErrorKind::Unavailable | ErrorKind::Timeout => " (is the broker reachable?)",
        ErrorKind::MessageTooLarge => {
            " (the broker's message.max.bytes is smaller than the record)"
        }
        _ => "",
    };
    Error::new(kind, format!("{what}{hint}")).with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_failures_get_kinds() {
        let e = from_kafka(
            "publishing",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
        let e = from_kafka(
            "publishing",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        let e = from_kafka(
            "publishing",
            KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = from_kafka(
            "publishing",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        let e = from_kafka(
            "publishing",
            KafkaError::MessageProduction(RDKafkaErrorCode::PolicyViolation),
        );
        assert_eq!(e.kind(), ErrorKind::Rejected);
    }

    #[test]
    fn config_errors_hide_secret_values() {
        let e = from_kafka(
            "creating the producer",
            KafkaError::ClientConfig(
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "bad".into(),
                "ssl.key.password".into(),
                "hunter2".into(),
            ),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
