//! `tidings asyncapi` output checked by the official AsyncAPI parser (`@asyncapi/parser`
//! from npm) on the machine's Node.js: tests/asyncapi/ has the package.json and lockfile;
//! `npm ci` there installs it (scripts/test does when node_modules is missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

fn checker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asyncapi")
}

/// Run the parser on `doc`: (passed, what it printed).
fn parse(doc: &Path) -> (bool, String) {
    let dir = checker();
    assert!(
        dir.join("node_modules/@asyncapi/parser").is_dir(),
        "the AsyncAPI parser is not installed: run `npm ci` in {} (scripts/test does it when node_modules is missing)",
        dir.display()
    );
    let out = Command::new("node")
        .arg("validate.mjs")
        .arg(doc)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): install Node.js 20 or newer to check AsyncAPI documents"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn asyncapi(dir: &Path) -> (PathBuf, serde_json::Value, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("asyncapi.json");
    let run = run(dir, &["asyncapi", "--output", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    (file, doc, tmp)
}

#[test]
fn the_library_document_is_valid_asyncapi_3() {
    let (file, doc, _tmp) = asyncapi(&library());
    let (ok, report) = parse(&file);
    assert!(ok, "the parser rejected the document:\n{report}");
    assert!(
        report.contains("valid AsyncAPI 3.0.0: 1 channels, 2 operations, 2 messages"),
        "{report}"
    );
    assert!(
        !report.lines().any(|l| l.starts_with("warning")),
        "{report}"
    );

    // What it describes: the channel, the messages with schemas and headers, operations.
    assert_eq!(doc["channels"]["lending"]["address"], "lending");
    let msg = &doc["components"]["messages"]["lending.book-borrowed"];
    assert_eq!(msg["contentType"], "application/msgpack");
    assert_eq!(
        msg["payload"]["schemaFormat"],
        "application/schema+json;version=draft-07"
    );
    assert_eq!(
        msg["payload"]["schema"]["required"],
        json!(["book_id", "patron_id"])
    );
    assert_eq!(
        msg["headers"]["properties"]["ce_type"]["const"],
        "lending.book-borrowed"
    );
    assert_eq!(
        msg["headers"]["properties"]["ce_source"]["const"],
        "lending"
    );
    assert_eq!(
        doc["operations"]["lending.publish.lending"]["action"],
        "send"
    );
    let receive = &doc["operations"]["catalog.receive.lending"];
    assert_eq!(receive["action"], "receive");
    assert_eq!(
        receive["messages"][1]["$ref"],
        "#/channels/lending/messages/lending.book-returned"
    );
}

#[test]
fn events_without_schema_upcasts_and_unpublished_events_stay_valid() {
    let dir = library_copy();
    edit_catalog(dir.path(), "lending", |l| {
        let e = published_borrowed(l);
        e["schema"] = json!(null);
        e["version"] = json!(2);
    });
    edit_catalog(dir.path(), "catalog", |c| {
        let h = handled_borrowed(c);
        h["version"] = json!(2);
        h["upcasts"] = json!([{"from_version": 1, "type": "BookBorrowedV1", "schema": null}]);
        let mut lost = h.clone();
        lost["name"] = json!("shelf.book-lost");
        lost["type"] = json!("BookLost");
        let retry = c["subscriptions"][0]["retry"].clone();
        c["subscriptions"].as_array_mut().unwrap().push(
            json!({"name": "catalog", "topic": "shelf", "broker_topic": "shelf",
                         "handles": [lost], "retry": retry,
                         "concurrency": 1}),
        );
    });
    let (file, doc, _tmp) = asyncapi(dir.path());
    let (ok, report) = parse(&file);
    assert!(ok, "the parser rejected the document:\n{report}");
    assert!(
        report.contains("2 channels, 3 operations, 3 messages"),
        "{report}"
    );
    let msg = &doc["components"]["messages"]["lending.book-borrowed"];
    assert!(msg.get("payload").is_none());
    assert!(msg["description"]
        .as_str()
        .unwrap()
        .contains("no JSON Schema"));
}

/// The checker is not a rubber stamp: a broken document fails it.
#[test]
fn the_parser_rejects_a_broken_document() {
    let (file, mut doc, _tmp) = asyncapi(&library());
    doc["operations"]["lending.publish.lending"]["channel"]["$ref"] = json!("#/channels/nowhere");
    doc["info"].as_object_mut().unwrap().remove("version");
    std::fs::write(&file, doc.to_string()).unwrap();
    let (ok, report) = parse(&file);
    assert!(!ok, "{report}");
    assert!(report.contains("invalid:"), "{report}");
}
