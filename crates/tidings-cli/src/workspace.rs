//! Finding and reading the workspace's files: the manifest, the catalogs and the lock.
//! Every failure is one line that names the file and says what to do.

use std::path::{Path, PathBuf};

use tidings_core::catalog::{Lock, Manifest, ServiceCatalog};

use crate::{Failure, Files};

/// The manifest's default name.
const MANIFEST: &str = "tidings.toml";
/// The lock's default name.
const LOCK: &str = "tidings.lock";

/// What the commands work on.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The manifest, when there is one.
    pub(crate) manifest: Option<Manifest>,
    /// The catalogs, sorted by service.
    pub(crate) catalogs: Vec<ServiceCatalog>,
    /// Where the lock is (it may not exist yet).
    pub(crate) lock_path: PathBuf,
}

impl Workspace {
    /// Read the manifest and the catalogs the options (or the defaults) point at.
    pub(crate) fn load(files: &Files) -> Result<Self, Failure> {
        let manifest_path = match &files.manifest {
            Some(path) if !path.is_file() => {
                return Err(format!(
                    "manifest {} not found: pass the path of your tidings.toml with --manifest",
                    path.display()
                )
                .into())
            }
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(MANIFEST)).filter(|p| p.is_file()),
        };
        let manifest = manifest_path.as_deref().map(read_manifest).transpose()?;
        let base = manifest_path
            .as_deref()
            .map(|p| p.parent().unwrap_or(Path::new("")).to_path_buf());
        let info = manifest.as_ref().map(|m| &m.workspace);
        let catalog_dir = match (&files.catalog, &base) {
            (Some(dir), _) => dir.clone(),
            (None, Some(base)) => base.join(
                info.and_then(|w| w.catalog.as_deref())
                    .unwrap_or("catalog"),
            ),
            (None, None) => {
                return Err(
                    "no catalog folder: pass --catalog <dir> (a folder of <service>.json catalogs), or run where tidings.toml is, or pass --manifest"
                        .into(),
                )
            }
        };
        let lock_path = match (&files.lock, &base) {
            (Some(path), _) => path.clone(),
            (None, Some(base)) => base.join(info.and_then(|w| w.lock.as_deref()).unwrap_or(LOCK)),
            (None, None) => catalog_dir.parent().unwrap_or(Path::new("")).join(LOCK),
        };
        let catalogs = read_catalogs(&catalog_dir)?;
        Ok(Workspace {
            manifest,
            catalogs,
            lock_path,
        })
    }

    /// The lock, if the file exists.
    pub(crate) fn lock(&self) -> Result<Option<Lock>, Failure> {
        let path = &self.lock_path;
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Lock::from_json(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()).into())
    }

    /// The catalog of `service`, or an error naming the services there are.
    pub(crate) fn check_service(&self, service: &str) -> Result<(), Failure> {
        if self.catalogs.iter().any(|c| c.service == service)
            || self
                .manifest
                .as_ref()
                .is_some_and(|m| m.services.contains_key(service))
        {
            return Ok(());
        }
        let known: Vec<&str> = self.catalogs.iter().map(|c| c.service.as_str()).collect();
        Err(format!(
            "unknown service `{service}`: the catalogs describe {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
        .into())
    }

    /// The services in the catalogs and the manifest, sorted.
    pub(crate) fn services(&self) -> Vec<&str> {
        let mut services: Vec<&str> = self.catalogs.iter().map(|c| c.service.as_str()).collect();
        if let Some(m) = &self.manifest {
            services.extend(m.services.keys().map(String::as_str));
        }
        services.sort_unstable();
        services.dedup();
        services
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read manifest {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().trim().to_string();
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        format!(
            "{}{at}: {message}; the manifest has [workspace] (name, version, description, catalog, lock) and [services.<name>] tables with publishes and subscribes lists",
            path.display()
        )
        .into()
    })
}

fn read_catalogs(dir: &Path) -> Result<Vec<ServiceCatalog>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the catalog folder {}: {e}; pass --catalog <dir> with the <service>.json files your buses wrote",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!(
            "no catalog files (*.json) in {}: write one per service with `bus.catalog().write_to_dir(..)`",
            dir.display()
        )
        .into());
    }
    let mut catalogs: Vec<ServiceCatalog> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let catalog =
            ServiceCatalog::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if catalogs.iter().any(|c| c.service == catalog.service) {
            return Err(format!(
                "{}: a second catalog of service `{}` in {}: keep one file per service",
                path.display(),
                catalog.service,
                dir.display()
            )
            .into());
        }
        catalogs.push(catalog);
    }
    catalogs.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(catalogs)
}
