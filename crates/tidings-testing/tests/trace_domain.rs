//! A domain event queued inside a request's span is published in that request's trace:
//! the queue's worker runs its handlers in the span that queued the event, so the send
//! span of the integration event converted from it is the request's child, and the
//! consumer's process span the send span's child.
#![cfg(feature = "opentelemetry")]

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::domain::{Converters, EventQueue};
use tidings_core::{
    Bus, Context, Event, EventInfo, HandlerError, Subscription, Topic, TopicMember,
};
use tidings_memory::Memory;
use tidings_testing::telemetry::{
    describe_spans, span_id, SpanData, SpanDataExt, SpanKind, Telemetry,
};
use tokio::sync::Notify;
use tracing::Instrument;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BookBorrowed {
    book: u32,
}

impl Event for BookBorrowed {
    const NAME: &'static str = "trace-domain.book-borrowed";
    const VERSION: u32 = 1;
}

struct LendingEvents;

impl Topic for LendingEvents {
    const NAME: &'static str = "trace-domain";
    fn events() -> &'static [EventInfo] {
        &[]
    }
}

impl TopicMember for BookBorrowed {
    type Topic = LendingEvents;
}

/// Lending's own domain event.
#[derive(Debug, Clone)]
struct LoanOpened {
    book: u32,
}

async fn handled(_: BookBorrowed, cx: Context<Notify>) -> Result<(), HandlerError> {
    cx.state().notify_one();
    Ok(())
}

#[test]
fn trace_domain_event_queue_continues_the_queuing_span() {
    let kit = Telemetry::get();
    let runtime = kit.runtime(2);
    kit.scoped(|| {
        runtime.block_on(async {
            let hub = Memory::new();
            let handled_once = Arc::new(Notify::new());
            let catalog = Bus::builder("catalog")
                .transport(hub.clone())
                .subscribe(
                    Subscription::to::<LendingEvents>()
                        .with_shared_state(handled_once.clone())
                        .on(handled),
                )
                .build()
                .await
                .expect("building catalog");
            let lending = Bus::builder("lending")
                .transport(hub)
                .publishes::<LendingEvents>()
                .build()
                .await
                .expect("building lending");
            let converters =
                Converters::new().convert(|e: &LoanOpened| Some(BookBorrowed { book: e.book }));
            let queue = EventQueue::builder()
                .publish_converted(&lending, converters)
                .start();

            let (request, trace) = kit.root("borrow request");
            let request_id = span_id(&request);
            async {
                queue
                    .enqueue(LoanOpened { book: 7 })
                    .await
                    .expect("queueing");
                queue.drain().await.expect("publishing the converted event");
            }
            .instrument(request)
            .await;
            tokio::time::timeout(Duration::from_secs(30), handled_once.notified())
                .await
                .expect("catalog handles the event");

            let of = |spans: &[SpanData], kind: SpanKind| -> Vec<SpanData> {
                spans
                    .iter()
                    .filter(|s| s.trace_id() == trace && s.span_kind == kind)
                    .cloned()
                    .collect()
            };
            let (send, process) = kit
                .wait_for_spans(
                    Duration::from_secs(30),
                    "a send and a process span in the request's trace",
                    |all| match (
                        of(all, SpanKind::Producer).as_slice(),
                        of(all, SpanKind::Consumer).as_slice(),
                    ) {
                        ([send], [process]) => Some((send.clone(), process.clone())),
                        _ => None,
                    },
                )
                .await;
            let all = kit.trace(trace);
            assert_eq!(
                send.parent_span_id,
                request_id,
                "the send span is the request's child; {}",
                describe_spans(&all)
            );
            assert_eq!(
                process.parent_span_id,
                send.span_id(),
                "the process span is the send span's child; {}",
                describe_spans(&all)
            );
            lending.shutdown().await;
            catalog.shutdown().await;
        })
    });
}
