//! The Library example with `--trace` shows one trace per command crossing Lending, the
//! broker and Catalog: run here as `main` runs it (the same buses, a command inside its
//! span), with an in-memory span exporter in place of the console, the trace is
//! `borrow` → `send lending` (Lending) → `process lending` (Catalog).
#![cfg(feature = "opentelemetry")]
#![allow(unreachable_pub)]

#[path = "../examples/library/catalog.rs"]
#[allow(dead_code)]
mod catalog;
#[path = "../examples/library/contracts.rs"]
#[allow(dead_code)]
mod contracts;
#[path = "../examples/library/lending.rs"]
#[allow(dead_code)]
mod lending;
#[path = "../examples/library/services.rs"]
#[allow(dead_code)]
mod services;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt as _;

use catalog::Inventory;
use contracts::{BookId, PatronId};
use lending::{Lending, LendingStore};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn trace_library_command_crosses_lending_broker_and_catalog() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("library"));
    let subscriber = tracing_subscriber::registry().with(layer);
    // One thread, with the subscriber as its default: the buses' tasks run on it too.
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let url = "memory://library-trace";
            let inventory = Arc::new(Inventory::default());
            let dune = BookId::new();
            inventory.add_book(dune, "Dune", 2);
            let catalog = services::catalog_bus(url, inventory.clone())
                .build()
                .await
                .expect("building catalog");
            let lending_bus = services::lending_bus(url)
                .build()
                .await
                .expect("building lending");
            let lending = Lending::new(lending_bus.clone(), Arc::new(LendingStore::default()));
            let diana = PatronId::new();
            lending.store.seed_patron(diana, "Diana");
            lending
                .borrow_book(diana, dune)
                .instrument(tracing::info_span!("borrow", book = "Dune"))
                .await
                .expect("borrowing");
            tokio::time::timeout(Duration::from_secs(30), inventory.wait_for_updates(1))
                .await
                .expect("catalog applies the loan");
            lending_bus.shutdown().await;
            catalog.shutdown().await;
        });
    });
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("the exported spans");
    let listing = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "\n  {} trace {} span {} parent {}",
                    s.name,
                    s.span_context.trace_id(),
                    s.span_context.span_id(),
                    s.parent_span_id
                )
            })
            .collect::<String>()
    };
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let [borrow] = named("borrow")[..] else {
        panic!("one `borrow` span expected:{}", listing());
    };
    let [send] = named("send lending")[..] else {
        panic!("one `send lending` span expected:{}", listing());
    };
    let [process] = named("process lending")[..] else {
        panic!("one `process lending` span expected:{}", listing());
    };
    let trace = borrow.span_context.trace_id();
    assert_eq!(
        borrow.parent_span_id,
        SpanId::INVALID,
        "the command starts the trace"
    );
    assert_eq!(
        (send.span_context.trace_id(), send.parent_span_id),
        (trace, borrow.span_context.span_id()),
        "Lending's send span is the command's child:{}",
        listing()
    );
    assert_eq!(
        (process.span_context.trace_id(), process.parent_span_id),
        (trace, send.span_context.span_id()),
        "Catalog's process span is the send span's child:{}",
        listing()
    );
    assert_eq!(
        attribute(send, "tidings.service").as_deref(),
        Some("lending")
    );
    assert_eq!(
        attribute(process, "tidings.service").as_deref(),
        Some("catalog")
    );
}
