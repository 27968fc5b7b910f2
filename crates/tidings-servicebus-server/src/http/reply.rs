//! Response helpers: plain replies, protocol faults as XML error bodies, and Atom entries.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::Reply;
use crate::atom;
use crate::broker::Fault;

pub(super) fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub(super) fn fault(f: Fault) -> Reply {
    let body = format!(
        "<Error><Code>{}</Code><Detail>{}</Detail></Error>",
        f.0,
        crate::util::xml_escape(&f.1)
    );
    let mut r = reply(f.0, body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

pub(super) fn xml(status: u16, body: String) -> Reply {
    let mut r = reply(status, atom::document(&body));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/atom+xml;type=entry;charset=utf-8"),
    );
    r
}
