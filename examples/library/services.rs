//! The Library's buses as `main` builds them, shared with the catalog test
//! (`tests/library_catalog.rs`) so the committed catalogs describe exactly these buses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidings::prelude::*;
use tidings::BusBuilder;

use crate::catalog::{self, Inventory};
use crate::contracts::LendingEvents;

/// Catalog's bus: subscribes to Lending's topic.
pub fn catalog_bus(url: &str, inventory: Arc<Inventory>) -> BusBuilder {
    Bus::builder("catalog")
        .transport_url(url)
        .subscribe(catalog::subscription(inventory))
}

/// Lending's bus: publishes its topic.
pub fn lending_bus(url: &str) -> BusBuilder {
    Bus::builder("lending")
        .transport_url(url)
        .publishes::<LendingEvents>()
}

/// The catalogs of both services on `url`, as `tidings` reads them.
pub fn catalogs(url: &str) -> Vec<tidings::catalog::ServiceCatalog> {
    vec![
        catalog_bus(url, Arc::new(Inventory::default())).catalog(),
        lending_bus(url).catalog(),
    ]
}

/// Write `<service>.json` for both services into `dir` (`--catalog DIR`).
pub fn write_catalogs(url: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    catalogs(url).iter().map(|c| c.write_to_dir(dir)).collect()
}
