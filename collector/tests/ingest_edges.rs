//! Ingest at its limits, request by request (no socket: the router is called
//! directly, with bodies that arrive when the test says): nothing of a body
//! is read before its token is checked, a host has one batch in flight, the
//! bytes in flight are bounded, and a body that stops arriving is refused.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{make_token, temp_store};

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use jiff::Timestamp;
use portwatch_collector::api::{router, AppState, IngestLimits};
use portwatch_fixtures as fixtures;
use portwatch_model::Role;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Bound for an answer that must come (not a timing assertion).
const ANSWER: Duration = Duration::from_secs(10);

struct Fixture {
    app: Router,
    dir: std::path::PathBuf,
    web: String,
    db: String,
    reader: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, limits: IngestLimits) -> Fixture {
    let (dir, store) = temp_store("edges", tag);
    let make = |name: &str, role: Role, host: Option<&str>| make_token(&store, name, role, host);
    let web = make("agent:web-3", Role::Agent, Some("web-3"));
    let db = make("agent:db-1", Role::Agent, Some("db-1"));
    let reader = make("ops", Role::Read, None);
    let app = router(AppState::new(store).ingest_limits(limits));
    Fixture {
        app,
        dir,
        web,
        db,
        reader,
    }
}

/// A heartbeat of `host`, as JSON, padded with whitespace to `bytes` at least.
fn heartbeat_body(host: &str, bytes: usize) -> Vec<u8> {
    let batch = fixtures::heartbeat(host, "s1", Timestamp::now());
    let mut json = serde_json::to_vec(&batch).unwrap();
    if json.len() < bytes {
        json.resize(bytes, b' ');
    }
    json
}

fn post(token: Option<&str>, body: Body) -> Request<Body> {
    let mut r = Request::post("/api/v1/ingest").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(body).unwrap()
}

/// A body whose chunks the test sends, which ends when the sender is
/// dropped; and a flag set once anything reads it.
fn fed_body() -> (mpsc::Sender<Bytes>, Body, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let read = Arc::new(AtomicBool::new(false));
    let flag = read.clone();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        flag.store(true, Ordering::SeqCst);
        async move { rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx)) }
    });
    (tx, Body::from_stream(stream), read)
}

async fn answer(app: &Router, request: Request<Body>) -> Response {
    tokio::time::timeout(ANSWER, app.clone().oneshot(request))
        .await
        .expect("an answer, not a wait for the body")
        .unwrap()
}

async fn json_of(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn metric(app: &Router, reader: &str, line_start: &str) -> String {
    let request = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .body(Body::empty())
        .unwrap();
    let bytes = axum::body::to_bytes(answer(app, request).await.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = portwatch_fixtures::without_collector_label(std::str::from_utf8(&bytes).unwrap());
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
        .to_owned()
}

/// Waits until `flag` is set (bounded: a hang, not a timing assertion).
async fn until_set(flag: &AtomicBool) {
    for _ in 0..1000 {
        if flag.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the body was never read");
}

#[tokio::test]
async fn an_upload_without_an_agent_token_is_refused_before_a_byte_of_its_body_is_read() {
    let f = fixture("unread", IngestLimits::default());
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-a-token"), StatusCode::UNAUTHORIZED),
        (Some(f.reader.as_str()), StatusCode::FORBIDDEN),
    ] {
        // A body that never ends: read, it would hold the request forever.
        let (tx, body, read) = fed_body();
        tx.send(Bytes::from(vec![b' '; 64 * 1024])).await.unwrap();
        let response = answer(&f.app, post(token, body)).await;
        assert_eq!(response.status(), status, "{token:?}");
        assert!(
            !read.load(Ordering::SeqCst),
            "{token:?}: the body was read before the token was checked"
        );
        drop(tx);
    }
    assert!(metric(
        &f.app,
        &f.reader,
        "portwatch_ingest_requests_total{outcome=\"refused\"}"
    )
    .await
    .ends_with(" 3"));
}

#[tokio::test]
async fn a_second_batch_from_a_host_with_one_in_flight_gets_503_with_retry_after_and_other_hosts_go_on() {
    let f = fixture("per-host", IngestLimits::default());
    let whole = heartbeat_body("web-3", 0);
    let (tx, body, read) = fed_body();
    tx.send(Bytes::copy_from_slice(&whole[..10])).await.unwrap();
    let first = tokio::spawn(f.app.clone().oneshot(post(Some(&f.web), body)));
    until_set(&read).await;

    let busy = answer(&f.app, post(Some(&f.web), Body::from(heartbeat_body("web-3", 0)))).await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()[header::RETRY_AFTER], "5");
    let message = json_of(busy).await["error"].as_str().unwrap().to_owned();
    assert!(message.contains("web-3") && message.contains("in flight"), "{message}");
    // Another host is not held up.
    let other = answer(&f.app, post(Some(&f.db), Body::from(heartbeat_body("db-1", 0)))).await;
    assert_eq!(other.status(), StatusCode::OK);

    tx.send(Bytes::copy_from_slice(&whole[10..])).await.unwrap();
    drop(tx);
    let first = tokio::time::timeout(ANSWER, first).await.unwrap().unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // Once committed, the host may send again.
    let again = answer(&f.app, post(Some(&f.web), Body::from(heartbeat_body("web-3", 0)))).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        metric(&f.app, &f.reader, "portwatch_ingest_requests_total{outcome=\"busy\"}")
            .await
            .ends_with(" 1")
    );
}

#[tokio::test]
async fn uploads_beyond_the_bytes_in_flight_get_503_and_the_bytes_are_given_back() {
    let limits = IngestLimits {
        max_bytes_in_flight: 64 * 1024,
        ..IngestLimits::default()
    };
    let f = fixture("budget", limits);
    // web-3 holds 48 KiB of the 64 while its body is slow to arrive.
    let (tx, body, read) = fed_body();
    tx.send(Bytes::from(vec![b' '; 48 * 1024])).await.unwrap();
    let slow = tokio::spawn(f.app.clone().oneshot(post(Some(&f.web), body)));
    until_set(&read).await;
    let mut held = String::new();
    for _ in 0..1000 {
        held = metric(&f.app, &f.reader, "portwatch_ingest_bytes_in_flight").await;
        if held.ends_with(&format!(" {}", 48 * 1024)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held.ends_with(&format!(" {}", 48 * 1024)), "{held}");

    let refused = answer(&f.app, post(Some(&f.db), Body::from(heartbeat_body("db-1", 32 * 1024)))).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let message = json_of(refused).await["error"].as_str().unwrap().to_owned();
    assert!(message.contains("max_bytes_in_flight"), "{message}");
    // A small batch still fits beside it.
    let small = answer(&f.app, post(Some(&f.db), Body::from(heartbeat_body("db-1", 0)))).await;
    assert_eq!(small.status(), StatusCode::OK);

    // web-3's body ends, not a batch: refused, and its bytes given back.
    drop(tx);
    let slow = tokio::time::timeout(ANSWER, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::BAD_REQUEST);
    assert!(metric(&f.app, &f.reader, "portwatch_ingest_bytes_in_flight")
        .await
        .ends_with(" 0"));
    let retried = answer(&f.app, post(Some(&f.db), Body::from(heartbeat_body("db-1", 32 * 1024)))).await;
    assert_eq!(retried.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_is_counted() {
    let limits = IngestLimits {
        body_timeout: Duration::from_millis(300),
        ..IngestLimits::default()
    };
    let f = fixture("stall", limits);
    let whole = heartbeat_body("web-3", 0);
    let (tx, body, _read) = fed_body();
    tx.send(Bytes::copy_from_slice(&whole[..20])).await.unwrap();
    let response = answer(&f.app, post(Some(&f.web), body)).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let message = json_of(response).await["error"].as_str().unwrap().to_owned();
    assert!(message.contains("body_timeout"), "{message}");
    drop(tx);
    assert!(metric(
        &f.app,
        &f.reader,
        "portwatch_ingest_requests_total{outcome=\"timeout\"}"
    )
    .await
    .ends_with(" 1"));
    // The host's slot was given back with the refusal.
    let again = answer(&f.app, post(Some(&f.web), Body::from(heartbeat_body("web-3", 0)))).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_gzip_body_counts_its_decompressed_bytes() {
    use std::io::Write;
    let limits = IngestLimits {
        max_bytes_in_flight: 64 * 1024,
        ..IngestLimits::default()
    };
    let f = fixture("gzip", limits);
    // 100 KiB of JSON, a few hundred bytes as sent: over the budget once decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&heartbeat_body("web-3", 100 * 1024)).unwrap();
    let body = gz.finish().unwrap();
    assert!(body.len() < 4096);
    let request = Request::post("/api/v1/ingest")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.web))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(body))
        .unwrap();
    let response = answer(&f.app, request).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
