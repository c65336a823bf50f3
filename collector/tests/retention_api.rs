//! Retention over HTTP, on a real SQLite store through the router (no
//! socket): forgetting a host (admin only, each refusal tested), and
//! questions about moments before the kept history.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use jiff::{SignedDuration, Timestamp};
use portwatch_collector::api::KEPT_SINCE_HEADER;
use portwatch_collector::retention::Retention;
use portwatch_collector::store::{HistoryReads, HistoryWrites, Tokens};
use portwatch_fixtures::{ago, bare_facts, batch, listener, snapshot_with};
use support::{answer, Fixture};

/// A store with web-3 reporting ssh (since an hour ago), and a router that keeps 30 days of history.
fn fixture(tag: &str) -> Fixture {
    let month = Retention {
        history: Some(Duration::from_secs(30 * 86_400)),
        ..Retention::default()
    };
    let f = Fixture::with("retention-api", tag, |state| state.retention(month));
    let ssh = snapshot_with(1, ago(3600), bare_facts(), vec![listener(22)]);
    f.store
        .ingest(&batch("web-3", "s1", vec![ssh]), Timestamp::now())
        .unwrap();
    f
}

/// The answer to `method` `uri`, with `token` as a bearer token if any: status, headers, JSON body.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    answer(app, r.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn only_an_admin_forgets_a_host_and_then_it_is_a_404_everywhere() {
    let f = fixture("forget");
    let uri = "/api/v1/hosts/web-3";
    let (status, _, answer) = call(&f.app, "DELETE", uri, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _, answer) = call(&f.app, "DELETE", uri, Some(&f.reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a read token: {answer}");
    let (status, _, answer) = call(&f.app, "DELETE", uri, Some(&f.agent)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the host's own agent token: {answer}");
    assert!(
        f.store.host("web-3", Timestamp::now()).unwrap().is_some(),
        "refused: nothing forgotten"
    );
    let (status, _, answer) = call(&f.app, "DELETE", "/api/v1/hosts/web-33", Some(&f.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no host \"web-33\""),
        "{answer}"
    );
    let (status, _, answer) = call(&f.app, "DELETE", uri, Some(&f.admin)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["host"], "web-3");
    assert_eq!(answer["forgotten"]["intervals"], 1);
    assert_eq!(answer["forgotten"]["tokens"], 1);
    for path in ["/api/v1/hosts/web-3/listeners", "/api/v1/hosts/web-3/history"] {
        let (status, _, answer) = call(&f.app, "GET", path, Some(&f.reader)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    let (_, _, who) = call(&f.app, "GET", "/api/v1/who?port=22", Some(&f.reader)).await;
    assert_eq!(who, serde_json::json!([]));
    let (status, _, _) = call(&f.app, "DELETE", uri, Some(&f.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "forgotten already");
    let names: Vec<String> = f.store.tokens().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["ops", "root"], "its agent token went with it");
}

#[tokio::test]
async fn a_moment_before_the_kept_history_is_a_410_that_says_so_not_an_empty_answer() {
    let f = fixture("before");
    let ago = |days: i64| {
        Timestamp::now()
            .checked_sub(SignedDuration::from_hours(24 * days))
            .unwrap()
    };
    let (old, recent) = (ago(31), ago(29));
    for uri in [
        format!("/api/v1/hosts/web-3/listeners?at={old}"),
        format!("/api/v1/who?port=22&at={old}"),
        format!("/api/v1/hosts/web-3/diff?from={old}"),
        format!("/api/v1/hosts/web-3/diff?from={recent}&to={old}"),
        format!("/api/v1/hosts/web-3/diff?vs_host=web-3&at={old}"),
    ] {
        let (status, _, answer) = call(&f.app, "GET", &uri, Some(&f.reader)).await;
        assert_eq!(status, StatusCode::GONE, "{uri}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains("before the kept history") && message.contains("[retention] history = 30days"),
            "{message}"
        );
    }
    // Within the window: answered, empty or not.
    let (status, _, answer) = call(
        &f.app,
        "GET",
        &format!("/api/v1/hosts/web-3/listeners?at={recent}"),
        Some(&f.reader),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, serde_json::json!([])));
    let (status, _, answer) = call(&f.app, "GET", "/api/v1/who?port=22", Some(&f.reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer.as_array().unwrap().len(), 1);
    // A history window reaching before it is answered, with the start of what is kept.
    for uri in [
        format!("/api/v1/hosts/web-3/history?since={old}"),
        "/api/v1/hosts/web-3/history".to_owned(),
    ] {
        let (status, headers, answer) = call(&f.app, "GET", &uri, Some(&f.reader)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(answer.as_array().unwrap().len(), 1);
        let kept: Timestamp = headers[KEPT_SINCE_HEADER].to_str().unwrap().parse().unwrap();
        assert!(kept > old && kept < recent, "{kept}");
    }
    let (_, headers, _) = call(
        &f.app,
        "GET",
        &format!("/api/v1/hosts/web-3/history?since={recent}"),
        Some(&f.reader),
    )
    .await;
    assert!(
        headers.get(KEPT_SINCE_HEADER).is_none(),
        "a window inside the kept history has no such header"
    );
}
