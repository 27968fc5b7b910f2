//! The workspace manifest (`tidings.toml`): the services and the events each says it
//! publishes and subscribes to, the way the seeds' `vsa.yaml` declares bounded contexts.
//! The types are plain serde; the `tidings` command reads them from TOML.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A workspace manifest: `[workspace]` and one `[services.<name>]` table per service.
///
/// ```toml
/// [workspace]
/// name = "library"
/// catalog = "catalog"          # folder of <service>.json catalogs, relative to this file
///
/// [services.lending]
/// publishes = ["lending.book-borrowed", "lending.book-returned"]
///
/// [services.catalog]
/// subscribes = ["lending.book-borrowed", "lending.book-returned"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The workspace as a whole.
    #[serde(default)]
    pub workspace: WorkspaceInfo,
    /// The services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceDeclaration>,
}

/// `[workspace]`: names and where the files are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceInfo {
    /// The system's name (the AsyncAPI title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The version of the system's event API (the AsyncAPI `info.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the system does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The folder of catalog files, relative to the manifest (default `catalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// The lock file, relative to the manifest (default `tidings.lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

/// `[services.<name>]`: what a service says it publishes and subscribes to, by wire name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDeclaration {
    /// What the service is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Wire names of the events it publishes.
    #[serde(default)]
    pub publishes: Vec<String>,
    /// Wire names of the events it handles.
    #[serde(default)]
    pub subscribes: Vec<String>,
}
