//! The Library: Lending publishes integration events, Catalog keeps its inventory from
//! them. Both contexts run in this process on one transport.
//!
//! ```text
//! cargo run --example library                                   # memory transport
//! cargo run --example library -- --transport memory://library   # any compiled-in URL
//! cargo run --example library -- --persistent                   # SQLite, outbox and inbox
//! cargo run --example library -- --persistent --db library.db   # ... and keep the database
//! cargo run --example library --features opentelemetry -- --trace  # spans on the console
//! cargo run --example library -- --catalog DIR   # write the services' catalogs for `tidings`
//! ```

// The modules stand for the contexts' crates (hence `pub`) and are shared with
// tests/library.rs, which uses some items this binary doesn't.
#![allow(dead_code, unreachable_pub)]

mod catalog;
mod contracts;
mod lending;
mod persistent;
mod services;
mod trace;

use std::sync::Arc;

use tracing::Instrument;

use catalog::Inventory;
use contracts::{BookId, PatronId};
use lending::{Lending, LendingStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = transport_from_args();
    if let Some(dir) = arg_value("--catalog") {
        // The services' catalogs, as `tidings` (list, validate, asyncapi, graph) reads them.
        for path in services::write_catalogs(&url, std::path::Path::new(&dir))? {
            println!("library: wrote {}", path.display());
        }
        return Ok(());
    }
    let _tracing = std::env::args()
        .any(|a| a == "--trace")
        .then(trace::install)
        .flatten();
    println!(
        "library: Lending and Catalog on {}",
        tidings::redact_url(&url)
    );
    if std::env::args().any(|a| a == "--persistent") {
        // `--db PATH` keeps the database; without it a temporary one is removed after.
        let kept = arg_value("--db").map(std::path::PathBuf::from);
        let path = kept.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("tidings-library-{}.db", std::process::id()))
        });
        let result = persistent::run(url, &path).await;
        if kept.is_none() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        return result.map_err(|e| e as Box<dyn std::error::Error>);
    }

    // Catalog: subscribes to Lending's topic.
    let inventory = Arc::new(Inventory::default());
    let (dune, solaris) = (BookId::new(), BookId::new());
    inventory.add_book(dune, "Dune", 2);
    inventory.add_book(solaris, "Solaris", 1);
    let catalog = services::catalog_bus(&url, inventory.clone())
        .build()
        .await?;

    // Lending: publishes its topic.
    let lending_bus = services::lending_bus(&url).build().await?;
    let lending = Lending::new(lending_bus.clone(), Arc::new(LendingStore::default()));
    let (diana, tomas) = (PatronId::new(), PatronId::new());
    lending.store.seed_patron(diana, "Diana");
    lending.store.seed_patron(tomas, "Tomás");

    // Each command is a span of its own: with --trace, one trace runs from it through the
    // broker into Catalog's handler.
    let loan = lending
        .borrow_book(diana, dune)
        .instrument(tracing::info_span!("borrow", book = "Dune"))
        .await?;
    println!(
        "lending: Diana borrowed Dune (loans: {})",
        loans(&lending, diana)
    );
    lending
        .borrow_book(tomas, solaris)
        .instrument(tracing::info_span!("borrow", book = "Solaris"))
        .await?;
    println!(
        "lending: Tomás borrowed Solaris (loans: {})",
        loans(&lending, tomas)
    );
    lending
        .return_book(loan)
        .instrument(tracing::info_span!("return", book = "Dune"))
        .await?;
    println!(
        "lending: Diana returned Dune (loans: {})",
        loans(&lending, diana)
    );

    // Integration events are asynchronous: wait until Catalog applied all three.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        inventory.wait_for_updates(3),
    )
    .await?;
    lending_bus.shutdown().await;
    catalog.shutdown().await;

    let mut shelf: Vec<String> = inventory
        .all()
        .into_iter()
        .map(|(_, s)| format!("{} {}/{}", s.title, s.available, s.total))
        .collect();
    shelf.sort();
    println!("inventory: {}", shelf.join(", "));
    Ok(())
}

fn loans(lending: &Lending, patron: PatronId) -> u32 {
    lending.store.patron(patron).map(|p| p.loans).unwrap_or(0)
}

/// `--transport URL`, else `TIDINGS_URL`, else `memory://`.
fn transport_from_args() -> String {
    arg_value("--transport")
        .or_else(|| std::env::var("TIDINGS_URL").ok())
        .unwrap_or_else(|| "memory://".to_string())
}

/// The value after `flag` on the command line.
fn arg_value(flag: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next();
        }
    }
    None
}
