//! The lock file (`tidings.lock`): the committed snapshot of every published contract,
//! which `tidings validate` compares the code's contracts with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ServiceCatalog;

/// The format version of lock files, the value of their `tidings_lock` key.
pub const LOCK_FORMAT: u32 = 1;

/// A snapshot of the published contracts: wire name to version and payload schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    /// The document format, [`LOCK_FORMAT`].
    pub tidings_lock: u32,
    /// The published events by wire name.
    pub events: BTreeMap<String, LockedEvent>,
}

/// One published event as it was when the lock was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedEvent {
    /// The contract version.
    pub version: u32,
    /// The topic it is published to.
    pub topic: String,
    /// The publishing service.
    pub publisher: String,
    /// The Rust type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The payload schema, `null` if the event had none.
    pub schema: Option<Value>,
}

impl Lock {
    /// The lock of what `catalogs` publish now (what `tidings validate --update` writes).
    /// An event published by several services is recorded as the first one publishes it.
    pub fn from_catalogs(catalogs: &[ServiceCatalog]) -> Self {
        let mut events = BTreeMap::new();
        for c in catalogs {
            for t in &c.publishes {
                for e in &t.events {
                    events.entry(e.name.clone()).or_insert_with(|| LockedEvent {
                        version: e.version,
                        topic: t.topic.clone(),
                        publisher: c.service.clone(),
                        type_name: e.type_name.clone(),
                        schema: e.schema.clone(),
                    });
                }
            }
        }
        Lock {
            tidings_lock: LOCK_FORMAT,
            events,
        }
    }

    /// The lock as pretty JSON with a final newline: the file's content.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a lock serialises");
        json.push('\n');
        json
    }

    /// Read a lock file's content; the error says what is wrong and what to do.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let lock: Lock = serde_json::from_str(json).map_err(|e| {
            format!("not a tidings lock file: {e} (rewrite it with `tidings validate --update`)")
        })?;
        if lock.tidings_lock != LOCK_FORMAT {
            return Err(format!(
                "lock format {} is not supported (this version reads format {LOCK_FORMAT}): rewrite it with `tidings validate --update`",
                lock.tidings_lock
            ));
        }
        Ok(lock)
    }
}

/// Check `catalogs` (the buses of one service, or several) against the lock file at
/// `path`: the contract-change rule of `tidings validate` ([`check_lock`](super::check_lock)),
/// for a test. Returns the problems, errors first; fails when the lock cannot be read.
pub fn check_lock_file(
    catalogs: &[ServiceCatalog],
    path: impl AsRef<std::path::Path>,
) -> Result<Vec<super::Problem>, String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the lock file {}: {e}; create it with `tidings validate --update`",
            path.display()
        )
    })?;
    let lock = Lock::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(super::check_lock(catalogs, &lock))
}

/// Assert, inside `cargo test`, that the contracts of `catalogs` agree with the committed
/// lock file at `path`: panics listing every error of the contract-change rule (a breaking
/// change without a version bump, a version that went down, a subscriber reading a locked
/// version with another schema), each with its fix; prints the warnings (the lock is only
/// out of date: `tidings validate --update`).
///
/// With the environment variable `TIDINGS_UPDATE_LOCK=1` it records the events these
/// catalogs publish in the lock instead (keeping the other services' entries).
///
/// ```no_run
/// # fn f(bus: &tidings_core::Bus) {
/// tidings_core::catalog::assert_lock(&[bus.catalog().clone()], "tidings.lock");
/// # }
/// ```
#[track_caller]
pub fn assert_lock(catalogs: &[ServiceCatalog], path: impl AsRef<std::path::Path>) {
    let path = path.as_ref();
    if std::env::var("TIDINGS_UPDATE_LOCK").is_ok_and(|v| v == "1") {
        let mut lock = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| Lock::from_json(&text).ok())
            .unwrap_or(Lock {
                tidings_lock: LOCK_FORMAT,
                events: BTreeMap::new(),
            });
        lock.events.extend(Lock::from_catalogs(catalogs).events);
        if let Err(e) = std::fs::write(path, lock.to_json()) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    let problems = match check_lock_file(catalogs, path) {
        Ok(problems) => problems,
        Err(e) => panic!("{e}"),
    };
    let (errors, warnings): (Vec<_>, Vec<_>) = problems.iter().partition(|p| p.is_error());
    for w in warnings {
        eprintln!("{w}");
    }
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(|p| format!("  {p}")).collect();
        panic!(
            "the contracts do not match {}:\n{}",
            path.display(),
            lines.join("\n")
        );
    }
}
