//! Claim check: large payloads through an object store (a local directory per case), the
//! references that cannot be honoured, and the store's outage.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tidings_core::object_store::path::Path;
use tidings_core::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tidings_core::transport::wire::CLAIM_CHECK;
use tidings_core::{Bus, ClaimCheck, Context, HandlerError, Subscription};

use super::failure::quick;
use super::support::{Must, Scene};
use super::TransportFactory;

/// A large event of its own topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bulk {
    /// Identifies it within a case.
    n: u64,
    /// The bulk.
    data: String,
}

impl Bulk {
    /// Event `n` with `size` bytes of data that differ from event to event.
    fn new(n: u64, size: usize) -> Self {
        let data = (0..size)
            .map(|i| char::from(b'a' + ((i as u64 * 7 + n) % 26) as u8))
            .collect();
        Bulk { n, data }
    }
}

super::events::one_event_topic! {
    /// The topic of [`Bulk`].
    BulkEvents(Bulk) = "conformance-bulk", "conformance-bulk.bulk"
}

/// What a [`Bulk`] handler saw: the event, whether its envelope came by claim check, the
/// attempt.
type Handled = Arc<Runs>;
/// The state behind [`Handled`].
type Runs = Mutex<Vec<(Bulk, bool, u32)>>;

/// The prefix under which the cases store payloads.
const PREFIX: &str = "claims";

/// A directory for one case's store, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(scene: &Scene<'_>) -> Self {
        let dir = std::env::temp_dir().join(format!("tidings-{}", scene.namespace));
        std::fs::create_dir_all(&dir).expect("creating the claim-check directory");
        Dir(dir)
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        ClaimCheck::local(&self.0)
            .must("a claim check on the case's directory")
            .store()
            .clone()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn claim_check(store: Arc<dyn ObjectStore>, threshold: Option<usize>) -> ClaimCheck {
    let cc = ClaimCheck::new(store).prefix(PREFIX);
    match threshold {
        Some(bytes) => cc.threshold(bytes),
        None => cc,
    }
}

/// A subscriber `beta` of [`BulkEvents`] whose claim check reads `store`, recording what it
/// handles.
async fn subscriber(scene: &Scene<'_>, store: Arc<dyn ObjectStore>, handled: &Handled) -> Bus {
    let handled = handled.clone();
    scene
        .build(
            scene
                .builder("beta")
                .claim_check(claim_check(store, Some(1024)))
                .subscribe(
                    Subscription::to::<BulkEvents>()
                        .with_shared_state(handled)
                        .retry(quick(2, 2))
                        .on(|e: Bulk, cx: Context<Runs>| async move {
                            let claimed = cx.envelope().header(CLAIM_CHECK).is_some();
                            cx.state().lock().expect("handled lock").push((
                                e,
                                claimed,
                                cx.attempt(),
                            ));
                            Ok::<(), HandlerError>(())
                        }),
                ),
            "the subscriber `beta` with a claim check",
        )
        .await
}

/// A publisher `alpha` of [`BulkEvents`] whose claim check writes `store`.
async fn publisher(
    scene: &Scene<'_>,
    store: Arc<dyn ObjectStore>,
    threshold: Option<usize>,
) -> Bus {
    scene
        .build(
            scene
                .builder("alpha")
                .publishes::<BulkEvents>()
                .claim_check(claim_check(store, threshold)),
            "the publisher `alpha` with a claim check",
        )
        .await
}

async fn handled_until(scene: &Scene<'_>, handled: &Handled, ns: &[u64]) {
    scene
        .poll(&format!("bulk events {ns:?} handled"), || async {
            let seen: Vec<u64> = handled
                .lock()
                .expect("handled lock")
                .iter()
                .map(|h| h.0.n)
                .collect();
            if ns.iter().all(|n| seen.contains(n)) {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await
}

/// A 5 MiB event (over every transport's limit) is published through the store and
/// handled exactly as published, by a handler that sees it came by claim check; a small
/// event of the same bus travels as it is.
pub async fn claim_check_round_trip(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "claim_check_round_trip");
    let dir = Dir::new(&scene);
    let handled = Handled::default();
    let _beta = subscriber(&scene, dir.store(), &handled).await;
    // The default threshold: below the transport's own limit.
    let alpha = publisher(&scene, dir.store(), None).await;
    let big = Bulk::new(1, 5 * 1024 * 1024);
    let small = Bulk::new(2, 16);
    let id = alpha
        .publish(big.clone())
        .await
        .must("publishing the 5 MiB event");
    alpha
        .publish(small.clone())
        .await
        .must("publishing a small event");
    handled_until(&scene, &handled, &[1, 2]).await;
    scene.quiet().await;

    let seen = handled.lock().expect("handled lock").clone();
    assert_eq!(
        seen.len(),
        2,
        "each event handled once; got {} runs",
        seen.len()
    );
    let (got, claimed, _) = seen.iter().find(|h| h.0.n == 1).expect("event 1 handled");
    assert!(
        got == &big,
        "the 5 MiB event arrived changed ({} bytes of data instead of {})",
        got.data.len(),
        big.data.len()
    );
    assert!(claimed, "the 5 MiB event did not come by claim check");
    let (got, claimed, _) = seen.iter().find(|h| h.0.n == 2).expect("event 2 handled");
    assert_eq!(got, &small);
    assert!(!claimed, "a small event was claim-checked");
    assert!(
        dir.0.join(PREFIX).join(id.to_string()).is_file(),
        "the payload is not stored at `{PREFIX}/{id}`"
    );
}

/// A reference whose stored payload is missing, and one whose stored payload is corrupt,
/// are dead-lettered at once with a reason naming the location; the handler never runs for
/// them and the next event is handled.
pub async fn claim_check_missing_or_corrupt(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "claim_check_missing_or_corrupt");
    let dir = Dir::new(&scene);
    let handled = Handled::default();
    let beta = subscriber(&scene, dir.store(), &handled).await;
    let dropping = publisher(
        &scene,
        Faulty::store(dir.store(), Fault::DropPuts),
        Some(1024),
    )
    .await;
    let corrupting = publisher(
        &scene,
        Faulty::store(dir.store(), Fault::CorruptPuts),
        Some(1024),
    )
    .await;
    let sound = publisher(&scene, dir.store(), Some(1024)).await;
    let missing = dropping
        .publish(Bulk::new(1, 4096))
        .await
        .must("publishing event 1");
    let corrupt = corrupting
        .publish(Bulk::new(2, 4096))
        .await
        .must("publishing event 2");
    sound
        .publish(Bulk::new(3, 4096))
        .await
        .must("publishing event 3");
    handled_until(&scene, &handled, &[3]).await;

    let dead = scene
        .poll("events 1 and 2 dead-lettered", || async {
            let dead = beta
                .dead_letters::<BulkEvents>(100)
                .await
                .must("listing dead letters");
            if dead.len() >= 2 {
                Ok(dead)
            } else {
                Err(dead
                    .iter()
                    .map(|d| d.info.reason.clone())
                    .collect::<Vec<_>>())
            }
        })
        .await;
    scene.quiet().await;
    assert_eq!(dead.len(), 2, "two dead letters expected: {dead:?}");
    for (id, what) in [(missing, "missing"), (corrupt, "corrupt")] {
        let letter = dead
            .iter()
            .find(|d| d.envelope.id == id)
            .unwrap_or_else(|| panic!("the {what} event {id} is not dead-lettered: {dead:?}"));
        let reason = &letter.info.reason;
        assert!(
            reason.contains(&format!("{PREFIX}/{id}")) && reason.contains(what),
            "the reason should name the location `{PREFIX}/{id}` and say `{what}`: {reason}"
        );
        assert_eq!(
            letter.info.attempts, 0,
            "the {what} event was retried: {reason}"
        );
    }
    let ns: Vec<u64> = handled
        .lock()
        .expect("handled lock")
        .iter()
        .map(|h| h.0.n)
        .collect();
    assert_eq!(ns, vec![3], "only event 3 should reach the handler");
}

/// A store failing its first three reads: the fetch is retried like a failed handler run
/// (policy: 2 immediate runs, 2 redeliveries), and the handler runs once, on the fourth
/// attempt, with the event as published; nothing is dead-lettered.
pub async fn claim_check_store_outage(f: &dyn TransportFactory) {
    let scene = Scene::new(f, "claim_check_store_outage");
    let dir = Dir::new(&scene);
    let handled = Handled::default();
    let flaky = Arc::new(Faulty {
        inner: dir.store(),
        fault: Fault::FailReads(3),
        reads: AtomicUsize::new(0),
    });
    let beta = subscriber(&scene, flaky.clone(), &handled).await;
    let alpha = publisher(&scene, dir.store(), Some(1024)).await;
    let event = Bulk::new(1, 4096);
    alpha
        .publish(event.clone())
        .await
        .must("publishing event 1");
    handled_until(&scene, &handled, &[1]).await;
    scene.quiet().await;

    let seen = handled.lock().expect("handled lock").clone();
    assert_eq!(
        seen.len(),
        1,
        "the handler should run once: {} runs",
        seen.len()
    );
    let (got, claimed, attempt) = &seen[0];
    assert!(
        got == &event && *claimed,
        "the event arrived changed or not by claim check"
    );
    assert_eq!(
        *attempt, 4,
        "three failed reads, then the handler on attempt 4"
    );
    assert_eq!(flaky.reads.load(Ordering::SeqCst), 4, "reads of the store");
    let dead = beta
        .dead_letters::<BulkEvents>(100)
        .await
        .must("listing dead letters");
    assert!(dead.is_empty(), "nothing should be dead-lettered: {dead:?}");
}

/// What a [`Faulty`] store does wrong.
#[derive(Debug)]
enum Fault {
    /// Puts succeed without storing anything.
    DropPuts,
    /// Puts store the payload with its first byte flipped.
    CorruptPuts,
    /// The first `n` reads fail as an outage would.
    FailReads(usize),
}

/// A store that does one thing wrong, over a sound one.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    fault: Fault,
    reads: AtomicUsize,
}

impl Faulty {
    fn store(inner: Arc<dyn ObjectStore>, fault: Fault) -> Arc<dyn ObjectStore> {
        Arc::new(Faulty {
            inner,
            fault,
            reads: AtomicUsize::new(0),
        })
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({:?}, {})", self.fault, self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.fault {
            Fault::DropPuts => Ok(PutResult {
                e_tag: None,
                version: None,
            }),
            Fault::CorruptPuts => {
                let mut bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
                if let Some(first) = bytes.first_mut() {
                    *first ^= 0xff;
                }
                self.inner.put_opts(location, bytes.into(), opts).await
            }
            Fault::FailReads(_) => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let read = self.reads.fetch_add(1, Ordering::SeqCst);
        if matches!(self.fault, Fault::FailReads(n) if read < n) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("outage: read {} of `{location}` refused", read + 1).into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
