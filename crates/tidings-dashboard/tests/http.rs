//! The dashboard over HTTP, without a browser, on the memory transport: what each page
//! shows, that changes do what they say and are audited, and that what is unsafe is
//! refused (no credentials, a forged or cross-site form, markup in a payload).

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::{namespace, Shop};
use tidings_dashboard::{Action, Auth};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("served");
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| l.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        location,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, path: &str) -> Reply {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, path: &str, fields: &[(&str, &str)]) -> Reply {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

/// The form token, read off a page like a browser would.
fn token(page: &str) -> String {
    let at = page
        .find("name=\"token\" value=\"")
        .expect("a form with a token")
        + 20;
    page[at..at + 32].to_string()
}

/// The link of the only subscription on the overview.
fn subscription_link(overview: &str) -> String {
    let at = overview
        .find("href=\"/subscriptions/")
        .expect("a subscription link")
        + 6;
    let end = overview[at..].find('"').unwrap();
    overview[at..at + end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_list_and_one_dead_letter_show_what_failed() {
    let ns = namespace();
    let shop = Shop::start(tidings_memory::Memory::new(), &ns).await;
    let failed = shop.place(1, "fail: no card").await;
    shop.place(2, "ok").await;
    shop.place(3, "fail <script>alert('x')</script>").await;
    shop.dead_letters(2).await;
    let app = shop.dashboard().router();

    let overview = get(&app, "/").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.body.contains(&format!("{ns}.orders")),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("shop.order-placed v1"));
    assert!(
        overview.body.contains(">2</a>"),
        "two dead letters: {}",
        overview.body
    );

    let link = subscription_link(&overview.body);
    let list = get(&app, &link).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(&failed.to_string()));
    assert!(list.body.contains("cannot bill order 1: fail: no card"));
    assert!(
        !list.body.contains("<script>alert"),
        "markup in a reason is escaped"
    );
    assert!(list.body.contains("&lt;script&gt;alert"));

    let filtered = get(&app, &format!("{link}?reason=no+card")).await;
    assert!(filtered.body.contains(&failed.to_string()));
    assert!(
        !filtered.body.contains("&lt;script&gt;"),
        "the filter hides the other"
    );

    let one = get(&app, &format!("{link}/letters/{failed}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(
        one.body
            .contains("&quot;note&quot;: &quot;fail: no card&quot;"),
        "{}",
        one.body
    );
    assert!(one.body.contains("ce_type"), "the attributes are listed");
    let gone = get(&app, &format!("{link}/letters/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/subscriptions/nope").await.status,
        StatusCode::NOT_FOUND
    );

    let flow = get(&app, "/flow").await;
    assert!(flow.body.contains("shop.order-placed v1"));
    let picture = get(&app, "/flow.svg").await;
    assert_eq!(picture.status, StatusCode::OK);
    assert!(picture.body.contains("<svg"));
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_payload_is_checked_then_replayed_and_audited() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    let failed = shop.place(7, "fail: typo").await;
    shop.dead_letters(1).await;
    let app = shop.dashboard().router();
    let link = subscription_link(&get(&app, "/").await.body);
    let page = get(&app, &format!("{link}/letters/{failed}")).await.body;
    let replay = format!("{link}/letters/{failed}/replay");

    let forged = post(&app, &replay, &[("token", "0123"), ("payload", "{}")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let token = token(&page);
    let not_json = post(
        &app,
        &replay,
        &[("token", &token), ("payload", "{order: 7")],
    )
    .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_json.body.contains("not JSON"));
    let wrong = r#"{"order": "seven", "note": "fixed"}"#;
    let invalid = post(&app, &replay, &[("token", &token), ("payload", wrong)]).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        invalid.body.contains("/order"),
        "the problem names the field: {}",
        invalid.body
    );
    assert!(
        invalid.body.contains("seven"),
        "the edit is kept in the form"
    );
    assert_eq!(
        shop.dead_letters(1).await[0].envelope.id,
        failed,
        "nothing was replayed"
    );
    assert!(shop.audit.lock().unwrap().is_empty());

    let fixed = r#"{"order": 7, "note": "fixed"}"#;
    let done = post(
        &app,
        &replay,
        &[("token", &token), ("payload", fixed), ("id_choice", "new")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(done.location.unwrap().contains("done="));
    let handled = shop.handled_when(|h| !h.is_empty()).await;
    assert_eq!(handled[0].0.note, "fixed");
    assert_ne!(handled[0].1, failed, "a new id, as chosen");
    shop.dead_letters(0).await;
    let audit = shop.audit.lock().unwrap().clone();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].action,
        Action::ReplayEdited {
            original: failed,
            sent_as: handled[0].1
        }
    );
    assert_eq!(audit[0].who, "anonymous");
    let again = post(&app, &replay, &[("token", &token), ("payload", fixed)]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "replayed already");
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_asks_first_then_deletes_what_it_listed() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    let a = shop.place(1, "fail a").await;
    let b = shop.place(2, "fail b").await;
    shop.dead_letters(2).await;
    let app = shop.dashboard().router();
    let link = subscription_link(&get(&app, "/").await.body);
    let token = token(&get(&app, &link).await.body);
    let purge = format!("{link}/purge");

    let ask = post(&app, &purge, &[("token", &token), ("id", &a.to_string())]).await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.body.contains("Purge dead letters?"));
    assert_eq!(
        shop.dead_letters(2).await.len(),
        2,
        "asking deletes nothing"
    );
    let bad = post(&app, &purge, &[("token", &token), ("id", "not-an-id")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let confirmed = [
        ("token", token.as_str()),
        ("confirm", "yes"),
        ("id", &a.to_string()),
    ];
    assert_eq!(
        post(&app, &purge, &confirmed).await.status,
        StatusCode::SEE_OTHER
    );
    let left = shop.dead_letters(1).await;
    assert_eq!(left[0].envelope.id, b);

    // The bug is fixed: what is replayed now goes through.
    shop.billing
        .fixed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let replay_all = post(
        &app,
        &format!("{link}/replay"),
        &[("token", &token), ("all", "1")],
    )
    .await;
    assert_eq!(replay_all.status, StatusCode::SEE_OTHER);
    shop.dead_letters(0).await;
    let handled = shop.handled_when(|h| !h.is_empty()).await;
    assert_eq!(handled[0].1, b, "the replayed one was handled");
    let actions: Vec<Action> = shop
        .audit
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.action.clone())
        .collect();
    assert_eq!(
        actions,
        vec![
            Action::Purge {
                ids: vec![a],
                purged: 1
            },
            Action::Replay {
                ids: vec![],
                all: true,
                replayed: 1
            },
        ]
    );
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_cross_site_requests_are_refused() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    let failed = shop.place(1, "fail").await;
    shop.dead_letters(1).await;
    let app = shop.dashboard().auth(Auth::token("s3cret")).router();

    let anonymous = get(&app, "/").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong = Request::get("/")
        .header(header::AUTHORIZATION, "Bearer guess")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.status, StatusCode::UNAUTHORIZED);
    let right = Request::get("/")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let overview = send(&app, right).await;
    assert_eq!(overview.status, StatusCode::OK);

    let link = subscription_link(&overview.body);
    let page = Request::get(link.clone())
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let token = token(&send(&app, page).await.body);
    let body = format!("token={token}&all=1");
    let cross_site = Request::post(format!("{link}/replay"))
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&app, cross_site).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        shop.dead_letters(1).await[0].envelope.id,
        failed,
        "nothing was replayed"
    );
    assert!(shop.audit.lock().unwrap().is_empty());
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_work_where_a_service_nests_it() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    shop.place(1, "fail").await;
    shop.dead_letters(1).await;
    let app = Router::new().nest("/ops/dead-letters", shop.dashboard().router());
    let overview = get(&app, "/ops/dead-letters").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview
            .body
            .contains("href=\"/ops/dead-letters/subscriptions/"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("href=\"/ops/dead-letters/flow\""));
    let flow = get(&app, "/ops/dead-letters/flow").await;
    assert!(
        flow.body.contains("src=\"/ops/dead-letters/flow.svg\""),
        "{}",
        flow.body
    );
    assert!(
        flow.body.contains("href=\"/ops/dead-letters\""),
        "the overview link"
    );
    assert_eq!(get(&app, "/ops/dead-letters").await.status, StatusCode::OK);
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_come_in_pages_of_fifty_and_filter_by_event() {
    let shop = Shop::start(tidings_memory::Memory::new(), &namespace()).await;
    for n in 0..55 {
        shop.place(n, "fail").await;
    }
    shop.dead_letters(55).await;
    let app = shop.dashboard().router();
    let link = subscription_link(&get(&app, "/").await.body);
    let rows = |page: &str| page.matches("name=\"id\" value=").count();

    let first = get(&app, &link).await.body;
    assert_eq!(rows(&first), 50);
    assert!(first.contains("page 1 of 2"));
    let second = get(&app, &format!("{link}?page=2")).await.body;
    assert_eq!(rows(&second), 5);
    assert!(second.contains("page 2 of 2"));
    let beyond = get(&app, &format!("{link}?page=9")).await.body;
    assert_eq!(rows(&beyond), 5, "a page past the end shows the last");

    let this_event = get(&app, &format!("{link}?event=shop.order-placed"))
        .await
        .body;
    assert_eq!(rows(&this_event), 50);
    let other = get(&app, &format!("{link}?event=shop.other")).await.body;
    assert_eq!(rows(&other), 0);
    assert!(other.contains("match the filter"));
    shop.bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_checked_dead_letter_says_where_its_payload_is() {
    let store = tempfile::tempdir().unwrap();
    let claim_check = tidings_core::ClaimCheck::local(store.path())
        .unwrap()
        .threshold(16);
    let shop = Shop::start_with(tidings_memory::Memory::new(), &namespace(), |b| {
        b.claim_check(claim_check)
    })
    .await;
    let failed = shop
        .place(1, "fail: too big for the broker, so claim-checked")
        .await;
    shop.dead_letters(1).await;
    let app = shop.dashboard().router();
    let link = subscription_link(&get(&app, "/").await.body);
    let one = get(&app, &format!("{link}/letters/{failed}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.body.contains("claim-check store at"), "{}", one.body);
    assert!(one.body.contains(&failed.to_string()));
    shop.bus.shutdown().await;
}
