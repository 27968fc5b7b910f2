//! `tidings validate` on the Library and on one deliberately broken copy per rule: the
//! exit status, and one line per problem that names it and says how to fix it.

mod common;

use common::*;
use serde_json::json;

#[test]
fn the_library_is_valid() {
    let run = run(&library(), &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "2 services, 2 events: 0 errors, 0 warnings\n");
}

#[test]
fn duplicate_definition_two_schemas_for_one_version() {
    let dir = library_copy();
    // Catalog reads v1 with its own copy of the type, which lost a field.
    edit_catalog(dir.path(), "catalog", |c| {
        let schema = &mut handled_borrowed(c)["schema"];
        schema["properties"]
            .as_object_mut()
            .unwrap()
            .remove("patron_id");
        schema["required"] = json!(["book_id"]);
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[duplicate-definition]: `lending.book-borrowed` v1 is defined twice with different schemas: `lending` publishes it as `BookBorrowed`, `catalog` reads it as `BookBorrowed` (field `patron_id` removed): define the event once in the shared contracts crate, use that type in both services and regenerate their catalogs"]
    );
    assert!(
        run.stdout
            .ends_with("2 services, 2 events: 1 error, 0 warnings\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn duplicate_definition_two_publishers() {
    let dir = library_copy();
    let lending_topic = {
        let text = std::fs::read_to_string(dir.path().join("catalog/lending.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["publishes"][0].clone()
    };
    edit_catalog(dir.path(), "catalog", |c| {
        c["publishes"] = json!([lending_topic])
    });
    edit_manifest(dir.path(), |m| {
        m.replace(
            "[services.catalog]\n",
            "[services.catalog]\npublishes = [\"lending.book-borrowed\", \"lending.book-returned\"]\n",
        )
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.lines("error").contains(
        &"error[duplicate-definition]: `lending.book-borrowed` is published by `catalog`, `lending`: one context owns each event, so publish it from one service only or give the other event its own wire name"
    ), "{}", run.stdout);
}

#[test]
fn missing_handler_for_a_declared_subscription() {
    let dir = library_copy();
    edit_catalog(dir.path(), "catalog", |c| {
        c["subscriptions"][0]["handles"]
            .as_array_mut()
            .unwrap()
            .remove(1);
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[missing-handler]: `catalog` subscribes to `lending.book-returned` in tidings.toml but has no handler for it: add `.on(handler)` for `BookReturned` to a subscription of `catalog` to `lending`, or remove it from services.catalog.subscribes"]
    );
    // Nobody handles it now, which is a warning of its own.
    assert_eq!(run.lines("warning[unhandled]").len(), 1, "{}", run.stdout);
}

#[test]
fn manifest_mismatch_a_declared_service_without_catalog() {
    let dir = library_copy();
    edit_manifest(dir.path(), |m| {
        m + "\n[services.billing]\nsubscribes = [\"lending.book-borrowed\"]\n"
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        [
            "error[manifest-mismatch]: `billing` is declared in tidings.toml but has no catalog: write `billing.json` into the catalog folder from its bus (`bus.catalog().write_to_dir(..)`), or remove [services.billing]"
        ]
    );
}

#[test]
fn unpublished_an_event_nobody_publishes() {
    let dir = library_copy();
    edit_catalog(dir.path(), "catalog", |c| {
        let mut lost = handled_borrowed(c).clone();
        lost["name"] = json!("lending.book-lost");
        lost["type"] = json!("BookLost");
        c["subscriptions"][0]["handles"]
            .as_array_mut()
            .unwrap()
            .push(lost);
    });
    edit_manifest(dir.path(), |m| {
        m.replace(
            "subscribes = [\"lending.book-borrowed\", \"lending.book-returned\"]",
            "subscribes = [\"lending.book-borrowed\", \"lending.book-returned\", \"lending.book-lost\"]",
        )
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[unpublished]: `catalog` handles `lending.book-lost` but no service publishes it: publish it from the context that owns it (`.publishes::<TheTopic>()` on its bus and its catalog in the folder), or remove the handler"]
    );
}

#[test]
fn unhandled_is_a_warning() {
    let dir = library_copy();
    edit_catalog(dir.path(), "lending", |l| {
        let mut lost = published_borrowed(l).clone();
        lost["name"] = json!("lending.book-lost");
        lost["type"] = json!("BookLost");
        l["publishes"][0]["events"]
            .as_array_mut()
            .unwrap()
            .push(lost);
    });
    edit_manifest(dir.path(), |m| {
        m.replace(
            "publishes = [\"lending.book-borrowed\", \"lending.book-returned\"]",
            "publishes = [\"lending.book-borrowed\", \"lending.book-returned\", \"lending.book-lost\"]",
        )
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 0, "warnings do not fail: {run:?}");
    assert_eq!(
        run.lines("warning"),
        [
            "warning[unhandled]: `lending.book-lost` is published by `lending` but no subscription handles it: add a handler where it is needed, or stop publishing it",
            "warning[lock-outdated]: `lending.book-lost` v1 (published by `lending`) is not in tidings.lock: run `tidings validate --update` and commit tidings.lock",
        ]
    );
}

#[test]
fn version_mismatch_a_subscriber_behind_the_publisher() {
    let dir = library_copy();
    edit_catalog(dir.path(), "lending", |l| {
        published_borrowed(l)["version"] = json!(2)
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[version-mismatch]: `catalog` reads `lending.book-borrowed` v1 but `lending` publishes v2, which `catalog` dead-letters as too new: update `catalog` to the v2 contract and register `.upcast::<Old, New>()` from v1 on its subscription while v1 envelopes are in flight"]
    );
}

#[test]
fn version_mismatch_no_upcast_path_from_the_published_version() {
    let dir = library_copy();
    // Catalog reads v2, which added a required field; Lending still publishes v1.
    edit_catalog(dir.path(), "catalog", |c| {
        let h = handled_borrowed(c);
        h["version"] = json!(2);
        h["schema"]["properties"]["due"] = json!({"type": "string", "format": "date"});
        h["schema"]["required"] = json!(["book_id", "patron_id", "due"]);
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[version-mismatch]: `catalog` reads `lending.book-borrowed` v2 but `lending` publishes v1 and there is no upcast path from v1 (new required field `due`): register `.upcast::<BookBorrowedV1, BookBorrowed>()` (the v1 shape, `From` into v2) on the subscription `catalog` of `catalog`"]
    );
    // With the upcast registered, the path exists.
    let text = std::fs::read_to_string(library().join("catalog/catalog.json")).unwrap();
    let mut v1: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema = handled_borrowed(&mut v1)["schema"].clone();
    edit_catalog(dir.path(), "catalog", |c| {
        handled_borrowed(c)["upcasts"] =
            json!([{"from_version": 1, "type": "BookBorrowedV1", "schema": schema}]);
    });
    let run = common::run(dir.path(), &["validate"]);
    assert_eq!(run.lines("error").len(), 0, "{run:?}");
}

/// Both services' copies of `lending.book-borrowed` edited alike, as a shared contracts
/// crate would change them.
fn change_borrowed(dir: &std::path::Path, edit: impl Fn(&mut serde_json::Value)) {
    edit_catalog(dir, "lending", |l| edit(published_borrowed(l)));
    edit_catalog(dir, "catalog", |c| edit(handled_borrowed(c)));
}

#[test]
fn contract_changed_without_a_version_bump() {
    let dir = library_copy();
    change_borrowed(dir.path(), |e| {
        e["schema"]["properties"]["patron_id"]["type"] = json!("integer");
        e["schema"]["properties"]["patron_id"]
            .as_object_mut()
            .unwrap()
            .remove("format");
    });
    let run = common::run(dir.path(), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.lines("error"),
        ["error[contract-changed]: `lending.book-borrowed` v1 changed incompatibly since tidings.lock (type of `patron_id` changed from string (uuid) to integer) without a version bump: set `version = 2` on `BookBorrowed` and keep the v1 shape for subscribers with `.upcast`, or undo the change"]
    );
    // Bumped, the same change is fine; the lock is only out of date.
    change_borrowed(dir.path(), |e| e["version"] = json!(2));
    let run = common::run(dir.path(), &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.lines("warning"),
        ["warning[lock-outdated]: `lending.book-borrowed` is v2 in the code and v1 in tidings.lock (type of `patron_id` changed from string (uuid) to integer): run `tidings validate --update` and commit tidings.lock"]
    );
}

#[test]
fn a_new_optional_field_is_compatible_and_update_records_it() {
    let dir = library_copy();
    change_borrowed(dir.path(), |e| {
        e["schema"]["properties"]["note"] = json!({"type": ["string", "null"]});
    });
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.lines("warning"),
        ["warning[lock-outdated]: `lending.book-borrowed` v1 changed compatibly since tidings.lock (new optional field `note`): run `tidings validate --update` and commit tidings.lock"]
    );
    let update = common::run(dir.path(), &["validate", "--update"]);
    assert_eq!(update.code, 0, "{update:?}");
    assert!(
        update.stdout.contains("wrote tidings.lock (2 events)"),
        "{}",
        update.stdout
    );
    let lock = std::fs::read_to_string(dir.path().join("tidings.lock")).unwrap();
    assert!(lock.contains("\"note\""), "{lock}");
    let again = common::run(dir.path(), &["validate"]);
    assert_eq!(again.stdout, "2 services, 2 events: 0 errors, 0 warnings\n");
}

#[test]
fn no_schema_is_a_warning_that_says_what_to_derive() {
    let dir = library_copy();
    change_borrowed(dir.path(), |e| e["schema"] = json!(null));
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    let warnings = run.lines("warning");
    assert!(warnings.contains(&"warning[no-schema]: `lending.book-borrowed` v1 (`BookBorrowed`, which `lending` publishes) has no JSON Schema, so its contract changes cannot be checked: derive `schemars::JsonSchema` on `BookBorrowed` and the types of its fields (tidings feature `schema`, on by default)"), "{warnings:?}");
    assert!(warnings.contains(&"warning[lock-outdated]: `lending.book-borrowed` v1 has no schema now, so it cannot be checked against tidings.lock: derive `schemars::JsonSchema` on `BookBorrowed` again"), "{warnings:?}");
}

#[test]
fn without_a_lock_validate_says_how_to_create_it() {
    let dir = library_copy();
    std::fs::remove_file(dir.path().join("tidings.lock")).unwrap();
    let run = run(dir.path(), &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("warning[no-lock]: no lock file at tidings.lock, so contract changes are not checked: run `tidings validate --update` and commit it\n"), "{}", run.stdout);
    let update = common::run(dir.path(), &["validate", "--update"]);
    assert_eq!(update.code, 0);
    let written = std::fs::read_to_string(dir.path().join("tidings.lock")).unwrap();
    let committed = std::fs::read_to_string(library().join("tidings.lock")).unwrap();
    assert_eq!(
        written, committed,
        "--update writes what the Library committed"
    );
}
