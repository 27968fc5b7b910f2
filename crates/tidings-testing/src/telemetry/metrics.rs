//! What tests read from the collected measurements.

use super::*;

/// The measurements collected at one moment ([`Telemetry::metrics`]): cumulative values
/// since the kit was built.
pub struct Metrics {
    pub(super) exported: Option<ResourceMetrics>,
}

impl Metrics {
    fn points<'a>(&'a self, instrument: &'a str) -> impl Iterator<Item = &'a AggregatedMetrics> {
        self.exported
            .iter()
            .flat_map(|r| r.scope_metrics())
            .flat_map(|s| s.metrics())
            .filter(move |m| m.name() == instrument)
            .map(|m| m.data())
    }

    /// The sum of the counter or up-down counter `instrument` over its data points whose
    /// attributes include every `(key, value)` of `filter`; 0 if none.
    pub fn sum(&self, instrument: &str, filter: &[(&str, &str)]) -> i64 {
        let mut total = 0i64;
        for data in self.points(instrument) {
            match data {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        if matches(p.attributes(), filter) {
                            total += p.value() as i64;
                        }
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        if matches(p.attributes(), filter) {
                            total += p.value();
                        }
                    }
                }
                _ => {}
            }
        }
        total
    }

    /// How many values the histogram `instrument` recorded with attributes including every
    /// `(key, value)` of `filter`; 0 if none.
    pub fn count(&self, instrument: &str, filter: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        for data in self.points(instrument) {
            match data {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        if matches(p.attributes(), filter) {
                            total += p.count();
                        }
                    }
                }
                AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        if matches(p.attributes(), filter) {
                            total += p.count();
                        }
                    }
                }
                _ => {}
            }
        }
        total
    }

    /// The attribute sets recorded for `instrument` that include `filter`, each as sorted
    /// `key=value` strings (to check which labels a measurement carries).
    pub fn attribute_sets(&self, instrument: &str, filter: &[(&str, &str)]) -> Vec<Vec<String>> {
        fn set<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Vec<String> {
            let mut out: Vec<String> = attributes
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            out.sort();
            out
        }
        let mut out = Vec::new();
        for data in self.points(instrument) {
            match data {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => out.extend(
                    sum.data_points()
                        .filter(|p| matches(p.attributes(), filter))
                        .map(|p| set(p.attributes())),
                ),
                AggregatedMetrics::I64(MetricData::Sum(sum)) => out.extend(
                    sum.data_points()
                        .filter(|p| matches(p.attributes(), filter))
                        .map(|p| set(p.attributes())),
                ),
                AggregatedMetrics::F64(MetricData::Histogram(h)) => out.extend(
                    h.data_points()
                        .filter(|p| matches(p.attributes(), filter))
                        .map(|p| set(p.attributes())),
                ),
                _ => {}
            }
        }
        out
    }
}

impl Metrics {
    /// Every data point of tidings' instruments whose attributes include `filter`: the
    /// instrument, its value (or count, for a histogram) and its attributes. For failure
    /// messages.
    pub fn describe(&self, filter: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for metric in self
            .exported
            .iter()
            .flat_map(|r| r.scope_metrics())
            .filter(|s| s.scope().name() == "tidings")
            .flat_map(|s| s.metrics())
        {
            let name = metric.name();
            let mut line = |value: String, attributes: Vec<String>| {
                let _ = write!(out, "\n  {name} {value} {attributes:?}");
            };
            let labels = |a: &mut dyn Iterator<Item = &KeyValue>| {
                let mut v: Vec<String> = a.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                v.sort();
                v
            };
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum
                        .data_points()
                        .filter(|p| matches(p.attributes(), filter))
                    {
                        line(p.value().to_string(), labels(&mut p.attributes()));
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(sum)) => {
                    for p in sum
                        .data_points()
                        .filter(|p| matches(p.attributes(), filter))
                    {
                        line(p.value().to_string(), labels(&mut p.attributes()));
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points().filter(|p| matches(p.attributes(), filter)) {
                        line(format!("count {}", p.count()), labels(&mut p.attributes()));
                    }
                }
                _ => {}
            }
        }
        if out.is_empty() {
            out.push_str(" nothing");
        }
        out
    }
}

impl fmt::Debug for Metrics {
    /// The names of tidings' instruments measured so far.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for metric in self
            .exported
            .iter()
            .flat_map(|r| r.scope_metrics())
            .filter(|s| s.scope().name() == "tidings")
            .flat_map(|s| s.metrics())
        {
            list.entry(&format_args!("{}", metric.name()));
        }
        list.finish()
    }
}

fn matches<'a>(attributes: impl Iterator<Item = &'a KeyValue>, filter: &[(&str, &str)]) -> bool {
    let attributes: Vec<&KeyValue> = attributes.collect();
    filter.iter().all(|(key, value)| {
        attributes
            .iter()
            .any(|kv| kv.key.as_str() == *key && kv.value.as_str() == *value)
    })
}
