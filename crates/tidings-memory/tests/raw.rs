//! Raw messages injected into the hub (`Memory::inject_raw`) reach subscribers as a broker
//! hands messages over: the core decides whether they are envelopes.

mod common;

use std::sync::Arc;

use common::{env, spec, topology};
use tidings_core::{
    transport::{attrs, Acker, Subscriber, Transport},
    Bus, Context, DeadLetterInfo, HandlerError, Subscription,
};
use tidings_memory::Memory;

const A: &str = "lending.book-borrowed";

/// The headers tidings writes for an envelope.
fn headers_of(envelope: &tidings_core::Envelope) -> Vec<(String, String)> {
    envelope
        .attributes()
        .into_iter()
        .map(|(n, v)| (n.into_owned(), v))
        .collect()
}

#[tokio::test]
async fn an_injected_envelope_is_read_by_the_core_and_redelivered_with_its_attempt() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    memory.provision(&topology(&[&catalog])).await.unwrap();
    let sent = env(A);
    let mut headers = headers_of(&sent);
    headers.push((attrs::ATTEMPT.into(), "2".into()));
    memory
        .inject_raw("lending", headers, sent.payload.clone())
        .await
        .unwrap();

    let mut sub = memory.subscribe(&catalog).await.unwrap();
    let d = sub.next().await.unwrap().unwrap();
    assert!(d.undecodable.is_none(), "{:?}", d.undecodable);
    assert_eq!(d.envelope.id, sent.id);
    assert_eq!(d.envelope.payload, sent.payload);
    assert_eq!(d.attempt, 2, "the tidings attempt header counts");
    assert!(d.envelope.header(attrs::ATTEMPT).is_none());
    drop(d); // unsettled: delivered again, one delivery later
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (d.envelope.id, d.attempt, d.redelivered),
        (sent.id, 3, true)
    );
    d.acker.ack().await.unwrap();
    assert_eq!(memory.pending(), 0);
}

#[tokio::test]
async fn an_injected_message_that_is_no_envelope_is_a_placeholder_saying_why_for_every_queue() {
    let memory = Memory::new();
    let catalog = spec("catalog", "lending", &[A]);
    let billing = spec("billing", "lending", &["lending.book-returned"]);
    memory
        .provision(&topology(&[&catalog, &billing]))
        .await
        .unwrap();
    // No ce_type: every queue of the topic takes it, whatever its filter.
    memory
        .inject_raw(
            "lending",
            vec![("tenant".into(), "north".into())],
            &b"\xc1garbage"[..],
        )
        .await
        .unwrap();
    for s in [&catalog, &billing] {
        let mut sub = memory.subscribe(s).await.unwrap();
        let d = sub.next().await.unwrap().unwrap();
        let reason = d.undecodable.clone().expect("a placeholder");
        assert!(reason.contains("ce_id"), "{reason}");
        assert_eq!(d.envelope.payload.as_ref(), b"\xc1garbage");
        assert_eq!(d.envelope.header("tidings-original-tenant"), Some("north"));
        let info = DeadLetterInfo::new(
            reason,
            0,
            "svc".into(),
            s.name.as_str().into(),
            "lending".into(),
        );
        d.acker.dead_letter(d.envelope.clone(), info).await.unwrap();
    }
    assert_eq!(memory.pending(), 0);
    // A ce_type goes by the queues' filters like a published envelope.
    memory
        .inject_raw("lending", vec![(attrs::TYPE.into(), A.into())], &b"x"[..])
        .await
        .unwrap();
    let waiting: Vec<(String, usize)> = memory
        .queues()
        .into_iter()
        .map(|q| (q.subscription, q.waiting))
        .collect();
    assert_eq!(waiting, vec![("billing".into(), 0), ("catalog".into(), 1)]);
}

#[tokio::test]
async fn a_bus_dead_letters_injected_garbage_with_the_reason_and_handles_the_next_event() {
    async fn handle(
        e: common::Borrowed,
        cx: Context<Arc<std::sync::Mutex<Vec<u32>>>>,
    ) -> Result<(), HandlerError> {
        cx.state().lock().unwrap().push(e.book);
        Ok(())
    }
    let memory = Memory::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let catalog = Bus::builder("catalog")
        .transport(memory.clone())
        .subscribe(
            Subscription::to::<common::Lending>()
                .with_state(seen.clone())
                .on(handle),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(memory.clone())
        .publishes::<common::Lending>()
        .build()
        .await
        .unwrap();
    let mut garbage = env(A);
    garbage.payload = bytes::Bytes::from_static(b"\xc1\xc1");
    memory
        .inject_raw("lending", headers_of(&garbage), garbage.payload.clone())
        .await
        .unwrap();
    lending.publish(common::borrowed(7)).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), memory.idle())
        .await
        .expect("the hub settles");
    assert_eq!(*seen.lock().unwrap(), vec![7]);
    let dead = catalog.dead_letters::<common::Lending>(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].envelope.id, garbage.id);
    assert_eq!(dead[0].info.attempts, 0);
    assert!(
        dead[0].info.reason.contains("undecodable"),
        "{}",
        dead[0].info.reason
    );
    lending.shutdown().await;
    catalog.shutdown().await;
}
