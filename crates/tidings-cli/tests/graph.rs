//! `tidings graph --format dot` rendered by Graphviz (`dot -Tsvg`, installed by
//! scripts/test when missing), and the Library's committed picture kept in step with it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// `dot -Tsvg` of `source`.
fn render(source: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run Graphviz `dot` ({e}): install it (`apt-get install graphviz`; scripts/test does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot refused the graph: {}\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the `<text>` elements of an SVG, in order.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0))
        .map(|t| {
            t.replace("&#45;", "-")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
}

#[test]
fn the_library_graph_renders_to_svg() {
    let run = run(&library(), &["graph", "--format", "dot"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("digraph \"library\" {\n"),
        "{}",
        run.stdout
    );
    let svg = render(&run.stdout);
    assert!(svg.contains("<svg"), "{svg}");
    assert_eq!(
        texts(&svg),
        [
            "catalog",
            "lending",
            "lending.book-borrowed v1",
            "lending.book-returned v1"
        ]
    );
    // One edge, from the publisher to the subscriber.
    assert!(
        svg.contains("<title>lending&#45;&gt;catalog</title>"),
        "{svg}"
    );
}

#[test]
fn the_committed_picture_shows_the_current_flow() {
    let run = run(&library(), &["graph", "--format", "dot"]);
    let committed = std::fs::read_to_string(library().join("flow.svg")).unwrap();
    assert_eq!(
        texts(&committed),
        texts(&render(&run.stdout)),
        "examples/library/flow.svg is out of date: in examples/library run `tidings graph --format dot | dot -Tsvg > flow.svg` and commit it"
    );
}

#[test]
fn unhandled_events_and_odd_names_render_too() {
    let dir = library_copy();
    edit_catalog(dir.path(), "catalog", |c| {
        c["subscriptions"] = serde_json::json!([])
    });
    edit_catalog(dir.path(), "lending", |l| {
        l["service"] = serde_json::json!("lend\"ing")
    });
    // No manifest: the catalogs alone.
    std::fs::remove_file(dir.path().join("tidings.toml")).unwrap();
    let run = run(
        dir.path(),
        &["graph", "--format", "dot", "--catalog", "catalog"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let svg = render(&run.stdout);
    assert_eq!(
        texts(&svg),
        [
            "catalog",
            "lend\"ing",
            "(no subscriber)",
            "lending.book-borrowed v1",
            "lending.book-returned v1"
        ]
    );
    let mermaid = common::run(dir.path(), &["graph", "--catalog", "catalog"]);
    assert!(
        mermaid
            .stdout
            .contains("s1 -.->|\"lending.book-borrowed v1<br/>lending.book-returned v1\"| nobody"),
        "{}",
        mermaid.stdout
    );
    assert!(
        mermaid.stdout.contains("s1[\"lend#quot;ing\"]"),
        "{}",
        mermaid.stdout
    );
}
