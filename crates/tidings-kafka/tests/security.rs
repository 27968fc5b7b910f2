//! SASL/SCRAM against a real broker: a private tansu (SQLite storage) with
//! `--authentication`, a user created before authentication was switched on. Runs when
//! `TIDINGS_KAFKA_BROKERS` is set and a tansu with the `libsql` engine is installed;
//! prints why and passes otherwise.
//!
//! TLS is not exercised against tansu: tansu 0.6's `broker` command declares `--cert` and
//! `--key` in one exclusive argument group, so its TLS listener cannot be switched on.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{brokers, eventually, namespace, Lending, Note, PrivateTansu};
use tidings_core::{Bus, Context, ErrorKind, HandlerError, Subscription};
use tidings_kafka::{Kafka, KafkaConfig, SaslMechanism};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_are_passed_through_and_a_wrong_password_stays_secret() {
    if brokers("scram_credentials_are_passed_through_and_a_wrong_password_stays_secret").is_none() {
        return;
    }
    let Some(mut tansu) = PrivateTansu::new() else {
        println!("skipped: the SASL test needs a tansu with the libsql engine (cargo install tansu --locked --features dynostore,libsql, or TANSU_BIN)");
        return;
    };
    // Create the user while the broker accepts anyone, then require authentication.
    tansu.start(&[]);
    let url = format!("tcp://{}", tansu.address());
    let out = tansu.command(&[
        "user",
        "create",
        "alice",
        "correct-horse",
        "--broker",
        &url,
        "--mechanism",
        "scram256",
    ]);
    assert!(
        out.status.success(),
        "creating the user failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tansu.stop();
    tansu.start(&["--authentication"]);
    let address = tansu.address();

    let secure = |password: &str| {
        KafkaConfig::new(&address)
            .partitions(1)
            .request_timeout(Duration::from_secs(5))
            .message_timeout(Duration::from_secs(5))
            .sasl(SaslMechanism::ScramSha256, "alice", password)
    };
    let ns = namespace("sasl");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let catalog = Bus::builder("catalog")
        .transport(Kafka::new(secure("correct-horse")).unwrap())
        .namespace(&ns)
        .subscribe(
            Subscription::to::<Lending>().on(move |e: Note, _cx: Context| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(e.n);
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .build()
        .await
        .unwrap();
    let lending = Bus::builder("lending")
        .transport(Kafka::new(secure("correct-horse")).unwrap())
        .namespace(&ns)
        .publishes::<Lending>()
        .build()
        .await
        .unwrap();
    lending.publish(Note { n: 1 }).await.unwrap();
    eventually("the note over SASL/SCRAM", Duration::from_secs(60), || {
        seen.lock().unwrap().contains(&1)
    })
    .await;

    // A wrong password: the publish fails, and the password is nowhere in the error.
    let intruder = Kafka::new(secure("wrong-battery-staple")).unwrap();
    let env = tidings_core::Envelope::new("kt.note", 1, "lending", "application/json", &b"{}"[..]);
    let err =
        tidings_core::transport::Transport::publish(&intruder, &format!("{ns}.lending"), vec![env])
            .await
            .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::Unavailable),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-battery-staple"), "{err}");
    assert!(
        !format!("{err:?}").contains("wrong-battery-staple"),
        "{err:?}"
    );
    assert!(!format!("{intruder:?}").contains("wrong-battery-staple"));

    catalog.shutdown().await;
    lending.shutdown().await;
}
