//! `--trace`: print every span to the console as OpenTelemetry exports it, so one borrow
//! shows as one trace: the `borrow` span in Lending, its `send lending` span, and the
//! `process lending` span in Catalog, a child of the send span through the envelope's
//! `traceparent`. Needs the `opentelemetry` feature:
//!
//! ```text
//! cargo run --example library --features opentelemetry -- --trace
//! ```

/// The installed exporter; dropping it flushes the spans still buffered.
pub struct Tracing {
    #[cfg(feature = "opentelemetry")]
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

/// Install a global `tracing` subscriber that bridges spans to OpenTelemetry and exports
/// them to stdout; `None` (with a hint) without the `opentelemetry` feature.
pub fn install() -> Option<Tracing> {
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
            .build();
        // Without the location, thread, target and busy/idle attributes the layer adds to
        // every span by default: tidings' spans carry what a reader needs.
        let layer = tracing_opentelemetry::layer()
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_tracer(provider.tracer("library"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).ok()?;
        Some(Tracing { provider })
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        eprintln!(
            "--trace needs the opentelemetry feature: cargo run --example library --features opentelemetry -- --trace"
        );
        None
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        #[cfg(feature = "opentelemetry")]
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing the spans failed: {e}");
        }
    }
}
