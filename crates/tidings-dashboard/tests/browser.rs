//! The dashboard in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/dashboard.mjs), against the dashboard mounted beside a bus on the memory
//! transport and on RabbitMQ. The browser opens the overview and a subscription with dead
//! letters made by a failing handler, opens one, edits its payload and replays it, then
//! purges another; the test checks that the handler received the edited event, what is
//! left, and the audit trail. A request without credentials is refused.
//!
//! Needs /usr/bin/chromium and `npm ci` in tests/browser (scripts/test installs both);
//! the RabbitMQ half needs TIDINGS_RABBITMQ_URL.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{namespace, Shop};
use tidings_dashboard::{Action, Auth};

fn browser_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/services/tooling.sh install does)"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/services/tooling.sh install does)",
        dir.display()
    );
    dir
}

async fn drive(shop: &Shop) {
    let dir = browser_dir();
    shop.place(1, "fail-edit").await;
    let purged = shop.place(2, "fail-purge").await;
    let kept = shop.place(3, "fail-keep").await;
    let edited = shop.dead_letters(3).await;
    let original = edited
        .iter()
        .find(|d| d.info.reason.contains("fail-edit"))
        .expect("the fail-edit dead letter")
        .envelope
        .id;

    let app = shop.dashboard().auth(Auth::basic("ops", "pw")).router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .args([&url, "ops", "pw"])
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser finished within 2 minutes")
        .expect("node runs");
    server.abort();
    assert!(
        output.status.success(),
        "the browser steps failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let handled = shop
        .handled_when(|h| h.iter().any(|(e, _)| e.note == "edited in the browser"))
        .await;
    let (event, id) = handled
        .iter()
        .find(|(e, _)| e.note == "edited in the browser")
        .unwrap();
    assert_eq!(event.order, 1);
    assert_ne!(
        *id, original,
        "replayed under a new id, as chosen in the form"
    );
    let left = shop.dead_letters(1).await;
    assert_eq!(left[0].envelope.id, kept);
    let audit = shop.audit.lock().unwrap().clone();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|e| e.who == "ops"));
    assert_eq!(
        audit[0].action,
        Action::ReplayEdited {
            original,
            sent_as: *id
        }
    );
    assert_eq!(
        audit[1].action,
        Action::Purge {
            ids: vec![purged],
            purged: 1
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_on_memory() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    drive(&shop).await;
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_on_rabbitmq() {
    let url = match std::env::var("TIDINGS_RABBITMQ_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("skipped: TIDINGS_RABBITMQ_URL is not set (scripts/test sets it)");
            return;
        }
    };
    let rabbitmq = tidings_rabbitmq::RabbitMq::from_url(&url).expect("a RabbitMQ URL");
    let shop = Shop::start(rabbitmq, &namespace()).await;
    drive(&shop).await;
    shop.bus.teardown().await.expect("torn down");
    shop.bus.shutdown().await;
}
