//! `tidings tail` until Ctrl-C: it removes its temporary subscription and exits 0 (the
//! local Service Bus server, and RabbitMQ from `TIDINGS_RABBITMQ_URL`).

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::brokers::*;
use tidings_core::transport::{DynTransport, SubscriptionSpec, TopicSpec, Topology};
use tidings_core::ErrorKind;

/// `tail` without `--count` or `--timeout` runs until Ctrl-C (SIGINT), then removes its
/// temporary subscription and exits 0.
#[cfg(unix)]
fn tail_until_ctrl_c(name: &str, url: &str, t: Arc<dyn DynTransport>) {
    use std::io::BufRead;
    let topic = fresh("cli-ctrlc");
    let bin = assert_cmd::cargo::cargo_bin("tidings");
    let mut child = std::process::Command::new(bin)
        .current_dir(std::env::temp_dir())
        .args([
            "tail",
            &topic,
            "--transport",
            url,
            "--event",
            "cli.thing-happened",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidings tail starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name}: tail said nothing within 60 s"));
    let temp = first
        .split('`')
        .find(|s| s.starts_with("tidings-tail-"))
        .unwrap_or_else(|| panic!("{name}: tail did not name its subscription: {first}"))
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: tail did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        status.success(),
        "{name}: tail ended with {status}: {rest:?}"
    );
    let rt = runtime();
    rt.block_on(async {
        let gone = SubscriptionSpec::new("tidings-tail", temp, &topic, Vec::new());
        let after = t.dead_letters_dyn(&gone, 1).await;
        assert!(
            matches!(&after, Err(e) if e.kind() == ErrorKind::NotFound),
            "{name}: the temporary subscription is left after Ctrl-C: {after:?}"
        );
        let mut topology = Topology::new("cli-ctrlc");
        topology.publishes.push(TopicSpec::new(&topic, Vec::new()));
        t.teardown_dyn(&topology).await.expect("teardown");
    });
}

#[cfg(unix)]
#[test]
fn tail_ends_on_ctrl_c() {
    let url = servicebus_url();
    let sb = tidings_servicebus::ServiceBus::from_url(url).unwrap();
    tail_until_ctrl_c("servicebus", url, Arc::new(sb));
    match std::env::var("TIDINGS_RABBITMQ_URL") {
        Ok(url) => tail_until_ctrl_c(
            "rabbitmq",
            &url,
            Arc::new(tidings_rabbitmq::RabbitMq::from_url(&url).unwrap()),
        ),
        Err(_) => println!("skipped on rabbitmq: TIDINGS_RABBITMQ_URL is not set"),
    }
}
