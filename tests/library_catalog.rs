//! The Library ships its catalogs (examples/library/catalog/), generated from the same
//! buses the example builds; these tests fail when the committed files drift from the code
//! or the contracts drift from tidings.lock.
//!
//! `TIDINGS_UPDATE_CATALOG=1 cargo test --test library_catalog` rewrites the catalogs;
//! `TIDINGS_UPDATE_LOCK=1` records the contracts in the lock (or `tidings validate
//! --update` in examples/library).

#![allow(unreachable_pub)]

#[path = "../examples/library/catalog.rs"]
#[allow(dead_code)]
mod catalog;
#[path = "../examples/library/contracts.rs"]
#[allow(dead_code)]
mod contracts;
#[path = "../examples/library/services.rs"]
#[allow(dead_code)]
mod services;

use std::path::Path;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/library");

#[test]
fn the_committed_catalogs_describe_the_library_buses() {
    let dir = Path::new(DIR).join("catalog");
    let catalogs = services::catalogs("memory://");
    if std::env::var("TIDINGS_UPDATE_CATALOG").is_ok_and(|v| v == "1") {
        services::write_catalogs("memory://", &dir).expect("write the catalogs");
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples/library/catalog exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["catalog.json", "lending.json"],
        "one file per service"
    );
    for c in &catalogs {
        let path = dir.join(format!("{}.json", c.service));
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == c.to_json(),
            "{} is out of date: run `TIDINGS_UPDATE_CATALOG=1 cargo test --test library_catalog` and commit it",
            path.display()
        );
    }
    // The schemas are there, so `tidings validate` can check contract changes.
    let lending = &catalogs[1];
    let borrowed = &lending.publishes[0].events[0];
    assert_eq!(borrowed.name, "lending.book-borrowed");
    let schema = borrowed
        .schema
        .as_ref()
        .expect("BookBorrowed derives JsonSchema");
    assert_eq!(
        schema["required"],
        serde_json::json!(["book_id", "patron_id"])
    );
    assert_eq!(schema["properties"]["book_id"]["format"], "uuid");
}

#[test]
fn the_library_contracts_match_the_lock() {
    tidings::catalog::assert_lock(
        &services::catalogs("memory://"),
        Path::new(DIR).join("tidings.lock"),
    );
}

#[test]
fn a_breaking_change_without_a_version_bump_fails_the_lock_check() {
    let mut catalogs = services::catalogs("memory://");
    let schema = catalogs[1].publishes[0].events[0].schema.as_mut().unwrap();
    schema["properties"]
        .as_object_mut()
        .unwrap()
        .remove("patron_id");
    let problems =
        tidings::catalog::check_lock_file(&catalogs, Path::new(DIR).join("tidings.lock")).unwrap();
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("error[contract-changed]: `lending.book-borrowed` v1 changed incompatibly since tidings.lock (field `patron_id` removed) without a version bump: set `version = 2` on `BookBorrowed`"),
        "{}",
        errors[0]
    );
    let panic = std::panic::catch_unwind(|| {
        tidings::catalog::assert_lock(&catalogs, Path::new(DIR).join("tidings.lock"))
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("field `patron_id` removed"), "{message}");
}

#[test]
fn a_subscriber_reading_a_locked_version_with_another_schema_fails_the_lock_check() {
    // Catalog alone, as its own test would check it: its copy of BookReturned lost a field.
    let mut catalogs = services::catalogs("memory://");
    catalogs.truncate(1);
    let handled = &mut catalogs[0].subscriptions[0].handles[1];
    assert_eq!(handled.name, "lending.book-returned");
    handled.schema.as_mut().unwrap()["required"] = serde_json::json!(["book_id"]);
    let problems =
        tidings::catalog::check_lock_file(&catalogs, Path::new(DIR).join("tidings.lock")).unwrap();
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["error[duplicate-definition]: `catalog` reads `lending.book-returned` v1 as `BookReturned` with another schema than tidings.lock records (field `patron_id` became optional): use the contract type of the shared contracts crate, or bump the version where the event is defined"]
    );
    let missing = tidings::catalog::check_lock_file(&catalogs, "no/such/tidings.lock").unwrap_err();
    assert!(
        missing.starts_with("cannot read the lock file no/such/tidings.lock: ")
            && missing.ends_with("; create it with `tidings validate --update`"),
        "{missing}"
    );
}
