//! The `servicebus-dev-server` binary as a person runs it: it starts, says where it
//! listens, and answers the REST protocol there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tidings_servicebus_server::sas;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_on_the_port_it_prints() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_servicebus-dev-server"))
            .args([
                "--port",
                "0",
                "--namespace",
                "dev",
                "--key-name",
                "RootManageSharedAccessKey",
                "--key",
                "devkey",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start servicebus-dev-server"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no endpoint in {line:?}"))
        .to_string();
    let token = sas::token(
        "https://dev.servicebus.windows.net/",
        "RootManageSharedAccessKey",
        "devkey",
        Duration::from_secs(60),
    );
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{endpoint}/lending?api-version=2017-04"))
        .header("authorization", token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let bad = client
        .put(format!("{endpoint}/lending?api-version=2017-04"))
        .header("authorization", token.replace("sig=", "sig=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    let usage = Command::new(env!("CARGO_BIN_EXE_servicebus-dev-server"))
        .env_remove("SERVICEBUS_DEV_KEY")
        .output()
        .unwrap();
    assert!(!usage.status.success(), "no key is an error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--key is required"));
}
