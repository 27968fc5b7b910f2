//! The flow of events between the services of the catalogs: a picture drawn here (no
//! Graphviz needed), and the same as a table.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use layout::backends::svg::SVGWriter;
use layout::gv::{DotParser, GraphBuilder};
use maud::html;
use tidings_core::catalog::Flow;

use super::{frame, Base};
use crate::State;

/// `GET /flow`.
pub(crate) async fn page(AxumState(state): AxumState<Arc<State>>, base: Base) -> Html<String> {
    let flow = Flow::new(&state.catalogs, []);
    let body = html! {
        h1 { "Flow of events" }
        @if flow.services.is_empty() {
            p.problem { "The catalogs name no services." }
        } @else {
            p { img src=(base.to("/flow.svg")) alt="services as boxes, arrows from publisher to subscriber labelled with the events"; }
            table {
                thead { tr { th { "From" } th { "To" } th { "Events" } } }
                tbody {
                    @for ((from, to), events) in &flow.edges {
                        tr {
                            td { (from) }
                            td { @if let Some(to) = to { (to) } @else { span.muted { "no subscriber" } } }
                            td { (events.join(", ")) }
                        }
                    }
                }
            }
        }
    };
    frame(&state, &base, "Flow", body)
}

/// `GET /flow.svg`: served as an image, so nothing in it runs as the page's script.
pub(crate) async fn picture(AxumState(state): AxumState<Arc<State>>) -> Response {
    let flow = Flow::new(&state.catalogs, []);
    match svg(&flow.to_dot(&state.title)) {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot draw the flow: {e}\n"),
        )
            .into_response(),
    }
}

/// DOT drawn as SVG.
fn svg(dot: &str) -> Result<String, String> {
    let mut parser = DotParser::new(dot);
    let graph = parser.process()?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_of_two_services_is_drawn() {
        let dot = "digraph \"t\" { rankdir=LR; \"a\"; \"b\"; \"a\" -> \"b\" [label=\"x.y v1\"]; }";
        let svg = svg(dot).expect("drawn");
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        assert!(svg.contains("x.y v1"), "the edge label is drawn: {svg}");
    }
}
