//! `tidings graph`: the flow of events between services, as a Mermaid flowchart or
//! Graphviz DOT. One node per service, one edge per (publisher, subscriber) pair labelled
//! with the events it carries; published events nobody handles go to a dashed "no
//! subscriber" node.

use std::collections::BTreeMap;

use tidings_core::catalog::Index;

use crate::workspace::Workspace;

/// The flow: services and labelled edges.
struct Flow<'a> {
    services: Vec<&'a str>,
    /// (from, to) to event labels, sorted; `to` is `None` for "no subscriber".
    edges: BTreeMap<(&'a str, Option<&'a str>), Vec<String>>,
}

fn flow(ws: &Workspace) -> Flow<'_> {
    let index = Index::new(&ws.catalogs);
    let mut edges: BTreeMap<(&str, Option<&str>), Vec<String>> = BTreeMap::new();
    for (name, publishers) in &index.publishers {
        for p in publishers {
            let label = format!("{name} v{}", p.contract.version);
            let handlers = index.handlers_of(name);
            if handlers.is_empty() {
                edges
                    .entry((p.service, None))
                    .or_default()
                    .push(label.clone());
            }
            for h in handlers {
                let labels = edges.entry((p.service, Some(h.service))).or_default();
                if !labels.contains(&label) {
                    labels.push(label.clone());
                }
            }
        }
    }
    Flow {
        services: ws.services(),
        edges,
    }
}

fn id(services: &[&str], service: &str) -> String {
    let i = services.iter().position(|s| *s == service).unwrap_or(0);
    format!("s{i}")
}

/// A Mermaid flowchart, left to right.
pub(crate) fn mermaid(ws: &Workspace) -> String {
    let f = flow(ws);
    let mut out = String::from("flowchart LR\n");
    for s in &f.services {
        out.push_str(&format!(
            "  {}[\"{}\"]\n",
            id(&f.services, s),
            escape_mermaid(s)
        ));
    }
    if f.edges.keys().any(|(_, to)| to.is_none()) {
        out.push_str("  nobody((\"no subscriber\"))\n");
    }
    for ((from, to), labels) in &f.edges {
        let label = labels
            .iter()
            .map(|l| escape_mermaid(l))
            .collect::<Vec<_>>()
            .join("<br/>");
        match to {
            Some(to) => out.push_str(&format!(
                "  {} -->|\"{label}\"| {}\n",
                id(&f.services, from),
                id(&f.services, to)
            )),
            None => out.push_str(&format!(
                "  {} -.->|\"{label}\"| nobody\n",
                id(&f.services, from)
            )),
        }
    }
    out
}

fn escape_mermaid(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// Graphviz DOT, left to right: `tidings graph --format dot | dot -Tsvg > flow.svg`.
pub(crate) fn dot(ws: &Workspace) -> String {
    let f = flow(ws);
    let title = ws
        .manifest
        .as_ref()
        .and_then(|m| m.workspace.name.as_deref())
        .unwrap_or("tidings");
    let mut out = format!("digraph \"{}\" {{\n", escape_dot(title));
    out.push_str("  rankdir=LR;\n");
    out.push_str("  graph [fontname=\"Helvetica\", fontsize=11, nodesep=0.6, ranksep=1.2];\n");
    out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\", color=\"#3b6cc4\", fontname=\"Helvetica\", fontsize=12];\n");
    out.push_str("  edge [color=\"#555555\", fontname=\"Helvetica\", fontsize=10];\n");
    for s in &f.services {
        out.push_str(&format!("  \"{}\";\n", escape_dot(s)));
    }
    if f.edges.keys().any(|(_, to)| to.is_none()) {
        out.push_str(
            "  \"(no subscriber)\" [shape=plaintext, style=\"\", fontcolor=\"#888888\"];\n",
        );
    }
    for ((from, to), labels) in &f.edges {
        let label = labels
            .iter()
            .map(|l| escape_dot(l))
            .collect::<Vec<_>>()
            .join("\\n");
        match to {
            Some(to) => out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{label}\"];\n",
                escape_dot(from),
                escape_dot(to)
            )),
            None => out.push_str(&format!(
                "  \"{}\" -> \"(no subscriber)\" [label=\"{label}\", style=dashed];\n",
                escape_dot(from)
            )),
        }
    }
    out.push_str("}\n");
    out
}

fn escape_dot(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
