//! Operator cases: looking up one dead letter, purging dead letters (alone and while a
//! replay runs), an unknown subscription, and the temporary subscription a tool such as
//! `tidings tail` watches a topic through.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tidings_core::transport::{SubscriptionSpec, Topology};
use tidings_core::{Bus, Context, ErrorKind, Event, HandlerError, Replay, Subscription};
use uuid::Uuid;

use super::events::{ConfEvents, Ping, Pong};
use super::failure::{dead_letters_until, quick};
use super::support::{describe, Must, Probe, Scene, Seen};
use super::TransportFactory;

/// A subscriber `beta` that dead-letters the pings in `1..=doomed` at once (one run, no
/// redelivery) while `broken` is set, and records every ping it handles as `handled`.
async fn refusing_subscriber(
    scene: &Scene<'_>,
    probe: &Arc<Probe>,
    broken: &Arc<AtomicBool>,
    doomed: u64,
) -> Bus {
    let state = Arc::new((probe.clone(), broken.clone()));
    scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_shared_state(state)
                    .retry(quick(1, 0))
                    .on(
                        move |e: Ping, cx: Context<(Arc<Probe>, Arc<AtomicBool>)>| async move {
                            let (probe, broken) = cx.state();
                            if e.n <= doomed && broken.load(Ordering::SeqCst) {
                                return Err(HandlerError::permanent(format!(
                                    "conformance handler refuses ping {}",
                                    e.n
                                )));
                            }
                            probe.record(Seen::of("handled", Ping::NAME, e.n, &e.key, &cx));
                            Ok(())
                        },
                    ),
            ),
            "`beta`, refusing the first pings",
        )
        .await
}

/// Publish pings `ns` from `alpha`, returning their envelope ids in order.
async fn publish_pings(alpha: &Bus, ns: impl IntoIterator<Item = u64>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in ns {
        ids.push(
            alpha
                .publish(Ping::unkeyed(n))
                .await
                .must(&format!("publishing ping {n}")),
        );
    }
    ids
}

/// `dead_letter` finds a dead letter by envelope id, with its payload and reason, and
/// returns `None` for an unknown id; `purge_dead_letters` deletes exactly the selected
/// dead letters (one by id, then the rest), returns how many, and a purged dead letter is
/// never listed, looked up, replayed or delivered again. Purging an empty list or an
/// unknown id deletes nothing. Events waiting in the subscription are not touched.
pub async fn dead_letter_purge(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "dead_letter_purge");
    let probe = Probe::new();
    let broken = Arc::new(AtomicBool::new(true));
    let beta = refusing_subscriber(&scene, &probe, &broken, 3).await;
    let alpha = scene.publisher().await;
    let ids = publish_pings(&alpha, 1..=4).await;
    probe.wait_for_ns("handled", [4], scene.patience()).await;
    let dead = dead_letters_until(&scene, &beta, "pings 1 to 3 in the dead letters", |d| {
        d.len() >= 3
    })
    .await;
    assert_eq!(dead.len(), 3, "three dead letters expected: {dead:?}");

    let found = beta
        .dead_letter::<ConfEvents>(ids[1])
        .await
        .must("looking up the dead letter of ping 2")
        .expect("the dead letter of ping 2 is not found by its id");
    assert_eq!(found.envelope.id, ids[1], "another dead letter was found");
    let listed = dead
        .iter()
        .find(|d| d.envelope.id == ids[1])
        .expect("listed");
    assert_eq!(
        found.envelope.payload, listed.envelope.payload,
        "the payload found differs from the one listed"
    );
    assert!(
        found.info.reason.contains("refuses ping 2"),
        "the reason of the dead letter found: {:?}",
        found.info.reason
    );
    let unknown = beta
        .dead_letter::<ConfEvents>(Uuid::new_v4())
        .await
        .must("looking up an unknown id");
    assert!(unknown.is_none(), "an unknown id found {unknown:?}");

    // Stop `beta` and leave an event waiting in its subscription: no purge may take it.
    beta.shutdown().await;
    publish_pings(&alpha, [5]).await;

    let none = beta
        .purge_dead_letters::<ConfEvents>(Replay::Ids(vec![Uuid::new_v4()]))
        .await
        .must("purging an unknown id");
    assert_eq!(none, 0, "purging an unknown id deleted {none}");
    let one = beta
        .purge_dead_letters::<ConfEvents>(Replay::Ids(vec![ids[0]]))
        .await
        .must("purging the dead letter of ping 1");
    assert_eq!(one, 1, "purging one dead letter by id deleted {one}");
    let left = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters after purging one");
    let left_ids: BTreeSet<Uuid> = left.iter().map(|d| d.envelope.id).collect();
    assert_eq!(
        left_ids,
        BTreeSet::from([ids[1], ids[2]]),
        "purging ping 1 must leave exactly pings 2 and 3: {left:?}"
    );
    let gone = beta
        .dead_letter::<ConfEvents>(ids[0])
        .await
        .must("looking up the purged dead letter");
    assert!(
        gone.is_none(),
        "a purged dead letter is still found: {gone:?}"
    );

    let rest = beta
        .purge_dead_letters::<ConfEvents>(Replay::All)
        .await
        .must("purging all dead letters");
    assert_eq!(rest, 2, "purging the two left deleted {rest}");
    let empty = beta
        .purge_dead_letters::<ConfEvents>(Replay::All)
        .await
        .must("purging an empty dead-letter list");
    assert_eq!(empty, 0, "purging an empty list deleted {empty}");

    // Fix the handler and start `beta` again: ping 5 waited; nothing purged comes back.
    broken.store(false, Ordering::SeqCst);
    let beta = refusing_subscriber(&scene, &probe, &broken, 3).await;
    probe.wait_for_ns("handled", [5], scene.patience()).await;
    let replayed = beta
        .replay_dead_letters::<ConfEvents>(Replay::All)
        .await
        .must("replaying after the purge");
    assert_eq!(replayed, 0, "a purged dead letter was replayed");
    scene.quiet().await;
    let back: Vec<Seen> = probe
        .labelled("handled")
        .into_iter()
        .filter(|s| s.n <= 3)
        .collect();
    assert!(
        back.is_empty(),
        "purged dead letters were delivered again: {}",
        describe(&back)
    );
    let still = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters at the end");
    assert!(still.is_empty(), "purged dead letters came back: {still:?}");
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// A purge and a replay of all dead letters, run at once, lose nothing and do nothing
/// twice: afterwards no dead letter is left, every dead letter was replayed or purged,
/// and exactly the replayed ones are handled.
pub async fn dead_letter_purge_during_replay(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "dead_letter_purge_during_replay");
    let probe = Probe::new();
    let broken = Arc::new(AtomicBool::new(true));
    let beta = refusing_subscriber(&scene, &probe, &broken, 10).await;
    let alpha = scene.publisher().await;
    publish_pings(&alpha, 1..=10).await;
    dead_letters_until(&scene, &beta, "pings 1 to 10 in the dead letters", |d| {
        d.len() >= 10
    })
    .await;
    broken.store(false, Ordering::SeqCst);
    let (replayed, purged) = tokio::join!(
        beta.replay_dead_letters::<ConfEvents>(Replay::All),
        beta.purge_dead_letters::<ConfEvents>(Replay::All),
    );
    let replayed = replayed.must("replaying while a purge runs");
    let purged = purged.must("purging while a replay runs");
    assert!(
        replayed + purged >= 10,
        "of 10 dead letters {replayed} were replayed and {purged} purged: some were lost"
    );
    let left = beta
        .dead_letters::<ConfEvents>(100)
        .await
        .must("listing dead letters after the purge and the replay");
    assert!(left.is_empty(), "dead letters left: {left:?}");
    if replayed > 0 {
        probe
            .wait_until(
                scene.patience(),
                &format!("{replayed} replayed pings to be handled"),
                |seen| {
                    let ns: BTreeSet<u64> = seen
                        .iter()
                        .filter(|s| s.label == "handled")
                        .map(|s| s.n)
                        .collect();
                    (ns.len() >= replayed).then_some(())
                },
            )
            .await;
    }
    scene.quiet().await;
    let handled: BTreeSet<u64> = probe.labelled("handled").iter().map(|s| s.n).collect();
    assert_eq!(
        handled.len(),
        replayed,
        "{replayed} dead letters were replayed but pings {handled:?} were handled"
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// Listing, looking up, replaying and purging the dead letters of a subscription that was
/// never provisioned is `NotFound`, naming it, on a topic that exists.
pub async fn dead_letters_unknown_subscription(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "dead_letters_unknown_subscription");
    let alpha = scene.publisher().await;
    let transport = f.connect().await.must("connecting");
    let name = format!("{}.nobody", scene.namespace);
    let spec = SubscriptionSpec::new("nobody", &name, scene.topic(), vec![Ping::NAME.into()]);
    let check = |what: &str, result: tidings_core::Result<String>| match result {
        Ok(got) => panic!("{what} of an unknown subscription gave {got}, not NotFound"),
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::NotFound,
                "{what} of an unknown subscription: {e}"
            );
        }
    };
    check(
        "listing dead letters",
        transport
            .dead_letters_dyn(&spec, 10)
            .await
            .map(|d| format!("{d:?}")),
    );
    check(
        "looking up a dead letter",
        transport
            .dead_letter_dyn(&spec, Uuid::new_v4())
            .await
            .map(|d| format!("{d:?}")),
    );
    check(
        "purging dead letters",
        transport
            .purge_dead_letters_dyn(&spec, &Replay::All)
            .await
            .map(|n| n.to_string()),
    );
    check(
        "replaying dead letters",
        transport
            .replay_dead_letters_dyn(&spec, &Replay::All)
            .await
            .map(|n| n.to_string()),
    );
    alpha.shutdown().await;
}

/// A temporary subscription of its own (what `tidings tail` makes) sees the topic's events
/// without taking them from another subscription, and `remove_subscription` deletes it
/// alone: afterwards its dead letters are `NotFound`, the topic and the other
/// subscription go on working, and removing it again is no error.
pub async fn temporary_subscription(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "temporary_subscription");
    let probe = Probe::new();
    let beta = scene.subscriber("beta", &probe).await;
    let alpha = scene.publisher().await;
    let transport = f.connect().await.must("connecting");
    let name = format!(
        "{}.tail-{}",
        scene.namespace,
        &Uuid::new_v4().simple().to_string()[..6]
    );
    let spec = SubscriptionSpec::new(
        "tidings-tail",
        &name,
        scene.topic(),
        vec![Ping::NAME.into(), Pong::NAME.into()],
    );
    let mut topology = Topology::new("tidings-tail");
    topology.subscriptions.push(spec.clone());
    transport
        .provision_dyn(&topology)
        .await
        .must("provisioning the temporary subscription");
    let mut watched = transport
        .watch_dyn(&spec)
        .await
        .must("watching the temporary subscription");
    let id = publish_pings(&alpha, [1]).await[0];
    let got = tokio::time::timeout(scene.patience(), watched.next())
        .await
        .unwrap_or_else(|_| panic!("the temporary subscription saw nothing within the patience"))
        .expect("the watched stream ended")
        .must("watching");
    assert_eq!(
        got.envelope.id, id,
        "the temporary subscription saw another envelope"
    );
    assert_eq!(got.envelope.event_type.as_ref(), Ping::NAME);
    probe.wait_for_ns("beta", [1], scene.patience()).await;
    drop(watched);
    transport
        .remove_subscription_dyn(&spec)
        .await
        .must("removing the temporary subscription");
    let after = transport.dead_letters_dyn(&spec, 10).await;
    assert!(
        matches!(&after, Err(e) if e.kind() == ErrorKind::NotFound),
        "the removed subscription still has a dead-letter destination: {after:?}"
    );
    transport
        .remove_subscription_dyn(&spec)
        .await
        .must("removing the temporary subscription again (what is gone is no error)");
    publish_pings(&alpha, [2]).await;
    probe.wait_for_ns("beta", [2], scene.patience()).await;
    alpha.shutdown().await;
    beta.shutdown().await;
}
