//! W3C trace context between `tracing` spans and envelopes (feature `opentelemetry`): the
//! envelope's `traceparent`/`tracestate` (CloudEvents distributed tracing) carry the send
//! span's context to the consumer, whose process span continues it. Without the feature
//! the envelope keeps the `traceparent` it was given, which handlers carry on.

#[cfg(not(feature = "opentelemetry"))]
use {crate::envelope::Envelope, tracing::Span};

#[cfg(feature = "opentelemetry")]
mod w3c {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::envelope::Envelope;

    const TRACEPARENT: &str = "traceparent";
    const TRACESTATE: &str = "tracestate";

    /// The envelope as the propagator's carrier, read and written in place (no map of
    /// copied headers per message).
    struct Carrier<'a>(&'a Envelope);

    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => self.0.traceparent.as_deref(),
                TRACESTATE => self.0.tracestate.as_deref(),
                _ => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }

    struct CarrierMut<'a>(&'a mut Envelope);

    impl Injector for CarrierMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            match key {
                TRACEPARENT => self.0.traceparent = Some(value),
                TRACESTATE => self.0.tracestate = Some(value).filter(|s| !s.is_empty()),
                _ => {}
            }
        }
    }

    /// Write `cx` into `env` if it holds a valid span (the propagator writes nothing
    /// otherwise).
    fn write(cx: &Context, env: &mut Envelope) {
        TraceContextPropagator::new().inject_context(cx, &mut CarrierMut(env));
    }

    /// Whether `value` is a `traceparent` as W3C Trace Context writes it:
    /// `vv-<32 hex>-<16 hex>-<2 hex>` in lower case, version `00` exactly so, a later one
    /// (never `ff`) at least so and then `-`. The SDK's parser also takes ids too short,
    /// which a message from another client may carry: those start a new trace instead.
    fn well_formed(value: &str) -> bool {
        const LEN: usize = 55;
        let b = value.as_bytes();
        let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        b.len() >= LEN
            && hex(&b[..2])
            && &b[..2] != b"ff"
            && (b.len() == LEN || (&b[..2] != b"00" && b[LEN] == b'-'))
            && b[2] == b'-'
            && b[35] == b'-'
            && b[52] == b'-'
            && hex(&b[3..35])
            && hex(&b[36..52])
            && hex(&b[53..LEN])
    }

    /// The context `env` carries, if it carries a valid one.
    pub(in crate::telemetry) fn read(env: &Envelope) -> Option<Context> {
        if !well_formed(env.traceparent.as_deref()?) {
            return None;
        }
        let cx = TraceContextPropagator::new().extract(&Carrier(env));
        cx.span().span_context().is_valid().then_some(cx)
    }

    pub(in crate::telemetry) fn inject(span: &Span, envelopes: &mut [Envelope], fresh: bool) {
        // Published outside any span with a context handed over
        // (`PublishOptions::traceparent`): the send span continues that trace.
        if fresh && Span::current().is_none() {
            if let Some(given) = envelopes.first().and_then(read) {
                // Fails only for a span that already started, which this one has not.
                let _ = span.set_parent(given);
            }
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        for env in envelopes {
            match read(env).filter(|_| !fresh) {
                Some(carried) => span.add_link(carried.span().span_context().clone()),
                None => write(&cx, env),
            }
        }
    }

    pub(in crate::telemetry) fn capture_current(env: &mut Envelope) {
        let cx = Span::current().context();
        if cx.span().span_context().is_valid() {
            write(&cx, env);
        }
    }

    pub(in crate::telemetry) fn set_parent(span: &Span, env: &Envelope) {
        if let Some(cx) = read(env) {
            // Fails only for a span that already started, which a new span has not.
            let _ = span.set_parent(cx);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::well_formed;

        #[test]
        fn traceparent_well_formed() {
            let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            assert!(well_formed(valid));
            assert!(well_formed(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later"
            ));
            for bad in [
                "",
                "not-a-traceparent",
                "00-0af7651916cd43dd-b7ad6b71-01",
                "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
                "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
                "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0ä",
            ] {
                assert!(!well_formed(bad), "{bad:?}");
            }
        }
    }
}

#[cfg(feature = "opentelemetry")]
pub(super) use w3c::{capture_current, inject, set_parent};

#[cfg(not(feature = "opentelemetry"))]
pub(super) fn inject(_span: &Span, _envelopes: &mut [Envelope], _fresh: bool) {}

#[cfg(not(feature = "opentelemetry"))]
pub(super) fn capture_current(_env: &mut Envelope) {}

#[cfg(not(feature = "opentelemetry"))]
pub(super) fn set_parent(_span: &Span, _env: &Envelope) {}
