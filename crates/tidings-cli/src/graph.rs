//! `tidings graph`: the flow of events between services ([`Flow`]), as a Mermaid
//! flowchart or Graphviz DOT.

use tidings_core::catalog::Flow;

use crate::workspace::Workspace;

fn flow(ws: &Workspace) -> Flow {
    Flow::new(&ws.catalogs, ws.services())
}

/// A Mermaid flowchart, left to right.
pub(crate) fn mermaid(ws: &Workspace) -> String {
    flow(ws).to_mermaid()
}

/// Graphviz DOT, left to right: `tidings graph --format dot | dot -Tsvg > flow.svg`.
pub(crate) fn dot(ws: &Workspace) -> String {
    let title = ws
        .manifest
        .as_ref()
        .and_then(|m| m.workspace.name.as_deref())
        .unwrap_or("tidings");
    flow(ws).to_dot(title)
}
