//! What tests read from finished spans.

use super::*;

/// What tests ask of a finished span.
pub trait SpanDataExt {
    /// The value of attribute `key` (the last one recorded, should there be several).
    fn attribute(&self, key: &str) -> Option<&Value>;
    /// Attribute `key` as a string (any value, displayed).
    fn string(&self, key: &str) -> Option<String>;
    /// Attribute `key` as an integer, if it is one.
    fn int(&self, key: &str) -> Option<i64>;
    /// The span's trace id.
    fn trace_id(&self) -> TraceId;
    /// The span's id.
    fn span_id(&self) -> SpanId;
    /// The keys recorded more than once on the span (an exporter would send each twice).
    fn repeated_attributes(&self) -> Vec<String>;
}

impl SpanDataExt for SpanData {
    fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .rev()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.attribute(key).map(|v| v.as_str().into_owned())
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            Value::I64(n) => Some(*n),
            _ => None,
        }
    }

    fn trace_id(&self) -> TraceId {
        self.span_context.trace_id()
    }

    fn span_id(&self) -> SpanId {
        self.span_context.span_id()
    }

    fn repeated_attributes(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut repeated = std::collections::BTreeSet::new();
        for kv in &self.attributes {
            if !seen.insert(kv.key.as_str()) {
                repeated.insert(kv.key.as_str().to_string());
            }
        }
        repeated.into_iter().collect()
    }
}

/// One line per span, for failure messages: name, kind, trace/span/parent ids and the
/// attributes that tell tidings' spans apart.
pub fn describe_spans(spans: &[SpanData]) -> String {
    const SHOWN: usize = 40;
    let mut out = format!("{} spans", spans.len());
    for s in spans.iter().take(SHOWN) {
        let _ = write!(
            out,
            "\n  {:?} {:?} trace {} span {} parent {}",
            s.name,
            s.span_kind,
            s.trace_id(),
            s.span_id(),
            s.parent_span_id
        );
        for key in [
            "tidings.service",
            "messaging.message.id",
            "tidings.wire_name",
            "tidings.attempt",
            "tidings.outcome",
            "error.type",
            "messaging.batch.message_count",
        ] {
            if let Some(v) = s.string(key) {
                let _ = write!(out, " {key}={v}");
            }
        }
    }
    if spans.len() > SHOWN {
        let _ = write!(out, "\n  … ({} more)", spans.len() - SHOWN);
    }
    out
}
