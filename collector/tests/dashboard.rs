//! The dashboard's page, sign-in and sessions through the router (no socket):
//! the headers every answer carries, the cookie, and every way a session is
//! refused; and the port history the port view reads.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::{answer, make_token, Fixture};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use jiff::Timestamp;
use portwatch_collector::api::{DashboardSettings, CSRF_HEADER, TOKEN_TRUST};
use portwatch_collector::lifecycle::cap::DEFAULT_MAX_OPEN;
use portwatch_collector::store::{Alerts, Tokens};
use portwatch_common::wire::Batch;
use portwatch_common::{Listener, Process, Proto};
use portwatch_fixtures::{ago, bare_facts, batch, listener, process, snapshot_with};
use portwatch_model::{Finding, Kind, Role};

const HOST: &str = "127.0.0.1:7878";
const ORIGIN: &str = "http://127.0.0.1:7878";

fn fixture_with(tag: &str, settings: DashboardSettings) -> Fixture {
    Fixture::with("dashboard", tag, |state| state.dashboard(settings))
}

fn fixture(tag: &str) -> Fixture {
    fixture_with(tag, DashboardSettings::default())
}

/// A request as the dashboard's page makes it: to the collector's own host,
/// with these extra headers.
fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: Option<serde_json::Value>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    match body {
        Some(body) => r
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
        None => r.body(Body::empty()).unwrap(),
    }
}

/// A signed-in session: its `Cookie` header value and CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(f: &Fixture, token: &str) -> Signed {
    let (status, headers, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/session",
            &[("origin", ORIGIN)],
            Some(serde_json::json!({ "token": token })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let pair = set.split(';').next().unwrap().to_owned();
    Signed {
        cookie: pair,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

/// A snapshot of `host`'s sshd (pid 812, no command line) on `ports`, observed `ago_secs` ago.
fn snapshot_batch(host: &str, ports: &[u16], ago_secs: i64) -> Batch {
    let sshd = Process {
        cmdline: None,
        exe: None,
        unit: None,
        ..process(812, "sshd")
    };
    let listeners = ports
        .iter()
        .map(|&p| Listener {
            processes: vec![sshd.clone()],
            ..listener(p)
        })
        .collect();
    batch(
        host,
        "s1",
        vec![snapshot_with(1, ago(ago_secs), bare_facts(), listeners)],
    )
}

async fn ingest(f: &Fixture, token: &str, batch: &Batch) {
    let r = Request::post("/api/v1/ingest")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(batch).unwrap()))
        .unwrap();
    let (status, _, body) = answer(&f.app, r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Open alerts on web-3, one per port (as the drift evaluation would open
/// them, and resolving any other): their ids.
fn open_alerts(f: &Fixture, ports: &[u16]) -> Vec<i64> {
    let findings: Vec<Finding> = ports
        .iter()
        .map(|port| Finding {
            message: format!("web-3: tcp/{port} on 0.0.0.0 is in no baseline"),
            proto: Some(Proto::Tcp),
            local_port: Some(*port),
            ..Finding::new(
                Kind::UnexpectedListener,
                "web-3",
                format!("unexpected-listener:tcp:0.0.0.0:{port}"),
            )
        })
        .collect();
    let events = f
        .store
        .sync_alerts(&["web-3".to_owned()], &findings, DEFAULT_MAX_OPEN, Timestamp::now())
        .unwrap();
    events.iter().map(|e| e.alert().id).collect()
}

fn assert_security_headers(headers: &HeaderMap, what: &str) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: {part} missing from {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
}

#[tokio::test]
async fn the_page_and_its_modules_are_served_from_the_binary_with_a_strict_policy() {
    let f = fixture("served");
    let (status, headers, body) = answer(&f.app, request("GET", "/", &[], None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(body
        .as_str()
        .unwrap()
        .contains(r#"<script type="module" src="/ui/js/main.js">"#));
    assert_security_headers(&headers, "/");
    for (path, kind) in [
        ("/ui/js/main.js", "text/javascript"),
        ("/ui/js/views/host.js", "text/javascript"),
        ("/ui/vendor/uplot/uPlot.esm.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/vendor/uplot/LICENSE", "text/plain"),
    ] {
        let (status, headers, _) = answer(&f.app, request("GET", path, &[], None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert_security_headers(&headers, path);
    }
    let (status, headers, body) = answer(&f.app, request("GET", "/ui/../Cargo.toml", &[], None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_security_headers(&headers, "a 404");
    // The API's answers carry them too.
    let (status, headers, _) = answer(&f.app, request("GET", "/api/v1/hosts", &[], None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_security_headers(&headers, "/api/v1/hosts");
}

#[tokio::test]
async fn a_disabled_dashboard_serves_no_page_and_signs_nobody_in() {
    let f = fixture_with(
        "disabled",
        DashboardSettings {
            enabled: false,
            ..DashboardSettings::default()
        },
    );
    assert_eq!(
        answer(&f.app, request("GET", "/", &[], None)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        answer(&f.app, request("GET", "/ui/js/main.js", &[], None)).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/session",
            &[("origin", ORIGIN)],
            Some(serde_json::json!({ "token": f.reader })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Bearer tokens work as ever.
    let bearer = format!("Bearer {}", f.reader);
    let (status, _, _) = answer(
        &f.app,
        request("GET", "/api/v1/hosts", &[("authorization", &bearer)], None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_read_token_signs_in_and_its_session_cookie_reads_the_api() {
    let f = fixture("signin");
    let (status, headers, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/session",
            &[("origin", ORIGIN)],
            Some(serde_json::json!({ "token": f.reader })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["role"].as_str()),
        (Some("ops"), Some("read"))
    );
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);
    assert_eq!(body["refresh_seconds"], 30, "how often the live views refresh");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    for part in [
        "portwatch_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(set.contains(part), "{part} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(
        !set.contains(&f.reader) && !body.to_string().contains(&f.reader),
        "the token is not echoed"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let cookie = set.split(';').next().unwrap();
    let (status, _, hosts) = answer(&f.app, request("GET", "/api/v1/hosts", &[("cookie", cookie)], None)).await;
    assert_eq!(status, StatusCode::OK, "{hosts}");
    let (status, _, session) = answer(&f.app, request("GET", "/api/v1/session", &[("cookie", cookie)], None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        session["csrf_token"], body["csrf_token"],
        "a reloaded page gets its CSRF token back"
    );
    // An admin token signs in as admin.
    let admin = sign_in(&f, &f.admin).await;
    let (_, _, session) = answer(
        &f.app,
        request("GET", "/api/v1/session", &[("cookie", &admin.cookie)], None),
    )
    .await;
    assert_eq!(session["role"], "admin");
}

#[tokio::test]
async fn under_tls_the_cookie_is_secure_host_prefixed_and_origins_are_https() {
    let f = fixture_with(
        "tls",
        DashboardSettings {
            secure_cookies: true,
            ..DashboardSettings::default()
        },
    );
    let (status, headers, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/session",
            &[("origin", "https://127.0.0.1:7878")],
            Some(serde_json::json!({ "token": f.admin })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with("__Host-portwatch_session=") && set.contains("Secure"),
        "{set}"
    );
    // The plain cookie name is not taken over TLS.
    let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
    let plain = format!("portwatch_session={value}");
    let (status, _, _) = answer(&f.app, request("GET", "/api/v1/hosts", &[("cookie", &plain)], None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/session",
            &[("origin", ORIGIN)],
            Some(serde_json::json!({ "token": f.admin })),
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an http:// origin of an https server: {body}"
    );
}

#[tokio::test]
async fn sign_in_refuses_agent_tokens_unknown_tokens_and_foreign_pages() {
    let f = fixture("signin-refusals");
    let sign = |token: &str, origin: &str| {
        request(
            "POST",
            "/api/v1/session",
            &[("origin", origin)],
            Some(serde_json::json!({ "token": token })),
        )
    };
    let (status, headers, body) = answer(&f.app, sign(&f.agent, ORIGIN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("agent tokens cannot sign in"),
        "{body}"
    );
    assert!(!headers.contains_key(header::SET_COOKIE));
    let (status, headers, body) = answer(&f.app, sign("pw_0000", ORIGIN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!headers.contains_key(header::SET_COOKIE));
    let (status, _, body) = answer(&f.app, sign("  ", ORIGIN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, headers, body) = answer(&f.app, sign(&f.reader, "http://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!headers.contains_key(header::SET_COOKIE));
    // The token goes in the body, not in the URL.
    let uri = format!("/api/v1/session?token={}", f.reader);
    let (status, _, _) = answer(&f.app, request("POST", &uri, &[("origin", ORIGIN)], None)).await;
    assert_ne!(status, StatusCode::OK);
    let revoked = make_token(&f.store, "gone", Role::Read, None);
    f.store.revoke_token("gone", Timestamp::now()).unwrap();
    let (status, _, body) = answer(&f.app, sign(&revoked, ORIGIN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_request_without_a_live_session_is_refused_with_401() {
    let f = fixture("no-session");
    let (status, _, body) = answer(&f.app, request("GET", "/api/v1/hosts", &[], None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("sign in"), "{body}");
    for cookie in [
        "portwatch_session=",
        "portwatch_session=0123",
        "other=1",
        &format!("portwatch_session={}", f.reader),
    ] {
        let (status, _, body) = answer(&f.app, request("GET", "/api/v1/hosts", &[("cookie", cookie)], None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cookie}: {body}");
    }
    let (status, _, _) = answer(&f.app, request("GET", "/api/v1/session", &[], None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let f = fixture_with(
        "expired",
        DashboardSettings {
            session_ttl: Duration::from_secs(1),
            ..DashboardSettings::default()
        },
    );
    let s = sign_in(&f, &f.reader).await;
    let hosts = || request("GET", "/api/v1/hosts", &[("cookie", &s.cookie)], None);
    assert_eq!(answer(&f.app, hosts()).await.0, StatusCode::OK);
    // Past its end (1 s), whatever the timing, it is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = answer(&f.app, hosts()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("session has ended"), "{body}");
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_collector() {
    let f = fixture("signout");
    let s = sign_in(&f, &f.reader).await;
    // Signing out is a change: without the CSRF token another site could do it.
    let (status, _, _) = answer(
        &f.app,
        request(
            "DELETE",
            "/api/v1/session",
            &[("cookie", &s.cookie), ("origin", ORIGIN)],
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, body) = answer(
        &f.app,
        request(
            "DELETE",
            "/api/v1/session",
            &[("cookie", &s.cookie), ("origin", ORIGIN), (CSRF_HEADER, &s.csrf)],
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    // The browser is told to drop the cookie; one that kept it is refused all the same.
    let (status, _, body) = answer(&f.app, request("GET", "/api/v1/hosts", &[("cookie", &s.cookie)], None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_revoked_token_ends_its_sessions() {
    let f = fixture("revoked");
    let token = make_token(&f.store, "alice", Role::Read, None);
    let s = sign_in(&f, &token).await;
    let hosts = || request("GET", "/api/v1/hosts", &[("cookie", &s.cookie)], None);
    assert_eq!(answer(&f.app, hosts()).await.0, StatusCode::OK);
    f.store.revoke_token("alice", Timestamp::now()).unwrap();
    // Refused within the token cache's bound, as a bearer request is.
    let deadline = std::time::Instant::now() + TOKEN_TRUST + Duration::from_secs(3);
    loop {
        let (status, _, _) = answer(&f.app, hosts()).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_read_session_cannot_acknowledge_or_change_baselines() {
    let f = fixture("read-admin");
    ingest(&f, &f.agent, &snapshot_batch("web-3", &[22], 60)).await;
    let id = open_alerts(&f, &[22])[0];
    let s = sign_in(&f, &f.reader).await;
    let headers = [
        ("cookie", s.cookie.as_str()),
        ("origin", ORIGIN),
        (CSRF_HEADER, s.csrf.as_str()),
    ];
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            &format!("/api/v1/alerts/{id}/ack"),
            &headers,
            Some(serde_json::json!({"comment": "mine"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
    let source = "name = \"web\"\nhosts = [\"web-*\"]\n";
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/baselines",
            &headers,
            Some(serde_json::json!({"source": source, "comment": "x"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = answer(&f.app, request("DELETE", "/api/v1/baselines/web", &headers, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(f.store.alerts(None, None, 10).unwrap()[0].state.as_str(), "open");
}

#[tokio::test]
async fn an_admin_session_changes_things_only_with_its_csrf_token_from_its_own_origin() {
    let f = fixture("csrf");
    ingest(&f, &f.agent, &snapshot_batch("web-3", &[22], 60)).await;
    let ids = open_alerts(&f, &[22, 2222]);
    let (id, second) = (ids[0], ids[1]);
    let admin = sign_in(&f, &f.admin).await;
    let other = sign_in(&f, &f.admin).await;
    let ack = |headers: &[(&str, &str)]| {
        request(
            "POST",
            &format!("/api/v1/alerts/{id}/ack"),
            headers,
            Some(serde_json::json!({"comment": "on it"})),
        )
    };
    let cookie = ("cookie", admin.cookie.as_str());
    for (what, headers) in [
        ("no CSRF token", vec![cookie, ("origin", ORIGIN)]),
        (
            "a wrong CSRF token",
            vec![cookie, ("origin", ORIGIN), (CSRF_HEADER, "0".repeat(64).leak())],
        ),
        (
            "another session's CSRF token",
            vec![cookie, ("origin", ORIGIN), (CSRF_HEADER, other.csrf.as_str())],
        ),
        ("no Origin", vec![cookie, (CSRF_HEADER, admin.csrf.as_str())]),
        (
            "a foreign Origin",
            vec![
                cookie,
                ("origin", "http://evil.example"),
                (CSRF_HEADER, admin.csrf.as_str()),
            ],
        ),
    ] {
        let (status, _, body) = answer(&f.app, ack(&headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        let alerts = f.store.alerts(None, None, 10).unwrap();
        assert!(alerts.iter().all(|a| a.state.as_str() == "open"), "{what}");
    }
    let (status, _, body) = answer(&f.app, ack(&[cookie, ("origin", ORIGIN), (CSRF_HEADER, &admin.csrf)])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["acked_by"].as_str()),
        (Some("acknowledged"), Some("root"))
    );
    // A baseline, applied and removed through the session.
    let headers = [cookie, ("origin", ORIGIN), (CSRF_HEADER, admin.csrf.as_str())];
    let source = "name = \"web\"\nhosts = [\"web-*\"]\n";
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            "/api/v1/baselines",
            &headers,
            Some(serde_json::json!({"source": source, "comment": "from the dashboard"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = answer(&f.app, request("DELETE", "/api/v1/baselines/web", &headers[..2], None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token: {body}");
    let (status, _, body) = answer(&f.app, request("DELETE", "/api/v1/baselines/web", &headers, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A bearer token needs no CSRF token: no browser sends one by itself.
    let bearer = format!("Bearer {}", f.admin);
    let (status, _, body) = answer(
        &f.app,
        request(
            "POST",
            &format!("/api/v1/alerts/{second}/ack"),
            &[("authorization", &bearer)],
            Some(serde_json::json!({"comment": "from the CLI"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_ports_history_covers_every_host_and_is_bounded() {
    let f = fixture("port-history");
    let db = make_token(&f.store, "agent:db-1", Role::Agent, Some("db-1"));
    ingest(&f, &f.agent, &snapshot_batch("web-3", &[22, 80], 600)).await;
    ingest(&f, &db, &snapshot_batch("db-1", &[22, 5432], 300)).await;
    let bearer = format!("Bearer {}", f.reader);
    let get = |uri: &str| request("GET", uri, &[("authorization", bearer.as_str())], None);
    let (status, headers, body) = answer(&f.app, get("/api/v1/ports/22/history")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body.as_array().unwrap();
    let hosts: Vec<&str> = rows.iter().map(|r| r["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["web-3", "db-1"], "oldest first");
    assert!(rows.iter().all(|r| r["local_port"] == 22 && r["closed_at"].is_null()));
    assert_eq!(headers["x-total-count"], "2");
    let (_, headers, body) = answer(&f.app, get("/api/v1/ports/22/history?limit=1")).await;
    assert_eq!(body.as_array().unwrap()[0]["host"], "db-1", "the latest when cut");
    assert_eq!(headers["x-total-count"], "2");
    let (_, _, body) = answer(&f.app, get("/api/v1/ports/22/history?proto=udp")).await;
    assert_eq!(body, serde_json::json!([]));
    let until = Timestamp::now() - jiff::SignedDuration::from_secs(450);
    let (_, _, body) = answer(&f.app, get(&format!("/api/v1/ports/22/history?until={until}"))).await;
    assert_eq!(body.as_array().unwrap().len(), 1, "db-1 opened it after until: {body}");
    for bad in [
        "/api/v1/ports/22/history?limit=0",
        "/api/v1/ports/22/history?proto=sctp",
        "/api/v1/ports/70000/history",
        "/api/v1/ports/22/history?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
    ] {
        let (status, _, body) = answer(&f.app, get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let agent = format!("Bearer {}", f.agent);
    let (status, _, _) = answer(
        &f.app,
        request("GET", "/api/v1/ports/22/history", &[("authorization", &agent)], None),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
