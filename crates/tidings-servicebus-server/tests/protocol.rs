//! The server against the documented REST protocol: status codes, locks and their expiry,
//! MaxDeliveryCount, rules, batches and SAS checks, over real HTTP.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use tidings_servicebus_server::{sas, Rights, RunningServer, SasPolicy, Server, ServerConfig};

const BASE: &str = "https://dev.servicebus.windows.net/";

async fn server(lock: Duration, max_delivery: u32) -> RunningServer {
    let config = ServerConfig::new("dev", "root", "k3y")
        .policy(SasPolicy::new("app", "appkey", Rights::SEND_LISTEN))
        .lock_duration(lock)
        .max_delivery_count(max_delivery)
        .max_message_size(1024);
    Server::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn broker(&self) -> serde_json::Value {
        serde_json::from_str(self.header("brokerproperties").expect("BrokerProperties")).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The lock URI's path.
    fn lock_path(&self) -> String {
        self.header("location")
            .expect("Location")
            .trim_start_matches("https://dev.servicebus.windows.net")
            .to_string()
    }
}

async fn call_as(
    s: &RunningServer,
    auth: Option<String>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("{}{path}", s.endpoint()));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

fn root_token() -> String {
    sas::token(BASE, "root", "k3y", Duration::from_secs(300))
}

async fn call(
    s: &RunningServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    call_as(s, Some(root_token()), method, path, headers, body).await
}

const ENTRY: &str = r#"<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">{}</content></entry>"#;

fn rule_xml(filter: &str) -> String {
    ENTRY.replace(
        "{}",
        &format!(r#"<RuleDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{filter}<Action i:type="EmptyRuleAction"/></RuleDescription>"#),
    )
}

fn sql(expr: &str) -> String {
    rule_xml(&format!(
        r#"<Filter i:type="SqlFilter"><SqlExpression>{expr}</SqlExpression></Filter>"#
    ))
}

async fn topic_with_subscription(s: &RunningServer, topic: &str, sub: &str) {
    let topic_status = call(
        s,
        Method::PUT,
        &format!("/{topic}?api-version=2017-04"),
        &[],
        "",
    )
    .await
    .status;
    assert!(topic_status == 201 || topic_status == 409, "{topic_status}");
    assert_eq!(
        call(
            s,
            Method::PUT,
            &format!("/{topic}/subscriptions/{sub}?api-version=2017-04"),
            &[],
            ""
        )
        .await
        .status,
        201
    );
}

async fn peek(s: &RunningServer, path: &str) -> Reply {
    call(
        s,
        Method::POST,
        &format!("{path}/messages/head?timeout=0"),
        &[],
        "",
    )
    .await
}

#[tokio::test]
async fn management_creates_reads_conflicts_and_deletes_entities() {
    let s = server(Duration::from_secs(60), 10).await;
    let r = call(&s, Method::PUT, "/lending?api-version=2017-04", &[], "").await;
    assert_eq!(r.status, 201);
    assert!(r.text().contains("<TopicDescription"), "{}", r.text());
    assert_eq!(
        call(&s, Method::PUT, "/lending?api-version=2017-04", &[], "")
            .await
            .status,
        409
    );
    let r = call(&s, Method::GET, "/lending?api-version=2017-04", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<entry"));
    let missing = call(&s, Method::GET, "/nothing?api-version=2017-04", &[], "").await;
    assert_eq!(missing.status, 200);
    assert!(
        missing.text().contains("<feed") && !missing.text().contains("<entry"),
        "{}",
        missing.text()
    );

    let sub = ENTRY.replace("{}", r#"<SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><LockDuration>PT30S</LockDuration><MaxDeliveryCount>7</MaxDeliveryCount></SubscriptionDescription>"#);
    let r = call(
        &s,
        Method::PUT,
        "/lending/subscriptions/catalog?api-version=2017-04",
        &[],
        sub.clone(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(
        r.text().contains("<MaxDeliveryCount>7</MaxDeliveryCount>")
            && r.text().contains("<LockDuration>PT30S</LockDuration>"),
        "{}",
        r.text()
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/missing/subscriptions/catalog?api-version=2017-04",
            &[],
            sub
        )
        .await
        .status,
        404
    );

    let rules = call(
        &s,
        Method::GET,
        "/lending/subscriptions/catalog/rules?api-version=2017-04",
        &[],
        "",
    )
    .await;
    assert!(
        rules.text().contains("$Default") && rules.text().contains("TrueFilter"),
        "{}",
        rules.text()
    );
    let path = "/lending/subscriptions/catalog/rules/tidings?api-version=2017-04";
    assert_eq!(
        call(&s, Method::PUT, path, &[], sql("sys.Label IN ('a')"))
            .await
            .status,
        201
    );
    assert_eq!(
        call(&s, Method::PUT, path, &[], sql("sys.Label IN ('a')"))
            .await
            .status,
        409
    );
    let updated = call(
        &s,
        Method::PUT,
        path,
        &[("if-match", "*")],
        sql("sys.Label = 'b'"),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert!(
        updated.text().contains("sys.Label = &apos;b&apos;"),
        "{}",
        updated.text()
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            path,
            &[("if-match", "*")],
            sql("sys.Label IN (")
        )
        .await
        .status,
        400
    );
    let d = "/lending/subscriptions/catalog/rules/$Default?api-version=2017-04";
    assert_eq!(call(&s, Method::DELETE, d, &[], "").await.status, 200);
    assert_eq!(call(&s, Method::DELETE, d, &[], "").await.status, 404);
    assert_eq!(
        call(&s, Method::DELETE, "/lending?api-version=2017-04", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        call(&s, Method::DELETE, "/lending?api-version=2017-04", &[], "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn peek_lock_then_complete_with_the_lock_uri() {
    let s = server(Duration::from_secs(60), 10).await;
    topic_with_subscription(&s, "t", "s").await;
    let sent = call(
        &s,
        Method::POST,
        "/t/messages",
        &[
            (
                "brokerproperties",
                r#"{"MessageId":"m-1","Label":"a.x","CorrelationId":"c-1"}"#,
            ),
            ("content-type", "application/json"),
            ("tenant", "north"),
        ],
        "{\"n\":1}",
    )
    .await;
    assert_eq!(sent.status, 201);
    let r = peek(&s, "/t/subscriptions/s").await;
    assert_eq!(r.status, 201);
    let bp = r.broker();
    assert_eq!(bp["DeliveryCount"], 1);
    assert_eq!(bp["MessageId"], "m-1");
    assert_eq!(bp["Label"], "a.x");
    assert_eq!(bp["CorrelationId"], "c-1");
    assert!(bp["LockToken"].is_string() && bp["LockedUntilUtc"].is_string());
    assert_eq!(
        r.header("tenant"),
        Some("\"north\""),
        "custom string properties come back JSON-quoted"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), "{\"n\":1}");
    let lock = r.lock_path();
    assert!(lock.starts_with("/t/subscriptions/s/messages/"), "{lock}");
    // Locked: nothing else to take.
    assert_eq!(peek(&s, "/t/subscriptions/s").await.status, 204);
    assert_eq!(call(&s, Method::DELETE, &lock, &[], "").await.status, 200);
    assert_eq!(call(&s, Method::DELETE, &lock, &[], "").await.status, 404);
    assert_eq!(s.message_counts("t", "s"), Some((0, 0)));
}

#[tokio::test]
async fn rules_route_by_label_with_sql_and_correlation_filters() {
    let s = server(Duration::from_secs(60), 10).await;
    topic_with_subscription(&s, "t", "a").await;
    topic_with_subscription(&s, "t", "b").await;
    for (sub, body) in [
        ("a", sql("sys.Label IN ('x', 'z')")),
        (
            "b",
            rule_xml(r#"<Filter i:type="CorrelationFilter"><Label>y</Label></Filter>"#),
        ),
    ] {
        let path = format!("/t/subscriptions/{sub}/rules/only?api-version=2017-04");
        assert_eq!(call(&s, Method::PUT, &path, &[], body).await.status, 201);
        let path = format!("/t/subscriptions/{sub}/rules/$Default?api-version=2017-04");
        assert_eq!(call(&s, Method::DELETE, &path, &[], "").await.status, 200);
    }
    for label in ["x", "y", "w"] {
        let bp = format!(r#"{{"Label":"{label}"}}"#);
        assert_eq!(
            call(
                &s,
                Method::POST,
                "/t/messages",
                &[("brokerproperties", &bp)],
                label
            )
            .await
            .status,
            201
        );
    }
    assert_eq!(s.message_counts("t", "a"), Some((1, 0)));
    assert_eq!(s.message_counts("t", "b"), Some((1, 0)));
    assert_eq!(peek(&s, "/t/subscriptions/a").await.text(), "x");
    assert_eq!(peek(&s, "/t/subscriptions/b").await.text(), "y");
}

#[tokio::test]
async fn an_expired_lock_makes_the_message_available_again_with_a_higher_delivery_count() {
    let s = server(Duration::from_millis(500), 10).await;
    topic_with_subscription(&s, "t", "s").await;
    call(&s, Method::POST, "/t/messages", &[], "m").await;
    let first = peek(&s, "/t/subscriptions/s").await;
    assert_eq!(first.broker()["DeliveryCount"], 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = peek(&s, "/t/subscriptions/s").await;
    assert_eq!(second.status, 201);
    assert_eq!(second.broker()["DeliveryCount"], 2);
    assert_eq!(
        second.broker()["SequenceNumber"],
        first.broker()["SequenceNumber"]
    );
    // The first lock is gone: settling with it is a 404, and renewing it too.
    assert_eq!(
        call(&s, Method::DELETE, &first.lock_path(), &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        call(&s, Method::POST, &first.lock_path(), &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        call(&s, Method::DELETE, &second.lock_path(), &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn renewing_a_lock_keeps_the_message() {
    let s = server(Duration::from_secs(2), 10).await;
    topic_with_subscription(&s, "t", "s").await;
    call(&s, Method::POST, "/t/messages", &[], "m").await;
    let r = peek(&s, "/t/subscriptions/s").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            call(&s, Method::POST, &r.lock_path(), &[], "").await.status,
            200
        );
    }
    // Three seconds after the peek, past the lock duration, the renewed lock still holds.
    assert_eq!(peek(&s, "/t/subscriptions/s").await.status, 204);
    assert_eq!(
        call(&s, Method::DELETE, &r.lock_path(), &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unlocking_past_max_delivery_count_dead_letters_the_message() {
    let s = server(Duration::from_secs(60), 3).await;
    topic_with_subscription(&s, "t", "s").await;
    call(
        &s,
        Method::POST,
        "/t/messages",
        &[("brokerproperties", r#"{"MessageId":"poison"}"#)],
        "m",
    )
    .await;
    for n in 1..=3 {
        let r = peek(&s, "/t/subscriptions/s").await;
        assert_eq!(r.broker()["DeliveryCount"], n);
        assert_eq!(
            call(&s, Method::PUT, &r.lock_path(), &[], "").await.status,
            200
        );
    }
    assert_eq!(peek(&s, "/t/subscriptions/s").await.status, 204);
    let dead = peek(&s, "/t/subscriptions/s/$DeadLetterQueue").await;
    assert_eq!(dead.status, 201);
    assert_eq!(dead.broker()["MessageId"], "poison");
    assert_eq!(
        dead.header("deadletterreason"),
        Some("\"MaxDeliveryCountExceeded\"")
    );
    assert!(
        dead.lock_path().contains("/$DeadLetterQueue/messages/"),
        "{}",
        dead.lock_path()
    );
    assert_eq!(
        call(&s, Method::DELETE, &dead.lock_path(), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(s.message_counts("t", "s"), Some((0, 0)));
}

#[tokio::test]
async fn batches_keep_order_and_properties_and_receive_and_delete_removes() {
    let s = server(Duration::from_secs(60), 10).await;
    topic_with_subscription(&s, "t", "s").await;
    let batch = r#"[{"Body":"one","BrokerProperties":{"Label":"M1","TimeToLiveTimeSpan":"0.00:00:40"}},
        {"Body":"two","BrokerProperties":{"Label":"M2"},"UserProperties":{"Priority":"Low"}},
        {"Body":"three","UserProperties":{"Priority":"High","Customer":"12345,ABC"}}]"#;
    let r = call(
        &s,
        Method::POST,
        "/t/messages",
        &[("content-type", "application/vnd.microsoft.servicebus.json")],
        batch,
    )
    .await;
    assert_eq!(r.status, 201);
    let mut got = Vec::new();
    loop {
        let r = call(
            &s,
            Method::DELETE,
            "/t/subscriptions/s/messages/head?timeout=0",
            &[],
            "",
        )
        .await;
        if r.status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(r.header("location").is_none());
        got.push((r.text(), r.header("priority").map(str::to_string)));
    }
    assert_eq!(
        got,
        vec![
            ("one".to_string(), None),
            ("two".to_string(), Some("\"Low\"".to_string())),
            ("three".to_string(), Some("\"High\"".to_string()))
        ]
    );
    let bad = call(
        &s,
        Method::POST,
        "/t/messages",
        &[("content-type", "application/vnd.microsoft.servicebus.json")],
        "{",
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn scheduled_messages_wait_for_their_time_and_long_polls_wake_for_them() {
    let s = server(Duration::from_secs(60), 10).await;
    topic_with_subscription(&s, "t", "s").await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let bp = format!(r#"{{"ScheduledEnqueueTimeUtc":"{at}"}}"#);
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/t/messages",
            &[("brokerproperties", &bp)],
            "later"
        )
        .await
        .status,
        201
    );
    assert_eq!(peek(&s, "/t/subscriptions/s").await.status, 204);
    let r = call(
        &s,
        Method::POST,
        "/t/subscriptions/s/messages/head?timeout=10",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "later");
}

#[tokio::test]
async fn missing_entities_and_oversized_bodies_get_the_documented_codes() {
    let s = server(Duration::from_secs(60), 10).await;
    assert_eq!(
        call(&s, Method::POST, "/nope/messages", &[], "m")
            .await
            .status,
        410
    );
    topic_with_subscription(&s, "t", "s").await;
    assert_eq!(peek(&s, "/t/subscriptions/nope").await.status, 410);
    let lock = format!("/t/subscriptions/s/messages/1/{}", uuid::Uuid::new_v4());
    assert_eq!(call(&s, Method::PUT, &lock, &[], "").await.status, 404);
    assert_eq!(
        call(&s, Method::POST, "/t/messages", &[], vec![b'x'; 2048])
            .await
            .status,
        403
    );
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/t/messages",
            &[("brokerproperties", "{not json")],
            "m"
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn bad_expired_missing_or_underprivileged_signatures_get_401() {
    let s = server(Duration::from_secs(60), 10).await;
    let put =
        |auth: Option<String>| call_as(&s, auth, Method::PUT, "/t?api-version=2017-04", &[], "");
    assert_eq!(put(None).await.status, 401);
    assert_eq!(
        put(Some(sas::token(
            BASE,
            "root",
            "wrong",
            Duration::from_secs(60)
        )))
        .await
        .status,
        401
    );
    assert_eq!(
        put(Some(sas::token_with_expiry(BASE, "root", "k3y", 1_000_000)))
            .await
            .status,
        401
    );
    assert_eq!(
        put(Some(sas::token(
            BASE,
            "nobody",
            "k3y",
            Duration::from_secs(60)
        )))
        .await
        .status,
        401
    );
    let other_namespace = sas::token(
        "https://other.servicebus.windows.net/",
        "root",
        "k3y",
        Duration::from_secs(60),
    );
    assert_eq!(put(Some(other_namespace)).await.status, 401);
    let app = sas::token(BASE, "app", "appkey", Duration::from_secs(60));
    let refused = put(Some(app.clone())).await;
    assert_eq!(refused.status, 401);
    assert!(refused.text().contains("Manage"), "{}", refused.text());
    assert_eq!(put(Some(root_token())).await.status, 201);
    assert_eq!(put(Some(root_token())).await.status, 409);
    let sent = call_as(&s, Some(app), Method::POST, "/t/messages", &[], "m").await;
    assert_eq!(sent.status, 201);
}

#[tokio::test]
async fn expired_messages_go_to_the_dead_letter_subqueue_when_the_subscription_asks() {
    let s = server(Duration::from_secs(60), 10).await;
    topic_with_subscription(&s, "t", "plain").await;
    let sub = ENTRY.replace("{}", r#"<SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"><DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration></SubscriptionDescription>"#);
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/t/subscriptions/keeps?api-version=2017-04",
            &[],
            sub
        )
        .await
        .status,
        201
    );
    let sent = call(
        &s,
        Method::POST,
        "/t/messages",
        &[("brokerproperties", r#"{"TimeToLive":0.3}"#)],
        "short-lived",
    )
    .await;
    assert_eq!(sent.status, 201);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(peek(&s, "/t/subscriptions/plain").await.status, 204);
    assert_eq!(peek(&s, "/t/subscriptions/keeps").await.status, 204);
    assert_eq!(
        s.message_counts("t", "plain"),
        Some((0, 0)),
        "expired and dropped"
    );
    let dead = peek(&s, "/t/subscriptions/keeps/$DeadLetterQueue").await;
    assert_eq!(dead.status, 201);
    assert_eq!(
        dead.header("deadletterreason"),
        Some("\"TTLExpiredException\"")
    );
    assert_eq!(dead.text(), "short-lived");
}
