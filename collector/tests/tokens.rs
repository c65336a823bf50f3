//! Tokens through the HTTP API on a real SQLite store (no socket: the router
//! is called directly): a rotated token works through its overlap and is
//! refused after it, its replacement works at once, a revoked one is
//! refused, a host's token writes only that host, and the `Bearer` scheme
//! is read in any case.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::{call, Fixture};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jiff::{SignedDuration, Timestamp};
use portwatch_collector::api::{router, AppState, TOKEN_TRUST};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{HistoryReads, TokenRow, Tokens};
use portwatch_collector::token;
use portwatch_fixtures::{self as fixtures, ago, bare_facts, batch, snapshot_with};
use portwatch_model::Role;

fn fixture(tag: &str) -> Fixture {
    Fixture::new("tokens", tag)
}

/// Rotates `name` as `portwatch-collector token rotate` does: through another
/// connection to the file, the replaced tokens ending `overlap` from now.
fn rotate(f: &Fixture, name: &str, overlap: Duration) -> String {
    let secret = token::generate().unwrap();
    let now = Timestamp::now();
    let until = now + SignedDuration::try_from(overlap).unwrap();
    SqliteStore::open(&f.dir.join("collector.db"))
        .unwrap()
        .rotate_token(name, &token::hash(&secret), now, until)
        .unwrap()
        .unwrap();
    secret
}

/// A heartbeat of `host` (a batch without reports), as JSON.
fn heartbeat_body(host: &str) -> Vec<u8> {
    serde_json::to_vec(&fixtures::heartbeat(host, "s1", Timestamp::now())).unwrap()
}

/// An empty snapshot of `host`, observed a minute ago, as JSON.
fn snapshot_body(host: &str) -> Vec<u8> {
    let report = snapshot_with(1, ago(60), bare_facts(), vec![]);
    serde_json::to_vec(&batch(host, "s1", vec![report])).unwrap()
}

fn ingest(authorization: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/ingest")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, authorization)
        .body(Body::from(body))
        .unwrap()
}

fn hosts(authorization: &str) -> Request<Body> {
    Request::get("/api/v1/hosts")
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
        .unwrap()
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_works_through_its_overlap_and_is_refused_after_it() {
    let f = fixture("overlap");
    let old = f.agent.clone();
    // Cached before the rotation, as a running agent's token is.
    assert_eq!(
        call(&f.app, ingest(&bearer(&old), heartbeat_body("web-3"))).await.0,
        StatusCode::OK
    );
    let overlap = TOKEN_TRUST + Duration::from_secs(1);
    let rotated = Instant::now();
    let new = rotate(&f, "agent:web-3", overlap);

    let (status, answer) = call(&f.app, ingest(&bearer(&new), snapshot_body("web-3"))).await;
    assert_eq!(status, StatusCode::OK, "the new token works at once: {answer}");
    loop {
        let (status, answer) = call(&f.app, ingest(&bearer(&old), heartbeat_body("web-3"))).await;
        let at = rotated.elapsed();
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                at >= overlap - Duration::from_millis(100),
                "refused {at:?} into a {overlap:?} overlap"
            );
            let message = answer["error"].as_str().unwrap();
            assert!(
                message.contains("rotate") && message.contains("replacement"),
                "{answer}"
            );
            break;
        }
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(
            at < overlap + Duration::from_millis(500),
            "still accepted {at:?} after the rotation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Refused for good, cached or not; the new one goes on.
    for _ in 0..3 {
        assert_eq!(
            call(&f.app, ingest(&bearer(&old), heartbeat_body("web-3"))).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        call(&f.app, ingest(&bearer(&new), heartbeat_body("web-3"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_rotated_without_overlap_or_revoked_is_refused_and_its_replacement_is_not() {
    let f = fixture("no-overlap");
    // Not cached: refused at once.
    let new = rotate(&f, "agent:web-3", Duration::ZERO);
    let (status, answer) = call(&f.app, ingest(&bearer(&f.agent), heartbeat_body("web-3"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(
        call(&f.app, ingest(&bearer(&new), heartbeat_body("web-3"))).await.0,
        StatusCode::OK
    );

    // Revoking the name ends the replacement too (seen by a collector that has not cached it; a
    // cached one is refused within TOKEN_TRUST, see api.rs).
    assert!(f.store.revoke_token("agent:web-3", Timestamp::now()).unwrap());
    let app = router(AppState::new(f.store.clone()));
    let (status, answer) = call(&app, ingest(&bearer(&new), heartbeat_body("web-3"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("revoked"), "{answer}");
    // And the name may be given again.
    let again = token::generate().unwrap();
    f.store
        .create_token(&TokenRow {
            name: "agent:web-3".into(),
            role: Role::Agent,
            host: Some("web-3".into()),
            hash: token::hash(&again),
            created_at: Timestamp::now(),
            revoked_at: None,
        })
        .unwrap();
    assert_eq!(
        call(&app, ingest(&bearer(&again), heartbeat_body("web-3"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_rotated_agent_token_still_writes_only_its_own_host() {
    let f = fixture("own-host");
    let new = rotate(&f, "agent:web-3", Duration::from_secs(60));
    for secret in [&f.agent, &new] {
        let (status, answer) = call(&f.app, ingest(&bearer(secret), snapshot_body("db-1"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("\"web-3\", not \"db-1\""),
            "{answer}"
        );
    }
    assert!(f.store.host("db-1", Timestamp::now()).unwrap().is_none());
    // A rotated read token reads, and still cannot write.
    let reader = rotate(&f, "ops", Duration::from_secs(60));
    assert_eq!(call(&f.app, hosts(&bearer(&reader))).await.0, StatusCode::OK);
    assert_eq!(
        call(&f.app, ingest(&bearer(&reader), snapshot_body("web-3"))).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let f = fixture("scheme");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, answer) = call(&f.app, hosts(&format!("{scheme} {}", f.reader))).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {answer}");
        let (status, answer) = call(
            &f.app,
            ingest(&format!("{scheme} {}", f.agent), heartbeat_body("web-3")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {answer}");
    }
    for malformed in ["Basic abc", "Bearer", "Bearer   ", &f.reader] {
        let (status, answer) = call(&f.app, hosts(malformed)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{malformed:?}: {answer}");
    }
}
