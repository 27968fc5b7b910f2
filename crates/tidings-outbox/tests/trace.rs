//! The outbox keeps the trace across the relay: an event enqueued inside a request's span
//! carries that span's context through the database, and the consumer in another service
//! handles it in the request's trace, although the relay publishes it later from a task
//! of its own. SQLite always, PostgreSQL when `TIDINGS_POSTGRES_URL` is set. Spans are
//! recorded with `tidings_testing::telemetry` on the test's own runtime.
#![allow(missing_docs)]
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::suite::{fast, setup, TestDb};
use common::{eventually, BookBorrowed, LendingEvents};
use tidings_core::{Bus, Context, HandlerError, Subscription};
use tidings_memory::Memory;
use tidings_outbox::BusBuilderExt;
use tidings_testing::telemetry::{
    describe_spans, span_id, SpanData, SpanDataExt, SpanKind, Telemetry,
};
use tracing::Instrument;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);

/// The envelope ids and `traceparent`s the consumer saw.
type Handled = Mutex<Vec<(Uuid, Option<String>)>>;

async fn handled(_: BookBorrowed, cx: Context<Handled>) -> Result<(), HandlerError> {
    let env = cx.envelope();
    cx.state()
        .lock()
        .unwrap()
        .push((env.id, env.traceparent.clone()));
    Ok(())
}

/// A request span enqueues an event in a transaction and commits, another event is
/// enqueued outside any span; the relay publishes both in one batch; `catalog` handles
/// them. The traced event's process span is in the request's trace, a child of the span
/// that was current at enqueue time, and its envelope arrives with the context stored with
/// the row; the relay's send span (a trace of its own: the relay runs outside the request)
/// links to that context. The untraced event is traced from the relay's send span.
async fn relay_keeps_the_trace<DB: TestDb>(test: &str) {
    let Some((pool, outbox, _, _cleanup)) = setup::<DB>(test).await else {
        return;
    };
    let kit = Telemetry::get();
    let hub = Memory::new();
    let seen = Arc::new(Handled::default());
    let catalog = Bus::builder("trace-catalog")
        .transport(hub.clone())
        .subscribe(
            Subscription::to::<LendingEvents>()
                .with_shared_state(seen.clone())
                .on(handled),
        )
        .build()
        .await
        .unwrap();
    // Rows are enqueued through a bus without a relay, and relayed by one built after
    // them: both in one batch, whose send span links to the stored context of one and
    // stamps its own into the other.
    let lending = common::suite::lending_bus(hub.clone()).await;
    let (request, trace) = kit.root("borrow request");
    let request_id = span_id(&request);
    let traced = async {
        let mut tx = pool.begin().await.unwrap();
        let id = outbox
            .enqueue(
                &mut tx,
                &lending,
                BookBorrowed {
                    book: "traced".into(),
                    n: 1,
                },
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }
    .instrument(request)
    .await;
    let mut tx = pool.begin().await.unwrap();
    let untraced = outbox
        .enqueue(
            &mut tx,
            &lending,
            BookBorrowed {
                book: "untraced".into(),
                n: 2,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let relay = Bus::builder("lending")
        .transport(hub.clone())
        .publishes::<LendingEvents>()
        .with_relay(outbox.clone(), fast())
        .build()
        .await
        .unwrap();
    eventually("both events handled", || async {
        seen.lock().unwrap().len() >= 2
    })
    .await;
    let process_of = |id: Uuid| {
        let id = id.to_string();
        move |spans: &[SpanData]| {
            spans
                .iter()
                .find(|s| {
                    s.span_kind == SpanKind::Consumer
                        && s.string("messaging.message.id").as_deref() == Some(id.as_str())
                })
                .cloned()
        }
    };

    // The relay's one send span of both rows, a trace of its own: it runs outside the
    // request.
    let relayed = kit
        .wait_for_spans(PATIENCE, "the relay's send span of both rows", |spans| {
            spans
                .iter()
                .find(|s| {
                    s.span_kind == SpanKind::Producer
                        && s.string("tidings.service").as_deref() == Some("lending")
                        && s.string("messaging.destination.name").as_deref() == Some("lending")
                        && s.links.iter().any(|l| l.span_context.trace_id() == trace)
                })
                .cloned()
        })
        .await;
    assert_eq!(
        relayed.int("messaging.batch.message_count"),
        Some(2),
        "the relay published both rows at once"
    );
    assert_ne!(
        relayed.trace_id(),
        trace,
        "the relay publishes outside the request: its send span is a trace of its own"
    );
    assert_eq!(
        relayed
            .links
            .iter()
            .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
            .collect::<Vec<_>>(),
        vec![(trace, request_id)],
        "the relay's send span links to the context stored with the traced row, only"
    );

    // The traced event: request → (database) → catalog's process span.
    let process = kit
        .wait_for_spans(
            PATIENCE,
            "catalog's process span of the traced event",
            process_of(traced),
        )
        .await;
    assert_eq!(
        (process.trace_id(), process.parent_span_id),
        (trace, request_id),
        "the process span should continue the request that enqueued the event; {}",
        describe_spans(&kit.trace(process.trace_id()))
    );
    assert_eq!(
        process.string("tidings.service").as_deref(),
        Some("trace-catalog")
    );
    assert_eq!(process.string("tidings.outcome").as_deref(), Some("ack"));
    let carried = |id: Uuid| {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(seen, _)| *seen == id)
            .and_then(|(_, tp)| tp.clone())
    };
    assert_eq!(
        carried(traced),
        Some(format!("00-{trace}-{request_id}-01")),
        "the envelope should arrive with the context stored at enqueue"
    );

    // The untraced event: no context stored, so the relay's send span starts its trace.
    let process = kit
        .wait_for_spans(
            PATIENCE,
            "catalog's process span of the untraced event",
            process_of(untraced),
        )
        .await;
    assert_eq!(
        (process.trace_id(), process.parent_span_id),
        (relayed.trace_id(), relayed.span_id()),
        "an event enqueued outside any span is traced from the relay's send span"
    );
    assert_eq!(
        carried(untraced),
        Some(format!(
            "00-{}-{}-01",
            relayed.trace_id(),
            relayed.span_id()
        )),
    );

    relay.shutdown().await;
    lending.shutdown().await;
    catalog.shutdown().await;
}

/// Run `test` on a runtime whose threads record spans into the kit.
fn recorded(test: impl std::future::Future<Output = ()>) {
    let kit = Telemetry::get();
    let runtime = kit.runtime(2);
    kit.scoped(|| runtime.block_on(test));
}

#[cfg(feature = "sqlite")]
#[test]
fn outbox_relay_keeps_the_trace_sqlite() {
    recorded(relay_keeps_the_trace::<tidings_outbox::sqlx::Sqlite>(
        "outbox_relay_keeps_the_trace_sqlite",
    ));
}

#[cfg(feature = "postgres")]
#[test]
fn outbox_relay_keeps_the_trace_postgres() {
    recorded(relay_keeps_the_trace::<tidings_outbox::sqlx::Postgres>(
        "outbox_relay_keeps_the_trace_postgres",
    ));
}
