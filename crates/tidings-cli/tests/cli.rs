//! The `tidings` binary on the Library's catalog (`list`, `graph`) and on bad input: a
//! missing file, malformed JSON or TOML, an unknown service give one line on stderr and
//! exit status 2, never a panic.

mod common;

use common::*;

#[test]
fn list_prints_one_line_per_event_in_the_seeds_form() {
    let run = run(&library(), &["list"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Integration events:\n  lending.book-borrowed v1 [lending] (lending → catalog)\n  lending.book-returned v1 [lending] (lending → catalog)\n"
    );
}

#[test]
fn list_as_json() {
    let run = run(&library(), &["list", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let events: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        events[0],
        serde_json::json!({
            "name": "lending.book-borrowed",
            "version": 1,
            "topic": "lending",
            "type": "BookBorrowed",
            "publishers": ["lending"],
            "subscribers": [{"service": "catalog", "subscription": "catalog", "version": 1}],
            "has_schema": true
        })
    );
    assert_eq!(events.as_array().unwrap().len(), 2);
}

#[test]
fn list_of_one_service_and_of_an_unknown_one() {
    let run = common::run(&library(), &["list", "--service", "catalog"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    let run = common::run(&library(), &["list", "--service", "billing"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "tidings: unknown service `billing`: the catalogs describe catalog, lending\n"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn the_options_find_the_files_from_anywhere() {
    let lib = library();
    let manifest = lib.join("tidings.toml");
    let from_root = common::run(
        &lib.join("../.."),
        &["validate", "--manifest", manifest.to_str().unwrap()],
    );
    assert_eq!(from_root.code, 0, "{from_root:?}");
    // Without a manifest: --catalog alone.
    let tmp = tempfile::tempdir().unwrap();
    let catalog = lib.join("catalog");
    let run = common::run(
        tmp.path(),
        &["list", "--catalog", catalog.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("(lending → catalog)"));
}

#[test]
fn graph_as_mermaid() {
    let run = run(&library(), &["graph"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "flowchart LR\n  s0[\"catalog\"]\n  s1[\"lending\"]\n  s1 -->|\"lending.book-borrowed v1<br/>lending.book-returned v1\"| s0\n"
    );
}

/// Runs `args` in `dir`, expecting the one-line failure `expected` (a prefix of it).
fn fails(dir: &std::path::Path, args: &[&str], expected: &str) {
    let run = common::run(dir, args);
    assert_eq!(run.code, 2, "{args:?}: {run:?}");
    assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    assert!(
        run.stderr.starts_with(expected),
        "{args:?}:\n  got:      {}  expected: {expected}",
        run.stderr
    );
}

#[test]
fn bad_input_is_one_line_and_exit_status_2() {
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path();
    fails(
        e,
        &["list"],
        "tidings: no catalog folder: pass --catalog <dir>",
    );
    fails(
        e,
        &["list", "--catalog", "missing"],
        "tidings: cannot read the catalog folder missing: No such file or directory",
    );
    fails(
        e,
        &["validate", "--manifest", "nowhere/tidings.toml"],
        "tidings: manifest nowhere/tidings.toml not found: pass the path of your tidings.toml with --manifest",
    );
    std::fs::create_dir(e.join("catalog")).unwrap();
    fails(
        e,
        &["graph", "--catalog", "catalog"],
        "tidings: no catalog files (*.json) in catalog: write one per service with `bus.catalog().write_to_dir(..)`",
    );

    let dir = library_copy();
    let d = dir.path();
    std::fs::write(
        d.join("catalog/lending.json"),
        "{\"tidings_catalog\": 1, \"service\": ",
    )
    .unwrap();
    fails(
        d,
        &["list"],
        "tidings: catalog/lending.json: not a tidings catalog: EOF while parsing a value at line 1 column 34 (regenerate it",
    );
    std::fs::write(d.join("catalog/lending.json"), "[1, 2]").unwrap();
    fails(
        d,
        &["asyncapi"],
        "tidings: catalog/lending.json: not a tidings catalog: it is not a JSON object",
    );
    std::fs::copy(
        library().join("catalog/lending.json"),
        d.join("catalog/lending.json"),
    )
    .unwrap();
    std::fs::copy(
        library().join("catalog/lending.json"),
        d.join("catalog/lending-copy.json"),
    )
    .unwrap();
    fails(
        d,
        &["list"],
        "tidings: catalog/lending.json: a second catalog of service `lending`",
    );
    std::fs::remove_file(d.join("catalog/lending-copy.json")).unwrap();

    std::fs::write(d.join("tidings.lock"), "not json").unwrap();
    fails(d, &["validate"], "tidings: tidings.lock: not a tidings lock file: expected ident at line 1 column 2 (rewrite it with `tidings validate --update`)");

    edit_manifest(d, |m| {
        m.replace("[services.lending]", "[services.lending]\npublish = []")
    });
    let manifest = std::fs::read_to_string(d.join("tidings.toml")).unwrap();
    let line = manifest.lines().position(|l| l == "publish = []").unwrap() + 1;
    fails(d, &["validate"], &format!("tidings: tidings.toml (line {line}): unknown field `publish`, expected one of `description`, `publishes`, `subscribes`; the manifest has [workspace]"));
    edit_manifest(d, |_| "[workspace\n".into());
    fails(d, &["list"], "tidings: tidings.toml (line 1): ");

    let run = common::run(d, &["frobnicate"]);
    assert_eq!(run.code, 2, "clap's usage error: {run:?}");
    assert!(
        run.stderr
            .starts_with("error: unrecognized subcommand 'frobnicate'"),
        "{}",
        run.stderr
    );
}

#[test]
fn asyncapi_writes_a_file_or_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("asyncapi.json");
    let run = common::run(&library(), &["asyncapi", "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "library");
    let bad = tmp.path().join("no/such/dir/asyncapi.json");
    fails(
        &library(),
        &["asyncapi", "-o", bad.to_str().unwrap()],
        "tidings: cannot write ",
    );
}
