//! W3C trace context between `tracing` spans and envelopes (feature `opentelemetry`): the
//! envelope's `traceparent`/`tracestate` (CloudEvents distributed tracing) carry the send
//! span's context to the consumer, whose process span continues it. Without the feature
//! the envelope keeps the `traceparent` it was given, which handlers carry on.

#[cfg(not(feature = "opentelemetry"))]
use {crate::envelope::Envelope, tracing::Span};

#[cfg(feature = "opentelemetry")]
mod w3c {
    use std::str::FromStr;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::envelope::Envelope;

    // `traceparent` is written and read here by the rules of the SDK's
    // `TraceContextPropagator` (version 00 written, the sampled flag kept, later versions
    // read), without its `format!` of the ids and its copy of the current context: with
    // the bridge those cost about 6,000 instructions an event (BENCHMARKS.md).

    /// Write the span context of `cx` into `env` if it is valid.
    fn write(cx: &Context, env: &mut Envelope) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let mut value = String::with_capacity(55);
        value.push_str("00-");
        hex(&mut value, &sc.trace_id().to_bytes());
        value.push('-');
        hex(&mut value, &sc.span_id().to_bytes());
        value.push('-');
        hex(
            &mut value,
            &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
        );
        env.traceparent = Some(value);
        let state = sc.trace_state().header();
        env.tracestate = (!state.is_empty()).then_some(state);
    }

    /// `bytes` in lower-case hex, appended to `out`.
    fn hex(out: &mut String, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
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

    /// The context `env` carries, if it carries a valid one: a remote parent, on an
    /// otherwise empty context.
    pub(in crate::telemetry) fn read(env: &Envelope) -> Option<Context> {
        let value = env.traceparent.as_deref()?;
        if !well_formed(value) {
            return None;
        }
        let trace_id = TraceId::from_hex(&value[3..35]).ok()?;
        let span_id = SpanId::from_hex(&value[36..52]).ok()?;
        let flags = u8::from_str_radix(&value[53..55], 16).ok()?;
        if value.starts_with("00") && flags > 2 {
            return None;
        }
        let state = env
            .tracestate
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
        let sc = SpanContext::new(trace_id, span_id, flags, true, state);
        sc.is_valid()
            .then(|| Context::new().with_remote_span_context(sc))
    }

    pub(in crate::telemetry) fn inject(span: &Span, envelopes: &mut [Envelope], fresh: bool) {
        if span.is_none() {
            // Nothing listens: the envelopes keep the context they were given.
            return;
        }
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
        if !super::super::listening() {
            return;
        }
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
        use super::*;

        fn envelope(traceparent: &str, tracestate: Option<&str>) -> Envelope {
            let mut env = Envelope::new("a.b", 1, "svc", "application/json", b"{}".to_vec());
            env.traceparent = Some(traceparent.into());
            env.tracestate = tracestate.map(Into::into);
            env
        }

        /// What is read is what was written, sampled flag and trace state included; the
        /// flags beyond sampled are dropped, as the SDK's propagator does.
        #[test]
        fn traceparent_round_trip() {
            let given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let env = envelope(given, Some("vendor=a,other=b"));
            let cx = read(&env).expect("a valid traceparent");
            let sc = cx.span().span_context().clone();
            assert!(sc.is_remote() && sc.is_sampled());
            assert_eq!(
                sc.trace_id(),
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
            );
            assert_eq!(sc.span_id(), SpanId::from_hex("b7ad6b7169203331").unwrap());
            let mut out = envelope("", None);
            write(&cx, &mut out);
            assert_eq!(out.traceparent.as_deref(), Some(given));
            assert_eq!(out.tracestate.as_deref(), Some("vendor=a,other=b"));

            let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
            let mut out = envelope("", Some("stale=1"));
            write(&read(&envelope(unsampled, None)).unwrap(), &mut out);
            assert_eq!(out.traceparent.as_deref(), Some(unsampled));
            assert_eq!(out.tracestate, None, "an empty trace state is not written");

            let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-more";
            let mut out = envelope("", None);
            write(&read(&envelope(later, None)).unwrap(), &mut out);
            assert_eq!(
                out.traceparent.as_deref(),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            );
        }

        /// Contexts the SDK's propagator refuses are refused: all-zero ids, version 00
        /// with flags beyond 02.
        #[test]
        fn traceparent_invalid_contexts() {
            for bad in [
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
            ] {
                assert!(read(&envelope(bad, None)).is_none(), "{bad}");
            }
        }

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
