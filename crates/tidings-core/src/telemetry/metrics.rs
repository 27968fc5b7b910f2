//! Metrics by the OpenTelemetry messaging conventions (feature `opentelemetry`), through
//! the OpenTelemetry metrics API and the global meter provider: the same API as the
//! spans' bridge, so one SDK setup exports both. Without the feature every call is empty.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `messaging.client.sent.messages` | counter | `{message}` | system, destination, service, `error.type` on failure |
//! | `messaging.client.operation.duration` | histogram | `s` | system, operation `send`, destination, service, `error.type` |
//! | `messaging.client.consumed.messages` | counter (observed) | `{message}` | system, destination, subscription, service |
//! | `messaging.process.duration` | histogram | `s` | system, destination, subscription, service, wire name, outcome |
//! | `tidings.retries` | counter | `{message}` | system, destination, subscription, service, wire name |
//! | `tidings.dead_letters` | counter | `{message}` | system, destination, subscription, service, wire name |
//! | `tidings.handlers.in_flight` | up-down counter (observed) | `{handler}` | system, destination, subscription, service |
//! | `tidings.lag` | histogram | `s` | system, destination, subscription, service, wire name: handled time minus event time (its scheduled time when later); not recorded for a scheduled event put back until due |
//!
//! The two observed instruments are read from the subscription's health counters when the
//! meter provider collects, so a delivery costs them nothing. The attribute sets are made
//! when the bus is built (per declared topic for a successful publish; per wire name a
//! subscription handles and outcome), so a measurement finds its set without building or
//! hashing one; the rare others (a failed publish, an event without a handler) are made
//! once per thread.

#[cfg(not(feature = "opentelemetry"))]
use {crate::error::Error, crate::health::Monitor, std::sync::Arc, std::time::Duration};

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
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::metrics::{Counter, Histogram, Meter};
    use opentelemetry::{InstrumentationScope, KeyValue};

    use super::Labels;
    use crate::error::Error;
    use crate::health::Monitor;

    /// tidings' meter, from the global meter provider.
    fn meter() -> Meter {
        let scope = InstrumentationScope::builder("tidings")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        opentelemetry::global::meter_with_scope(scope)
    }

    fn seconds(meter: &Meter, name: &'static str, what: &'static str) -> Histogram<f64> {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(what)
            .build()
    }

    fn messages(meter: &Meter, name: &'static str, what: &'static str) -> Counter<u64> {
        meter
            .u64_counter(name)
            .with_unit("{message}")
            .with_description(what)
            .build()
    }

    /// The publishing instruments of one bus, made from the global meter provider when it
    /// is built, with the attribute sets of a successful publish to each topic it declares.
    pub(crate) struct Metrics {
        sent: Counter<u64>,
        operation: Histogram<f64>,
        topics: Vec<TopicSets>,
    }

    /// The attribute sets of a successful publish to one declared topic.
    struct TopicSets {
        topic: Box<str>,
        sent: Box<[KeyValue]>,
        operation: Box<[KeyValue]>,
    }

    const OPERATION: Tag = Some(("messaging.operation.name", "send"));

    impl Metrics {
        /// The instruments of a bus of `system` and `service` publishing to `topics`.
        pub(crate) fn new(system: &str, service: &str, topics: &[&str]) -> Self {
            let meter = meter();
            let topics = topics
                .iter()
                .map(|&topic| {
                    let labels = Labels {
                        system,
                        service,
                        topic,
                        subscription: None,
                    };
                    TopicSets {
                        topic: topic.into(),
                        sent: build(&labels, None, &NO_TAGS).into(),
                        operation: build(&labels, None, &[None, OPERATION]).into(),
                    }
                })
                .collect();
            Metrics {
                topics,
                sent: messages(
                    &meter,
                    "messaging.client.sent.messages",
                    "Messages published",
                ),
                operation: seconds(
                    &meter,
                    "messaging.client.operation.duration",
                    "How long a publish took, until the broker confirmed it",
                ),
            }
        }

        /// Whether measurements are recorded (the feature is on).
        pub(crate) const ENABLED: bool = true;

        /// The start of a measured duration.
        pub(crate) fn clock() -> Option<std::time::Instant> {
            Some(std::time::Instant::now())
        }

        pub(crate) fn sent(
            &self,
            labels: &Labels<'_>,
            count: usize,
            took: Duration,
            error: Option<&Error>,
        ) {
            let made = match error {
                None => self.topics.iter().find(|t| *t.topic == *labels.topic),
                Some(_) => None,
            };
            if let Some(sets) = made {
                self.sent.add(count as u64, &sets.sent);
                self.operation.record(took.as_secs_f64(), &sets.operation);
                return;
            }
            let error = error.map(|e| ("error.type", e.kind().as_str()));
            with_set(labels, None, [error, None], |a| {
                self.sent.add(count as u64, a)
            });
            with_set(labels, None, [error, OPERATION], |a| {
                self.operation.record(took.as_secs_f64(), a)
            });
        }
    }

    /// The outcomes of a handler run, in the order of [`WireSets::outcomes`].
    const OUTCOMES: [&str; 3] = ["ack", "retry", "dead_letter"];

    /// The attribute sets of one wire name a subscription handles.
    struct WireSets {
        name: &'static str,
        /// Labels and wire name: retries, dead letters and lag.
        plain: Box<[KeyValue]>,
        /// Labels, wire name and each of [`OUTCOMES`]: the process duration.
        outcomes: [Box<[KeyValue]>; 3],
    }

    /// The monitors of the subscriptions of this process that share one attribute set.
    type Members = Arc<Mutex<Vec<Arc<Monitor>>>>;

    /// Every subscription's monitor, by its attribute set, for the process's life. Buses of
    /// one service subscribed under one name in one process (competing consumers) share a
    /// set, and an observed instrument keeps only the last value observed for a set in a
    /// collection: so each bus's callback observes the sum over all of them, and a dropped
    /// bus's count stays in the sum, as a counter's would.
    static MEMBERS: Mutex<Vec<(Arc<[KeyValue]>, Members)>> = Mutex::new(Vec::new());

    /// Add `monitor` to the members of `set`: the set as first registered, and its members.
    fn members(set: Arc<[KeyValue]>, monitor: &Arc<Monitor>) -> (Arc<[KeyValue]>, Members) {
        let mut all = MEMBERS.lock().unwrap_or_else(|e| e.into_inner());
        let (set, members) = match all.iter().find(|(s, _)| **s == *set) {
            Some(found) => found.clone(),
            None => {
                all.push((set, Members::default()));
                all.last().expect("just pushed").clone()
            }
        };
        members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(monitor.clone());
        (set, members)
    }

    /// `count` summed over `members`.
    fn sum(members: &Members, count: impl Fn(&Monitor) -> u64) -> u64 {
        let members = members.lock().unwrap_or_else(|e| e.into_inner());
        members.iter().map(|m| count(m)).sum()
    }

    /// The consuming instruments of one subscription, with its attribute sets, made when
    /// the bus is built. Consumed messages and handlers in flight are observed from the
    /// subscription's health counters when the meter provider collects.
    pub(crate) struct SubscriptionMetrics {
        process: Histogram<f64>,
        retries: Counter<u64>,
        dead_letters: Counter<u64>,
        lag: Histogram<f64>,
        system: Arc<str>,
        service: Arc<str>,
        topic: Arc<str>,
        subscription: Arc<str>,
        wire_names: Vec<WireSets>,
    }

    impl SubscriptionMetrics {
        /// The instruments of a subscription of `labels` to `wire_names`, whose counters
        /// are `monitor`'s (summed with those of the process's other subscriptions of the
        /// same labels). The observing callbacks stay with the meter provider.
        pub(crate) fn new(
            labels: &Labels<'_>,
            wire_names: &[&'static str],
            monitor: &Arc<Monitor>,
        ) -> Self {
            let meter = meter();
            let (set, members) = members(build(labels, None, &NO_TAGS).into(), monitor);
            let (counted, attributes) = (members.clone(), set.clone());
            meter
                .u64_observable_counter("messaging.client.consumed.messages")
                .with_unit("{message}")
                .with_description("Messages received from the broker")
                .with_callback(move |o| o.observe(sum(&counted, Monitor::received), &attributes))
                .build();
            meter
                .i64_observable_up_down_counter("tidings.handlers.in_flight")
                .with_unit("{handler}")
                .with_description("Handlers running now")
                .with_callback(move |o| {
                    let running = sum(&members, |m| m.in_flight() as u64);
                    o.observe(i64::try_from(running).unwrap_or(i64::MAX), &set)
                })
                .build();
            let wire_names = wire_names
                .iter()
                .map(|&name| WireSets {
                    name,
                    plain: build(labels, Some(name), &NO_TAGS).into(),
                    outcomes: OUTCOMES.map(|outcome| {
                        build(
                            labels,
                            Some(name),
                            &[Some(("tidings.outcome", outcome)), None],
                        )
                        .into()
                    }),
                })
                .collect();
            SubscriptionMetrics {
                process: seconds(
                    &meter,
                    "messaging.process.duration",
                    "How long a handler ran",
                ),
                retries: messages(
                    &meter,
                    "tidings.retries",
                    "Handler runs that failed and will be tried again",
                ),
                dead_letters: messages(&meter, "tidings.dead_letters", "Messages dead-lettered"),
                lag: seconds(
                    &meter,
                    "tidings.lag",
                    "Handled time minus event time: how far behind the subscription is",
                ),
                system: labels.system.into(),
                service: labels.service.into(),
                topic: labels.topic.into(),
                subscription: labels.subscription.unwrap_or_default().into(),
                wire_names,
            }
        }

        /// Call `f` with the attributes of `wire_name` and `tags`: made at build for the
        /// wire names the subscription handles, per thread for others (an event without a
        /// handler, skipped; an undecodable one).
        fn with<R>(
            &self,
            wire_name: &str,
            outcome: Option<&'static str>,
            f: impl FnOnce(&[KeyValue]) -> R,
        ) -> R {
            let made = self
                .wire_names
                .iter()
                .find(|s| s.name == wire_name)
                .and_then(|sets| match outcome {
                    None => Some(&sets.plain),
                    Some(o) => OUTCOMES
                        .iter()
                        .position(|x| *x == o)
                        .map(|i| &sets.outcomes[i]),
                });
            if let Some(set) = made {
                return f(set);
            }
            let labels = Labels {
                system: &self.system,
                service: &self.service,
                topic: &self.topic,
                subscription: Some(&self.subscription),
            };
            let tags = [outcome.map(|o| ("tidings.outcome", o)), None];
            with_set(&labels, Some(wire_name), tags, f)
        }

        /// One handler run of `wire_name` that ended in `outcome` (`ack`, `retry` or
        /// `dead_letter`) after `took`.
        pub(crate) fn processed(&self, wire_name: &str, outcome: &'static str, took: Duration) {
            self.with(wire_name, Some(outcome), |a| {
                self.process.record(took.as_secs_f64(), a)
            });
            if outcome == "retry" {
                self.with(wire_name, None, |a| self.retries.add(1, a));
            }
        }

        /// A delivery of `wire_name` settled by `outcome`, `lag` after its event time.
        pub(crate) fn settled(&self, wire_name: &str, outcome: &'static str, lag: Duration) {
            self.with(wire_name, None, |a| {
                if outcome == "dead_letter" {
                    self.dead_letters.add(1, a);
                }
                self.lag.record(lag.as_secs_f64(), a);
            });
        }
    }

    /// A low-cardinality attribute of a measurement, beyond the labels and wire name.
    type Tag = Option<(&'static str, &'static str)>;

    const NO_TAGS: [Tag; 2] = [None, None];

    /// How many attribute sets a thread keeps; beyond, the oldest make way.
    const CACHED: usize = 64;

    /// One attribute set and what it was made of.
    struct Cached {
        system: Box<str>,
        service: Box<str>,
        topic: Box<str>,
        subscription: Option<Box<str>>,
        wire_name: Option<Box<str>>,
        tags: [Tag; 2],
        set: Box<[KeyValue]>,
    }

    impl Cached {
        fn is(&self, labels: &Labels<'_>, wire_name: Option<&str>, tags: &[Tag; 2]) -> bool {
            // Tags are `'static`: the same text at the same address. What tells the sets of
            // one subscription apart first, then the rest.
            let tag = |a: &Tag, b: &Tag| match (a, b) {
                (Some((k, v)), Some((l, w))) => std::ptr::eq(*k, *l) && std::ptr::eq(*v, *w),
                (None, None) => true,
                _ => false,
            };
            tag(&self.tags[0], &tags[0])
                && tag(&self.tags[1], &tags[1])
                && self.wire_name.as_deref() == wire_name
                && *self.topic == *labels.topic
                && self.subscription.as_deref() == labels.subscription
                && *self.service == *labels.service
                && *self.system == *labels.system
        }
    }

    thread_local! {
        /// The attribute sets this thread recorded with. Building a set allocates a string
        /// per attribute, which every event would pay otherwise (even with a no-op meter
        /// provider); the sets in use are few (per bus, topic, subscription, wire name,
        /// outcome), so they are made once per thread and found by a linear search.
        static SETS: std::cell::RefCell<Vec<Cached>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn build(labels: &Labels<'_>, wire_name: Option<&str>, tags: &[Tag; 2]) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(7);
        out.push(KeyValue::new("messaging.system", labels.system.to_string()));
        out.push(KeyValue::new(
            "messaging.destination.name",
            labels.topic.to_string(),
        ));
        out.push(KeyValue::new("tidings.service", labels.service.to_string()));
        if let Some(subscription) = labels.subscription {
            out.push(KeyValue::new(
                "messaging.destination.subscription.name",
                subscription.to_string(),
            ));
        }
        if let Some(wire_name) = wire_name {
            out.push(KeyValue::new("tidings.wire_name", wire_name.to_string()));
        }
        for (key, value) in tags.iter().flatten() {
            out.push(KeyValue::new(*key, *value));
        }
        out
    }

    /// Call `f` with the attributes of `labels`, `wire_name` and `tags`, made once per
    /// thread.
    fn with_set<R>(
        labels: &Labels<'_>,
        wire_name: Option<&str>,
        tags: [Tag; 2],
        f: impl FnOnce(&[KeyValue]) -> R,
    ) -> R {
        let mut f = Some(f);
        let cached = SETS.try_with(|sets| {
            let Ok(mut sets) = sets.try_borrow_mut() else {
                return None;
            };
            let i = match sets.iter().position(|c| c.is(labels, wire_name, &tags)) {
                Some(i) => i,
                None => {
                    if sets.len() >= CACHED {
                        sets.remove(0);
                    }
                    sets.push(Cached {
                        system: labels.system.into(),
                        service: labels.service.into(),
                        topic: labels.topic.into(),
                        subscription: labels.subscription.map(Into::into),
                        wire_name: wire_name.map(Into::into),
                        tags,
                        set: build(labels, wire_name, &tags).into(),
                    });
                    sets.len() - 1
                }
            };
            let f = f.take().expect("called once");
            Some(f(&sets[i].set))
        });
        match cached {
            Ok(Some(out)) => out,
            // Re-entered from `f`, or the thread is going away: build the set afresh.
            _ => (f.take().expect("not called yet"))(&build(labels, wire_name, &tags)),
        }
    }
    #[cfg(test)]
    mod tests {
        use super::*;

        fn labels<'a>(topic: &'a str, subscription: Option<&'a str>) -> Labels<'a> {
            Labels {
                system: "memory",
                service: "catalog",
                topic,
                subscription,
            }
        }

        fn set(labels: &Labels<'_>, wire_name: Option<&str>, tags: [Tag; 2]) -> Vec<String> {
            with_set(labels, wire_name, tags, |a| {
                a.iter()
                    .map(|kv| format!("{}={}", kv.key, kv.value))
                    .collect()
            })
        }

        /// Each set is what it would be built afresh, whatever was cached before it, and
        /// more sets than a thread keeps are still right.
        #[test]
        fn cached_sets_are_the_sets() {
            let outcome = |o: &'static str| [Some(("tidings.outcome", o)), None];
            let topics: Vec<String> = (0..CACHED + 10).map(|i| format!("t{i}")).collect();
            for round in 0..2 {
                for topic in &topics {
                    for (subscription, wire_name, tags) in [
                        (None, None, NO_TAGS),
                        (Some("catalog.t"), None, NO_TAGS),
                        (Some("catalog.t"), Some("a.b"), NO_TAGS),
                        (Some("catalog.t"), Some("a.b"), outcome("ack")),
                        (Some("catalog.t"), Some("a.b"), outcome("retry")),
                        (Some("catalog.u"), Some("a.b"), outcome("retry")),
                    ] {
                        let labels = labels(topic, subscription);
                        let want: Vec<String> = build(&labels, wire_name, &tags)
                            .iter()
                            .map(|kv| format!("{}={}", kv.key, kv.value))
                            .collect();
                        assert_eq!(set(&labels, wire_name, tags), want, "round {round}");
                    }
                }
            }
        }
    }
}

#[cfg(feature = "opentelemetry")]
pub(crate) use otel::{Metrics, SubscriptionMetrics};

/// Without the `opentelemetry` feature: nothing is measured.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) struct Metrics;

#[cfg(not(feature = "opentelemetry"))]
impl Metrics {
    pub(crate) fn new(_: &str, _: &str, _: &[&str]) -> Self {
        Metrics
    }
    /// Whether measurements are recorded (the feature is on).
    pub(crate) const ENABLED: bool = false;
    /// The start of a measured duration: none, nothing is measured.
    #[inline]
    pub(crate) fn clock() -> Option<std::time::Instant> {
        None
    }
    #[inline]
    pub(crate) fn sent(&self, _: &Labels<'_>, _: usize, _: Duration, _: Option<&Error>) {}
}

/// Without the `opentelemetry` feature: nothing is measured.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) struct SubscriptionMetrics;

#[cfg(not(feature = "opentelemetry"))]
impl SubscriptionMetrics {
    pub(crate) fn new(_: &Labels<'_>, _: &[&'static str], _: &Arc<Monitor>) -> Self {
        SubscriptionMetrics
    }
    #[inline]
    pub(crate) fn processed(&self, _: &str, _: &'static str, _: Duration) {}
    #[inline]
    pub(crate) fn settled(&self, _: &str, _: &'static str, _: Duration) {}
}
