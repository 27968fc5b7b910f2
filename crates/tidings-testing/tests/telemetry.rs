//! The telemetry kit records the spans of its threads whatever other threads did first.
#![cfg(feature = "opentelemetry")]

use tidings_testing::telemetry::{trace_id, Telemetry, TraceId};

fn span() -> tracing::Span {
    tracing::info_span!("reached first elsewhere")
}

/// `tracing` caches per callsite whether its spans are on; with one registered dispatcher
/// it decides by the thread that reaches the callsite first. A callsite first reached on a
/// thread without the kit's subscriber (a test running beside a trace test) must still
/// record on the kit's threads.
#[test]
fn trace_kit_records_a_callsite_first_reached_without_it() {
    let kit = Telemetry::get();
    std::thread::spawn(|| {
        let elsewhere = span();
        assert_eq!(
            trace_id(&elsewhere),
            TraceId::INVALID,
            "nothing records here"
        );
    })
    .join()
    .expect("the thread without the kit");
    let recorded = kit.scoped(span);
    assert_ne!(
        trace_id(&recorded),
        TraceId::INVALID,
        "the kit's thread should record the span"
    );
}
