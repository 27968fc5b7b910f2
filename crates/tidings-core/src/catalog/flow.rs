//! The flow of events between services: one node per service, one edge per (publisher,
//! subscriber) pair labelled with the events it carries, and published events nobody
//! handles drawn to a "no subscriber" node. Rendered as a Mermaid flowchart or as
//! Graphviz DOT; `tidings graph` prints it and the dashboard draws it.

use std::collections::BTreeMap;

use super::{Index, ServiceCatalog};

/// The flow of events between the services of a set of catalogs.
///
/// ```
/// use tidings_core::catalog::{Flow, ServiceCatalog};
///
/// let catalogs: Vec<ServiceCatalog> = Vec::new();
/// let flow = Flow::new(&catalogs, ["lending"]);
/// assert!(flow.to_dot("library").contains("\"lending\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Every service, sorted.
    pub services: Vec<String>,
    /// (publisher, subscriber) to the events it carries (`<wire name> v<version>`,
    /// sorted); the subscriber is `None` for events nobody handles.
    pub edges: BTreeMap<(String, Option<String>), Vec<String>>,
}

impl Flow {
    /// The flow of `catalogs`, with `more` services drawn too (those a workspace manifest
    /// declares without a catalog).
    pub fn new<'a>(catalogs: &[ServiceCatalog], more: impl IntoIterator<Item = &'a str>) -> Self {
        let index = Index::new(catalogs);
        let mut edges: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
        for (name, publishers) in &index.publishers {
            for p in publishers {
                let label = format!("{name} v{}", p.contract.version);
                let handlers = index.handlers_of(name);
                let targets: Vec<Option<String>> = if handlers.is_empty() {
                    vec![None]
                } else {
                    handlers
                        .iter()
                        .map(|h| Some(h.service.to_string()))
                        .collect()
                };
                for to in targets {
                    let labels = edges.entry((p.service.to_string(), to)).or_default();
                    if !labels.contains(&label) {
                        labels.push(label.clone());
                    }
                }
            }
        }
        let mut services: Vec<String> = catalogs.iter().map(|c| c.service.clone()).collect();
        services.extend(more.into_iter().map(str::to_string));
        services.sort_unstable();
        services.dedup();
        Flow { services, edges }
    }

    fn id(&self, service: &str) -> String {
        let i = self.services.iter().position(|s| s == service).unwrap_or(0);
        format!("s{i}")
    }

    fn has_unhandled(&self) -> bool {
        self.edges.keys().any(|(_, to)| to.is_none())
    }

    /// A Mermaid flowchart, left to right (renders in GitHub Markdown).
    pub fn to_mermaid(&self) -> String {
        let escape = |s: &str| s.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for s in &self.services {
            out.push_str(&format!("  {}[\"{}\"]\n", self.id(s), escape(s)));
        }
        if self.has_unhandled() {
            out.push_str("  nobody((\"no subscriber\"))\n");
        }
        for ((from, to), labels) in &self.edges {
            let label = labels.iter().map(|l| escape(l)).collect::<Vec<_>>();
            let label = label.join("<br/>");
            match to {
                Some(to) => out.push_str(&format!(
                    "  {} -->|\"{label}\"| {}\n",
                    self.id(from),
                    self.id(to)
                )),
                None => out.push_str(&format!("  {} -.->|\"{label}\"| nobody\n", self.id(from))),
            }
        }
        out
    }

    /// Graphviz DOT, left to right, titled `title`: `dot -Tsvg` draws it.
    pub fn to_dot(&self, title: &str) -> String {
        let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!("digraph \"{}\" {{\n", escape(title));
        out.push_str("  rankdir=LR;\n");
        out.push_str("  graph [fontname=\"Helvetica\", fontsize=11, nodesep=0.6, ranksep=1.2];\n");
        out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\", color=\"#3b6cc4\", fontname=\"Helvetica\", fontsize=12];\n");
        out.push_str("  edge [color=\"#555555\", fontname=\"Helvetica\", fontsize=10];\n");
        for s in &self.services {
            out.push_str(&format!("  \"{}\";\n", escape(s)));
        }
        if self.has_unhandled() {
            out.push_str(
                "  \"(no subscriber)\" [shape=plaintext, style=\"\", fontcolor=\"#888888\"];\n",
            );
        }
        for ((from, to), labels) in &self.edges {
            let label = labels.iter().map(|l| escape(l)).collect::<Vec<_>>();
            let label = label.join("\\n");
            match to {
                Some(to) => out.push_str(&format!(
                    "  \"{}\" -> \"{}\" [label=\"{label}\"];\n",
                    escape(from),
                    escape(to)
                )),
                None => out.push_str(&format!(
                    "  \"{}\" -> \"(no subscriber)\" [label=\"{label}\", style=dashed];\n",
                    escape(from)
                )),
            }
        }
        out.push_str("}\n");
        out
    }
}
