//! Operator cases: looking up one dead letter, purging dead letters (alone and while a
//! replay runs), replaying an edited dead letter, an unknown subscription, and the
//! temporary subscription a tool such as `tidings tail` watches a topic through.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tidings_core::transport::attrs;
use tidings_core::transport::{SubscriptionSpec, Topology};
use tidings_core::{
    Bus, Codec, Context, DeadLetter, DeadLetterInfo, Envelope, ErrorKind, Event, HandlerError,
    Replay, Subscription,
};
use uuid::Uuid;

use super::events::{ConfEvents, Ping, Pong};
use super::failure::{dead_letters_until, quick};
use super::support::{describe, Must, Probe, Scene, Seen};
use super::TransportFactory;

/// A subscriber `beta` that dead-letters the pings in `1..=doomed` at once (one run, no
/// redelivery) while `broken` is set, and records every ping it handles as `handled`.
pub(super) async fn refusing_subscriber(
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
pub(super) async fn publish_pings(alpha: &Bus, ns: impl IntoIterator<Item = u64>) -> Vec<Uuid> {
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

/// A subscriber `beta` that dead-letters at once (one run, no redelivery) every ping whose
/// payload is marked bad (key `bad`) and records every ping it handles as `handled`.
async fn bad_refusing_subscriber(scene: &Scene<'_>, probe: &Arc<Probe>) -> Bus {
    scene
        .build(
            scene.builder("beta").subscribe(
                Subscription::to::<ConfEvents>()
                    .with_state(probe.clone())
                    .retry(quick(1, 0))
                    .on(|e: Ping, cx: Context<Arc<Probe>>| async move {
                        if e.key == BAD {
                            return Err(HandlerError::permanent(format!(
                                "conformance handler refuses the bad ping {}",
                                e.n
                            )));
                        }
                        cx.state()
                            .record(Seen::of("handled", Ping::NAME, e.n, &e.key, &cx));
                        Ok(())
                    }),
            ),
            "`beta`, refusing bad pings",
        )
        .await
}

/// The key that marks a ping's payload bad, and the one of its fixed copy.
const BAD: &str = "bad";
const FIXED: &str = "fixed";

/// The listed dead letter `parked` edited: its payload fixed (ping `n`, key `fixed`, in
/// the codec it was published with) under envelope id `id`, its dead-letter headers left
/// in (the replay removes them).
fn fixed_copy(parked: &DeadLetter, n: u64, id: Uuid) -> Envelope {
    let codec = Codec::for_content_type(&parked.envelope.content_type)
        .expect("the dead letter's content type has a codec");
    let mut fixed = parked.envelope.clone();
    fixed.payload = codec
        .encode(&Ping::keyed(n, FIXED))
        .must("encoding the fixed ping")
        .into();
    fixed.ordering_key = Some(FIXED.into());
    fixed.id = id;
    fixed
}

/// `Replay::Edited` sends an edited copy of one dead letter in its place: the handler gets
/// the fixed payload exactly once, under the new id (or under the same id), without the
/// dead-letter headers; the original is no longer a dead letter and neither is the copy.
/// Another dead letter of the subscription stays as it was; an edited replay of an id
/// that is not parked (never, or no longer) replays nothing and changes nothing.
pub async fn edited_replay(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "edited_replay");
    let probe = Probe::new();
    let beta = bad_refusing_subscriber(&scene, &probe).await;
    let alpha = scene.publisher().await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            alpha
                .publish(Ping::keyed(n, BAD))
                .await
                .must(&format!("publishing the bad ping {n}")),
        );
    }
    let dead = dead_letters_until(&scene, &beta, "bad pings 1 to 3 in the dead letters", |d| {
        d.len() >= 3
    })
    .await;
    let parked = |id: Uuid| {
        dead.iter()
            .find(|d| d.envelope.id == id)
            .unwrap_or_else(|| panic!("dead letter {id} is not listed: {dead:?}"))
            .clone()
    };
    let (first, bystander, third) = (parked(ids[0]), parked(ids[1]), parked(ids[2]));
    let listed = |what: &str| {
        let beta = &beta;
        let what = what.to_string();
        async move {
            beta.dead_letters::<ConfEvents>(100)
                .await
                .must(&format!("listing dead letters {what}"))
        }
    };

    // An id that is not parked: nothing replayed, nothing changed.
    let ghost = Replay::Edited {
        id: Uuid::new_v4(),
        envelope: Box::new(fixed_copy(&first, 1, Uuid::new_v4())),
    };
    let none = beta
        .replay_dead_letters::<ConfEvents>(ghost)
        .await
        .must("replaying an edited copy of an unknown id");
    assert_eq!(none, 0, "an edited replay of an unknown id replayed {none}");
    let unchanged = listed("after the edited replay of an unknown id").await;
    assert_eq!(
        ids_of(&unchanged),
        BTreeSet::from([ids[0], ids[1], ids[2]]),
        "an edited replay of an unknown id changed the dead letters: {unchanged:?}"
    );

    // Ping 1 fixed under a new id.
    let new_id = Uuid::now_v7();
    let edited = Replay::Edited {
        id: ids[0],
        envelope: Box::new(fixed_copy(&first, 1, new_id)),
    };
    let one = beta
        .replay_dead_letters::<ConfEvents>(edited.clone())
        .await
        .must("replaying ping 1 fixed, under a new id");
    assert_eq!(one, 1, "the edited replay of ping 1 replayed {one}");
    let left = listed("after the edited replay of ping 1").await;
    assert_eq!(
        ids_of(&left),
        BTreeSet::from([ids[1], ids[2]]),
        "after the edited replay of ping 1 (new id {new_id}) the dead letters must be pings 2 and 3: {left:?}"
    );
    probe.wait_for_ns("handled", [1], scene.patience()).await;
    let again = beta
        .replay_dead_letters::<ConfEvents>(edited)
        .await
        .must("replaying ping 1 fixed a second time");
    assert_eq!(
        again, 0,
        "the edited replay of a replayed dead letter replayed {again}"
    );

    // Ping 3 fixed under its own id.
    let same = Replay::Edited {
        id: ids[2],
        envelope: Box::new(fixed_copy(&third, 3, ids[2])),
    };
    let one = beta
        .replay_dead_letters::<ConfEvents>(same)
        .await
        .must("replaying ping 3 fixed, under its own id");
    assert_eq!(one, 1, "the edited replay of ping 3 replayed {one}");
    probe.wait_for_ns("handled", [3], scene.patience()).await;
    scene.quiet().await;

    let handled = probe.labelled("handled");
    assert_eq!(
        handled.len(),
        2,
        "exactly the two fixed pings must be handled, once each: {}",
        describe(&handled)
    );
    for (n, id) in [(1, new_id), (3, ids[2])] {
        let run = handled
            .iter()
            .find(|s| s.n == n)
            .unwrap_or_else(|| panic!("ping {n} was not handled: {}", describe(&handled)));
        assert_eq!(run.key, FIXED, "ping {n} was handled with its bad payload");
        assert_eq!(run.envelope.id, id, "ping {n} was handled under another id");
        assert!(
            DeadLetterInfo::from_headers(&run.envelope).is_none()
                && run.envelope.header(attrs::DLQ_TIME).is_none(),
            "the replayed ping {n} still carries dead-letter headers: {:?}",
            run.envelope.headers
        );
    }
    let left = listed("at the end").await;
    assert_eq!(
        left.len(),
        1,
        "only the bystander ping 2 may be left in the dead letters: {left:?}"
    );
    assert_eq!(left[0].envelope.id, ids[1], "ping 2 is not the one left");
    assert_eq!(
        left[0].envelope.payload, bystander.envelope.payload,
        "the payload of the dead letter left changed"
    );
    assert_eq!(
        (&left[0].info.reason, left[0].info.attempts),
        (&bystander.info.reason, bystander.info.attempts),
        "the details of the dead letter left changed"
    );
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// The envelope ids of dead letters.
fn ids_of(dead: &[DeadLetter]) -> BTreeSet<Uuid> {
    dead.iter().map(|d| d.envelope.id).collect()
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
