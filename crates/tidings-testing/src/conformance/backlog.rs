//! The backlog of a subscription: how many messages wait for it, as
//! [`Transport::backlog`](tidings_core::transport::Transport::backlog) reads it from the
//! broker.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tidings_core::transport::{DynTransport, SubscriptionSpec, Topology};
use tidings_core::{ErrorKind, Event};

use super::events::Ping;
use super::failure::dead_letters_until;
use super::operations::{publish_pings, refusing_subscriber};
use super::support::{Must, Probe, Scene};
use super::TransportFactory;

/// Poll the backlog of `spec` until it is `want`, or fail after the patience with the
/// last value read.
async fn backlog_until(
    scene: &Scene<'_>,
    transport: &dyn DynTransport,
    spec: &SubscriptionSpec,
    want: u64,
) {
    scene
        .poll(&format!("a backlog of {want}"), || async {
            match transport
                .backlog_dyn(spec)
                .await
                .must("reading the backlog")
            {
                Some(n) if n == want => Ok(()),
                other => Err(other),
            }
        })
        .await
}

/// A subscription provisioned with nobody consuming counts the events published to it as
/// its backlog (7 of 7, published one by one and in a batch, on a transport whose
/// capabilities say it can tell); once a
/// consumer has settled them all it is 0 again, and an event the consumer dead-lettered is
/// not counted. The backlog of an unknown subscription is `NotFound`.
pub async fn backlog_counts_waiting_messages(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "backlog_counts_waiting_messages");
    let transport = f.connect().await.must("connecting");
    let spec = SubscriptionSpec::new(
        "beta",
        scene.subscription("beta"),
        scene.topic(),
        vec![Ping::NAME.into()],
    );
    let mut topology = Topology::new("beta");
    topology.subscriptions.push(spec.clone());
    transport
        .provision_dyn(&topology)
        .await
        .must("provisioning `beta`'s subscription");
    if !transport.capabilities_dyn().backlog {
        let none = transport
            .backlog_dyn(&spec)
            .await
            .must("reading the backlog");
        assert_eq!(
            none, None,
            "the transport says it cannot tell the backlog, yet read {none:?}"
        );
        println!(
            "skipped: {} needs backlog (not declared by {})",
            scene.case,
            f.name()
        );
        return;
    }
    let alpha = scene.publisher().await;
    backlog_until(&scene, &*transport, &spec, 0).await;
    // One by one, and in one batch (on Kafka, records of one producer batch).
    publish_pings(&alpha, 1..=3).await;
    alpha
        .publish_batch((4..=7).map(Ping::unkeyed))
        .await
        .must("publishing pings 4 to 7 in one batch");
    backlog_until(&scene, &*transport, &spec, 7).await;

    // `beta` consumes them, dead-lettering ping 1: the backlog goes back to 0.
    let probe = Probe::new();
    let broken = Arc::new(AtomicBool::new(true));
    let beta = refusing_subscriber(&scene, &probe, &broken, 1).await;
    probe.wait_for_ns("handled", 2..=7, scene.patience()).await;
    dead_letters_until(&scene, &beta, "ping 1 in the dead letters", |d| {
        !d.is_empty()
    })
    .await;
    backlog_until(&scene, &*transport, &spec, 0).await;

    let nobody = SubscriptionSpec::new(
        "nobody",
        format!("{}.nobody", scene.namespace),
        scene.topic(),
        vec![Ping::NAME.into()],
    );
    match transport.backlog_dyn(&nobody).await {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::NotFound,
            "the backlog of an unknown subscription: {e}"
        ),
        Ok(got) => panic!("the backlog of an unknown subscription is {got:?}, not NotFound"),
    }
    alpha.shutdown().await;
    beta.shutdown().await;
}
