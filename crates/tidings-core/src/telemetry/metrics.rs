//! Metrics by the OpenTelemetry messaging conventions (feature `opentelemetry`), through
//! the OpenTelemetry metrics API and the global meter provider: the same API as the
//! spans' bridge, so one SDK setup exports both. Without the feature every call is empty.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `messaging.client.sent.messages` | counter | `{message}` | system, destination, service, `error.type` on failure |
//! | `messaging.client.operation.duration` | histogram | `s` | system, operation `send`, destination, service, `error.type` |
//! | `messaging.client.consumed.messages` | counter | `{message}` | system, destination, subscription, service |
//! | `messaging.process.duration` | histogram | `s` | system, destination, subscription, service, wire name, outcome |
//! | `tidings.retries` | counter | `{message}` | system, destination, subscription, service, wire name |
//! | `tidings.dead_letters` | counter | `{message}` | system, destination, subscription, service, wire name |
//! | `tidings.handlers.in_flight` | up-down counter | `{handler}` | system, destination, subscription, service |
//! | `tidings.lag` | histogram | `s` | system, destination, subscription, service, wire name: handled time minus event time |

#[cfg(not(feature = "opentelemetry"))]
use {crate::error::Error, std::time::Duration};

/// Who a measurement is about.
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
pub(crate) struct Labels<'a> {
    pub(crate) system: &'a str,
    pub(crate) service: &'a str,
    pub(crate) topic: &'a str,
    /// `None` for the publishing side.
    pub(crate) subscription: Option<&'a str>,
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::time::Duration;

    use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
    use opentelemetry::{InstrumentationScope, KeyValue};

    use super::Labels;
    use crate::error::Error;

    /// The instruments of one bus, made from the global meter provider when it is built.
    pub(crate) struct Metrics {
        sent: Counter<u64>,
        operation: Histogram<f64>,
        consumed: Counter<u64>,
        process: Histogram<f64>,
        retries: Counter<u64>,
        dead_letters: Counter<u64>,
        in_flight: UpDownCounter<i64>,
        lag: Histogram<f64>,
    }

    impl Metrics {
        pub(crate) fn new() -> Self {
            let scope = InstrumentationScope::builder("tidings")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build();
            let meter = opentelemetry::global::meter_with_scope(scope);
            let seconds = |name: &'static str, what: &'static str| {
                meter
                    .f64_histogram(name)
                    .with_unit("s")
                    .with_description(what)
                    .build()
            };
            let messages = |name: &'static str, what: &'static str| {
                meter
                    .u64_counter(name)
                    .with_unit("{message}")
                    .with_description(what)
                    .build()
            };
            Metrics {
                sent: messages("messaging.client.sent.messages", "Messages published"),
                operation: seconds(
                    "messaging.client.operation.duration",
                    "How long a publish took, until the broker confirmed it",
                ),
                consumed: messages(
                    "messaging.client.consumed.messages",
                    "Messages received from the broker",
                ),
                process: seconds("messaging.process.duration", "How long a handler ran"),
                retries: messages(
                    "tidings.retries",
                    "Handler runs that failed and will be tried again",
                ),
                dead_letters: messages("tidings.dead_letters", "Messages dead-lettered"),
                in_flight: meter
                    .i64_up_down_counter("tidings.handlers.in_flight")
                    .with_unit("{handler}")
                    .with_description("Handlers running now")
                    .build(),
                lag: seconds(
                    "tidings.lag",
                    "Handled time minus event time: how far behind the subscription is",
                ),
            }
        }

        fn attributes(labels: &Labels<'_>) -> Vec<KeyValue> {
            let mut out = vec![
                KeyValue::new("messaging.system", labels.system.to_string()),
                KeyValue::new("messaging.destination.name", labels.topic.to_string()),
                KeyValue::new("tidings.service", labels.service.to_string()),
            ];
            if let Some(subscription) = labels.subscription {
                out.push(KeyValue::new(
                    "messaging.destination.subscription.name",
                    subscription.to_string(),
                ));
            }
            out
        }

        pub(crate) fn sent(
            &self,
            labels: &Labels<'_>,
            count: usize,
            took: Duration,
            error: Option<&Error>,
        ) {
            let mut attributes = Self::attributes(labels);
            if let Some(error) = error {
                attributes.push(KeyValue::new("error.type", error.kind().as_str()));
            }
            self.sent.add(count as u64, &attributes);
            attributes.push(KeyValue::new("messaging.operation.name", "send"));
            self.operation.record(took.as_secs_f64(), &attributes);
        }

        pub(crate) fn consumed(&self, labels: &Labels<'_>) {
            self.consumed.add(1, &Self::attributes(labels));
        }

        pub(crate) fn in_flight(&self, labels: &Labels<'_>, delta: i64) {
            self.in_flight.add(delta, &Self::attributes(labels));
        }

        pub(crate) fn processed(
            &self,
            labels: &Labels<'_>,
            wire_name: &str,
            outcome: &'static str,
            took: Duration,
        ) {
            let mut attributes = Self::attributes(labels);
            attributes.push(KeyValue::new("tidings.wire_name", wire_name.to_string()));
            attributes.push(KeyValue::new("tidings.outcome", outcome));
            self.process.record(took.as_secs_f64(), &attributes);
            if outcome == "retry" {
                attributes.pop();
                self.retries.add(1, &attributes);
            }
        }

        pub(crate) fn settled(
            &self,
            labels: &Labels<'_>,
            wire_name: &str,
            outcome: &'static str,
            lag: Duration,
        ) {
            let mut attributes = Self::attributes(labels);
            attributes.push(KeyValue::new("tidings.wire_name", wire_name.to_string()));
            if outcome == "dead_letter" {
                self.dead_letters.add(1, &attributes);
            }
            self.lag.record(lag.as_secs_f64(), &attributes);
        }
    }
}

#[cfg(feature = "opentelemetry")]
pub(crate) use otel::Metrics;

/// Without the `opentelemetry` feature: nothing is measured.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) struct Metrics;

#[cfg(not(feature = "opentelemetry"))]
impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics
    }
    #[inline]
    pub(crate) fn sent(&self, _: &Labels<'_>, _: usize, _: Duration, _: Option<&Error>) {}
    #[inline]
    pub(crate) fn consumed(&self, _: &Labels<'_>) {}
    #[inline]
    pub(crate) fn in_flight(&self, _: &Labels<'_>, _: i64) {}
    #[inline]
    pub(crate) fn processed(&self, _: &Labels<'_>, _: &str, _: &'static str, _: Duration) {}
    #[inline]
    pub(crate) fn settled(&self, _: &Labels<'_>, _: &str, _: &'static str, _: Duration) {}
}
