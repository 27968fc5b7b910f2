//! `tidings dashboard`: refuses to listen beyond loopback without credentials, and serves
//! the workspace's subscriptions from a real broker (RabbitMQ, `TIDINGS_RABBITMQ_URL`)
//! behind its token. The pages themselves are tested in the tidings-dashboard crate, in a
//! browser too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use common::*;

#[test]
fn beyond_loopback_it_needs_credentials() {
    let dir = library();
    let open = run(
        &dir,
        &[
            "dashboard",
            "--transport",
            "amqp://localhost",
            "--listen",
            "0.0.0.0:0",
        ],
    );
    assert_eq!(open.code, 2, "{open:?}");
    assert!(
        open.stderr.contains("pass --token or --basic-auth"),
        "{}",
        open.stderr
    );
    let malformed = run(
        &dir,
        &[
            "dashboard",
            "--transport",
            "amqp://localhost",
            "--basic-auth",
            "ops",
        ],
    );
    assert_eq!(malformed.code, 2);
    assert!(
        malformed.stderr.contains("`user:password`"),
        "{}",
        malformed.stderr
    );
    let memory = run(&dir, &["dashboard", "--transport", "memory://"]);
    assert_eq!(memory.code, 2);
    assert!(
        memory.stderr.contains("inside one process"),
        "{}",
        memory.stderr
    );
}

/// Kills the dashboard when the test ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` with an optional bearer token: the status line and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("the dashboard accepts connections");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply.lines().next().unwrap_or_default().to_string();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serves_the_workspace_subscriptions_from_rabbitmq() {
    let Ok(url) = std::env::var("TIDINGS_RABBITMQ_URL") else {
        println!("skipped: TIDINGS_RABBITMQ_URL is not set (scripts/test sets it)");
        return;
    };
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tidings"))
        .current_dir(library())
        .args([
            "dashboard",
            "--transport",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t0k",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidings dashboard starts");
    let mut serving = Serving(child);
    let stderr = serving.0.stderr.take().unwrap();
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first).unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the dashboard says where it is: {first}"))
        .to_string();

    let (refused, _) = get(&addr, "/", None);
    assert!(refused.contains("401"), "{refused}");
    let (status, body) = get(&addr, "/", Some("t0k"));
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("Library dashboard") || body.contains("dashboard"),
        "{body}"
    );
    assert!(
        body.contains("lending"),
        "the catalog's subscription to lending: {body}"
    );
    assert!(body.contains("lending.book-borrowed v1"));
    let (flow, svg) = get(&addr, "/flow.svg", Some("t0k"));
    assert!(flow.contains("200") && svg.contains("<svg"), "{flow}");
}
