//! The workspace rules of `tidings validate`, over catalogs, the manifest and the lock.
//! Each problem is one line that says what is wrong and how to fix it.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::index::{Handler, Index, Publisher};
use super::{compare, Change, Lock, Manifest, ServiceCatalog};

/// How bad a [`Problem`] is: errors fail `tidings validate`, warnings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails the validation.
    Error,
    /// Reported; the validation still passes.
    Warning,
}

/// The rule a [`Problem`] breaks; its [`code`](Rule::code) is printed with the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// One wire name, several definitions: published by two services or in two topics, or
    /// one version with different schemas in different services.
    DuplicateDefinition,
    /// A service subscribes to an event in the manifest but its code has no handler for it.
    MissingHandler,
    /// The manifest and the code disagree otherwise: a service without a catalog, a catalog
    /// without a service, an event published or handled but not declared, or declared but
    /// not published.
    ManifestMismatch,
    /// An event is handled (or subscribed to) but no service publishes it.
    Unpublished,
    /// An event is published but no subscription handles it (a warning).
    Unhandled,
    /// A subscriber reads an older version than the publisher publishes, or a newer one
    /// with no upcast path from the published version.
    VersionMismatch,
    /// A contract changed incompatibly since the lock without a version bump (or its
    /// version went down).
    ContractChanged,
    /// The lock does not record the contracts as they are (a warning: `--update`).
    LockOutdated,
    /// An event has no payload schema, so its changes cannot be checked (a warning).
    NoSchema,
}

impl Rule {
    /// The rule's short name, e.g. `missing-handler`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::DuplicateDefinition => "duplicate-definition",
            Rule::MissingHandler => "missing-handler",
            Rule::ManifestMismatch => "manifest-mismatch",
            Rule::Unpublished => "unpublished",
            Rule::Unhandled => "unhandled",
            Rule::VersionMismatch => "version-mismatch",
            Rule::ContractChanged => "contract-changed",
            Rule::LockOutdated => "lock-outdated",
            Rule::NoSchema => "no-schema",
        }
    }
}

/// One finding: `error[missing-handler]: <what is wrong>: <how to fix it>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong and how to fix it, on one line.
    pub message: String,
}

impl Problem {
    fn error(rule: Rule, message: String) -> Self {
        Problem {
            severity: Severity::Error,
            rule,
            message,
        }
    }

    fn warning(rule: Rule, message: String) -> Self {
        Problem {
            severity: Severity::Warning,
            rule,
            message,
        }
    }

    /// Whether it fails the validation.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}]: {}", self.rule.code(), self.message)
    }
}

/// Every rule of `tidings validate` over the catalogs of a workspace, with its manifest
/// and lock when there are: errors first, then warnings, each group in rule order.
pub fn validate(
    catalogs: &[ServiceCatalog],
    manifest: Option<&Manifest>,
    lock: Option<&Lock>,
) -> Vec<Problem> {
    let index = Index::new(catalogs);
    let mut problems = Vec::new();
    duplicates(&index, &mut problems);
    if let Some(manifest) = manifest {
        against_manifest(catalogs, &index, manifest, &mut problems);
    }
    publishing(&index, manifest, &mut problems);
    versions(&index, &mut problems);
    if let Some(lock) = lock {
        against_lock(&index, lock, false, &mut problems);
    }
    no_schema(&index, &mut problems);
    problems.sort_by_key(|p| (p.severity, p.rule));
    problems
}

/// The contract-change rule alone, for one service's catalog in a test: what it publishes
/// against the lock, and the versions it handles against the lock's schemas.
pub fn check_lock(catalogs: &[ServiceCatalog], lock: &Lock) -> Vec<Problem> {
    let index = Index::new(catalogs);
    let mut problems = Vec::new();
    against_lock(&index, lock, true, &mut problems);
    problems.sort_by_key(|p| (p.severity, p.rule));
    problems
}

fn list(changes: &[Change]) -> String {
    changes
        .iter()
        .map(Change::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn publisher_names(publishers: &[Publisher<'_>]) -> String {
    publishers
        .iter()
        .map(|p| format!("`{}`", p.service))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One definition of an event somewhere: (service, role, version, type, schema).
struct Definition<'a> {
    service: &'a str,
    role: &'static str,
    version: u32,
    type_name: &'a str,
    schema: Option<&'a Value>,
}

fn definitions<'a>(index: &Index<'a>, name: &str) -> Vec<Definition<'a>> {
    let mut defs = Vec::new();
    for p in index.publishers_of(name) {
        defs.push(Definition {
            service: p.service,
            role: "publishes",
            version: p.contract.version,
            type_name: &p.contract.type_name,
            schema: p.contract.schema.as_ref(),
        });
    }
    for h in index.handlers_of(name) {
        defs.push(Definition {
            service: h.service,
            role: "reads",
            version: h.handled.version,
            type_name: &h.handled.type_name,
            schema: h.handled.schema.as_ref(),
        });
        for u in &h.handled.upcasts {
            defs.push(Definition {
                service: h.service,
                role: "upcasts",
                version: u.from_version,
                type_name: &u.type_name,
                schema: u.schema.as_ref(),
            });
        }
    }
    defs
}

fn duplicates(index: &Index<'_>, problems: &mut Vec<Problem>) {
    for name in index.names() {
        let publishers = index.publishers_of(name);
        let services: BTreeSet<&str> = publishers.iter().map(|p| p.service).collect();
        let topics: BTreeSet<&str> = publishers
            .iter()
            .map(|p| p.topic)
            .chain(index.handlers_of(name).iter().map(|h| h.topic))
            .collect();
        if services.len() > 1 {
            problems.push(Problem::error(
                Rule::DuplicateDefinition,
                format!(
                    "`{name}` is published by {}: one context owns each event, so publish it from one service only or give the other event its own wire name",
                    publisher_names(publishers)
                ),
            ));
        } else if topics.len() > 1 {
            let topics: Vec<String> = topics.iter().map(|t| format!("`{t}`")).collect();
            problems.push(Problem::error(
                Rule::DuplicateDefinition,
                format!(
                    "`{name}` belongs to several topics ({}): put the event in one #[derive(Topic)] enum, shared by publisher and subscribers through the contracts crate",
                    topics.join(", ")
                ),
            ));
        }
        // One version, one schema.
        let defs = definitions(index, name);
        let versions: BTreeSet<u32> = defs.iter().map(|d| d.version).collect();
        for version in versions {
            let with_schema: Vec<&Definition<'_>> = defs
                .iter()
                .filter(|d| d.version == version && d.schema.is_some())
                .collect();
            let Some(first) = with_schema.first() else {
                continue;
            };
            let mut reported = BTreeSet::new();
            for other in &with_schema[1..] {
                let changes = compare(first.schema.unwrap(), other.schema.unwrap());
                if changes.is_empty() || !reported.insert(other.service) {
                    continue;
                }
                problems.push(Problem::error(
                    Rule::DuplicateDefinition,
                    format!(
                        "`{name}` v{version} is defined twice with different schemas: `{}` {} it as `{}`, `{}` {} it as `{}` ({}): define the event once in the shared contracts crate, use that type in both services and regenerate their catalogs",
                        first.service, first.role, first.type_name, other.service, other.role, other.type_name, list(&changes)
                    ),
                ));
            }
        }
    }
}

fn against_manifest(
    catalogs: &[ServiceCatalog],
    index: &Index<'_>,
    manifest: &Manifest,
    problems: &mut Vec<Problem>,
) {
    for (service, declared) in &manifest.services {
        let Some(catalog) = catalogs.iter().find(|c| &c.service == service) else {
            problems.push(Problem::error(
                Rule::ManifestMismatch,
                format!(
                    "`{service}` is declared in tidings.toml but has no catalog: write `{service}.json` into the catalog folder from its bus (`bus.catalog().write_to_dir(..)`), or remove [services.{service}]"
                ),
            ));
            continue;
        };
        let handled: BTreeSet<&str> = catalog
            .subscriptions
            .iter()
            .flat_map(|s| s.handles.iter().map(|h| h.name.as_str()))
            .collect();
        let published: BTreeSet<&str> = catalog
            .publishes
            .iter()
            .flat_map(|t| t.events.iter().map(|e| e.name.as_str()))
            .collect();
        for name in &declared.subscribes {
            if handled.contains(name.as_str()) {
                continue;
            }
            let hint = match index.publishers_of(name).first() {
                Some(p) => format!(
                    "add `.on(handler)` for `{}` to a subscription of `{service}` to `{}`",
                    p.contract.type_name, p.topic
                ),
                None => format!("add a handler for `{name}` to a subscription of `{service}`"),
            };
            problems.push(Problem::error(
                Rule::MissingHandler,
                format!(
                    "`{service}` subscribes to `{name}` in tidings.toml but has no handler for it: {hint}, or remove it from services.{service}.subscribes"
                ),
            ));
        }
        for name in handled
            .iter()
            .filter(|n| !declared.subscribes.iter().any(|d| d == *n))
        {
            problems.push(Problem::error(
                Rule::ManifestMismatch,
                format!(
                    "`{service}` handles `{name}` but tidings.toml does not say so: add \"{name}\" to services.{service}.subscribes"
                ),
            ));
        }
        for name in &declared.publishes {
            if !published.contains(name.as_str()) {
                problems.push(Problem::error(
                    Rule::ManifestMismatch,
                    format!(
                        "`{service}` publishes `{name}` in tidings.toml but its bus does not declare it: add `.publishes::<TheTopic>()` for the topic of `{name}` to its Bus::builder, or remove it from services.{service}.publishes"
                    ),
                ));
            }
        }
        for name in published
            .iter()
            .filter(|n| !declared.publishes.iter().any(|d| d == *n))
        {
            problems.push(Problem::error(
                Rule::ManifestMismatch,
                format!(
                    "`{service}` publishes `{name}` but tidings.toml does not say so: add \"{name}\" to services.{service}.publishes"
                ),
            ));
        }
    }
    for c in catalogs {
        if !manifest.services.contains_key(&c.service) {
            problems.push(Problem::error(
                Rule::ManifestMismatch,
                format!(
                    "there is a catalog of `{}` but tidings.toml has no [services.{}]: declare what it publishes and subscribes to, or remove its catalog file",
                    c.service, c.service
                ),
            ));
        }
    }
}

fn publishing(index: &Index<'_>, manifest: Option<&Manifest>, problems: &mut Vec<Problem>) {
    let mut subscribers: Vec<(String, String)> = index
        .handlers
        .iter()
        .flat_map(|(name, hs)| hs.iter().map(|h| (name.to_string(), h.service.to_string())))
        .collect();
    if let Some(m) = manifest {
        for (service, d) in &m.services {
            subscribers.extend(d.subscribes.iter().map(|n| (n.clone(), service.clone())));
        }
    }
    let mut seen = BTreeSet::new();
    for (name, service) in subscribers {
        if index.publishers_of(&name).is_empty() && seen.insert((name.clone(), service.clone())) {
            problems.push(Problem::error(
                Rule::Unpublished,
                format!(
                    "`{service}` handles `{name}` but no service publishes it: publish it from the context that owns it (`.publishes::<TheTopic>()` on its bus and its catalog in the folder), or remove the handler"
                ),
            ));
        }
    }
    for (name, publishers) in &index.publishers {
        if index.handlers_of(name).is_empty() {
            problems.push(Problem::warning(
                Rule::Unhandled,
                format!(
                    "`{name}` is published by {} but no subscription handles it: add a handler where it is needed, or stop publishing it",
                    publisher_names(publishers)
                ),
            ));
        }
    }
}

fn versions(index: &Index<'_>, problems: &mut Vec<Problem>) {
    for (name, publishers) in &index.publishers {
        for p in publishers {
            let pv = p.contract.version;
            for h in index.handlers_of(name) {
                version_rule(name, p, h, pv, problems);
            }
        }
    }
}

fn version_rule(
    name: &str,
    p: &Publisher<'_>,
    h: &Handler<'_>,
    pv: u32,
    problems: &mut Vec<Problem>,
) {
    let hv = h.handled.version;
    let (s, ps) = (h.service, p.service);
    if hv < pv {
        problems.push(Problem::error(
            Rule::VersionMismatch,
            format!(
                "`{s}` reads `{name}` v{hv} but `{ps}` publishes v{pv}, which `{s}` dead-letters as too new: update `{s}` to the v{pv} contract and register `.upcast::<Old, New>()` from v{hv} on its subscription while v{hv} envelopes are in flight"
            ),
        ));
    } else if hv > pv && !h.handled.reads(pv) {
        let fix = format!(
            "register `.upcast::<{}V{pv}, {}>()` (the v{pv} shape, `From` into v{hv}) on the subscription `{}` of `{s}`",
            h.handled.type_name, h.handled.type_name, h.subscription
        );
        match (p.contract.schema.as_ref(), h.handled.schema.as_ref()) {
            (Some(old), Some(new)) => {
                let breaking: Vec<Change> =
                    compare(old, new).into_iter().filter(Change::is_breaking).collect();
                if !breaking.is_empty() {
                    problems.push(Problem::error(
                        Rule::VersionMismatch,
                        format!(
                            "`{s}` reads `{name}` v{hv} but `{ps}` publishes v{pv} and there is no upcast path from v{pv} ({}): {fix}",
                            list(&breaking)
                        ),
                    ));
                }
            }
            _ => problems.push(Problem::warning(
                Rule::VersionMismatch,
                format!(
                    "`{s}` reads `{name}` v{hv} but `{ps}` publishes v{pv} and there is no upcast from v{pv}; without schemas it cannot be told whether v{hv} reads v{pv} payloads: {fix}"
                ),
            )),
        }
    }
}

fn against_lock(index: &Index<'_>, lock: &Lock, handlers: bool, problems: &mut Vec<Problem>) {
    let update = "run `tidings validate --update` and commit tidings.lock";
    for (name, publishers) in &index.publishers {
        let p = &publishers[0];
        let (v, ty) = (p.contract.version, &p.contract.type_name);
        let Some(locked) = lock.events.get(*name) else {
            problems.push(Problem::warning(
                Rule::LockOutdated,
                format!(
                    "`{name}` v{v} (published by `{}`) is not in tidings.lock: {update}",
                    p.service
                ),
            ));
            continue;
        };
        let lv = locked.version;
        if v < lv {
            problems.push(Problem::error(
                Rule::ContractChanged,
                format!(
                    "`{name}` is v{v} in the code but v{lv} in tidings.lock: versions only go up; set `version = {lv}` or higher on `{ty}`, or restore tidings.lock if it is the one that is wrong"
                ),
            ));
            continue;
        }
        match (locked.schema.as_ref(), p.contract.schema.as_ref()) {
            (Some(old), Some(new)) => {
                let changes = compare(old, new);
                let breaking: Vec<Change> =
                    changes.iter().filter(|c| c.is_breaking()).cloned().collect();
                if v == lv && !breaking.is_empty() {
                    problems.push(Problem::error(
                        Rule::ContractChanged,
                        format!(
                            "`{name}` v{v} changed incompatibly since tidings.lock ({}) without a version bump: set `version = {}` on `{ty}` and keep the v{v} shape for subscribers with `.upcast`, or undo the change",
                            list(&breaking),
                            v + 1
                        ),
                    ));
                } else if v == lv && !changes.is_empty() {
                    problems.push(Problem::warning(
                        Rule::LockOutdated,
                        format!("`{name}` v{v} changed compatibly since tidings.lock ({}): {update}", list(&changes)),
                    ));
                } else if v > lv {
                    let what = if changes.is_empty() {
                        "with the same schema".to_string()
                    } else {
                        format!("({})", list(&changes))
                    };
                    problems.push(Problem::warning(
                        Rule::LockOutdated,
                        format!("`{name}` is v{v} in the code and v{lv} in tidings.lock {what}: {update}"),
                    ));
                }
            }
            (None, Some(_)) => problems.push(Problem::warning(
                Rule::LockOutdated,
                format!("`{name}` v{v} has a schema now but none in tidings.lock: {update}"),
            )),
            (Some(_), None) => problems.push(Problem::warning(
                Rule::LockOutdated,
                format!("`{name}` v{v} has no schema now, so it cannot be checked against tidings.lock: derive `schemars::JsonSchema` on `{ty}` again"),
            )),
            (None, None) if v != lv => problems.push(Problem::warning(
                Rule::LockOutdated,
                format!("`{name}` is v{v} in the code and v{lv} in tidings.lock: {update}"),
            )),
            (None, None) => {}
        }
    }
    if handlers {
        for (name, hs) in &index.handlers {
            let Some(locked) = lock.events.get(*name) else {
                continue;
            };
            for h in hs.iter().filter(|h| h.handled.version == locked.version) {
                if let (Some(old), Some(new)) = (locked.schema.as_ref(), h.handled.schema.as_ref())
                {
                    let changes = compare(old, new);
                    if !changes.is_empty() {
                        problems.push(Problem::error(
                            Rule::DuplicateDefinition,
                            format!(
                                "`{}` reads `{name}` v{} as `{}` with another schema than tidings.lock records ({}): use the contract type of the shared contracts crate, or bump the version where the event is defined",
                                h.service, locked.version, h.handled.type_name, list(&changes)
                            ),
                        ));
                    }
                }
            }
        }
    } else {
        for name in lock.events.keys() {
            if index.publishers_of(name).is_empty() {
                problems.push(Problem::warning(
                    Rule::LockOutdated,
                    format!("`{name}` is in tidings.lock but no service publishes it any more: {update}"),
                ));
            }
        }
    }
}

fn no_schema(index: &Index<'_>, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for name in index.names() {
        for d in definitions(index, name) {
            if d.schema.is_none() && seen.insert((name, d.version, d.type_name)) {
                problems.push(Problem::warning(
                    Rule::NoSchema,
                    format!(
                        "`{name}` v{} (`{}`, which `{}` {}) has no JSON Schema, so its contract changes cannot be checked: derive `schemars::JsonSchema` on `{}` and the types of its fields (tidings feature `schema`, on by default)",
                        d.version, d.type_name, d.service, d.role, d.type_name
                    ),
                ));
            }
        }
    }
}
