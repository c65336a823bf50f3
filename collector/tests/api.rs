//! The HTTP API on a real SQLite store, request by request (no socket: the
//! router is called directly). Every refusal is tested, and that a refused
//! request stores nothing.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::time::{Duration, Instant};
use support::{call, Fixture};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use jiff::Timestamp;
use portwatch_collector::api::{router, AppState, MAX_BODY_BYTES, TOKEN_TRUST};
use portwatch_collector::lifecycle::cap::DEFAULT_MAX_OPEN;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{Alerts, Baselines, HistoryReads, HistoryWrites, Tokens};
use portwatch_common::wire::{Batch, HostFacts, ReportBody};
use portwatch_common::{Exposure, Listener, Process, Proto};
use portwatch_fixtures::{self as fixtures, ago, batch, facts, process, snapshot_with};
use portwatch_model::{Finding, Kind};
use tower::ServiceExt;

fn fixture(tag: &str) -> Fixture {
    Fixture::new("api", tag)
}

/// web-3's sshd (pid 812) on tcp/`port`.
fn sshd(port: u16) -> Listener {
    let sshd = Process {
        cmdline: Some("/usr/sbin/sshd -D".into()),
        unit: Some("ssh.service".into()),
        ..process(812, "sshd")
    };
    Listener {
        processes: vec![sshd],
        ..fixtures::listener(port)
    }
}

/// A snapshot of sshd on `ports` by `host`, observed an hour ago (within the collector's backlog window).
fn snapshot_batch(host: &str, ports: &[u16]) -> Batch {
    let facts = HostFacts {
        kernel: Some("6.1.0".into()),
        boot_time: None,
        tags: Default::default(),
        ..facts()
    };
    let listeners = ports.iter().map(|&p| sshd(p)).collect();
    batch(host, "s1", vec![snapshot_with(1, ago(3600), facts, listeners)])
}

fn post(token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut r = Request::post("/api/v1/ingest").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(body.into()).unwrap()
}

fn get(token: Option<&str>, uri: &str) -> Request<Body> {
    let mut r = Request::get(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

fn json_body(batch: &Batch) -> Vec<u8> {
    serde_json::to_vec(batch).unwrap()
}

fn open_on(f: &Fixture, host: &str) -> usize {
    f.store.listeners_at(host, Timestamp::now()).unwrap().len()
}

#[tokio::test]
async fn an_agent_stores_its_snapshot_and_a_reader_sees_it() {
    let f = fixture("ok");
    let batch = snapshot_batch("web-3", &[22, 80]);
    let (status, ack) = call(&f.app, post(Some(&f.agent), json_body(&batch))).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        ack,
        serde_json::json!({"acked": 1, "resync": false, "limits": {
            "max_body_bytes": 8 << 20, "max_decompressed_bytes": 32 << 20, "max_reports": 1000, "max_version": 3,
        }}),
        "the answer states the collector's limits"
    );

    let (status, rows) = call(&f.app, get(Some(&f.reader), "/api/v1/who?port=22")).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows[0]["host"], "web-3");
    assert_eq!(rows[0]["local_port"], 22);
    assert_eq!(rows[0]["processes"][0]["name"], "sshd");
    assert_eq!(rows[0]["opened_at"], batch.reports[0].observed_at.to_string());
    assert_eq!(rows[0]["closed_at"], serde_json::Value::Null);

    let (status, rows) = call(&f.app, get(Some(&f.admin), "/api/v1/hosts/web-3/listeners")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let (_, hosts) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await;
    assert_eq!(hosts[0]["host"], "web-3");
    assert_eq!(hosts[0]["listeners"], 2);
    assert_eq!(hosts[0]["status"], "up");
}

#[tokio::test]
async fn hosts_are_filtered_and_paged_by_the_collector_and_bad_filters_refused() {
    let f = fixture("hosts-page");
    for (host, env) in [
        ("web-1", "prod"),
        ("web-2", "staging"),
        ("web-3", "prod"),
        ("db-1", "prod"),
    ] {
        let mut tagged = facts();
        tagged.tags = [("env".to_owned(), env.to_owned())].into();
        let report = snapshot_with(1, ago(5), tagged, vec![sshd(22)]);
        f.store.ingest(&batch(host, "s", vec![report]), ago(5)).unwrap();
    }
    let names = |rows: &serde_json::Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["host"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, headers, rows) = support::answer(
        &f.app,
        get(Some(&f.reader), "/api/v1/hosts?name=web-*&tag=env=prod&status=up"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(names(&rows), ["web-1", "web-3"]);
    assert_eq!(headers["x-total-count"], "2");
    assert!(headers.get(header::LINK).is_none(), "one page");
    // A page at a time: the Link header gives the next page, the last has none.
    let (_, headers, rows) = support::answer(&f.app, get(Some(&f.reader), "/api/v1/hosts?limit=3")).await;
    assert_eq!(names(&rows), ["db-1", "web-1", "web-2"]);
    assert_eq!(headers["x-total-count"], "4");
    let link = headers[header::LINK].to_str().unwrap().to_owned();
    assert_eq!(link, "</api/v1/hosts?limit=3&after=web-2>; rel=\"next\"");
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let (_, headers, rows) = support::answer(&f.app, get(Some(&f.reader), next)).await;
    assert_eq!(names(&rows), ["web-3"]);
    assert!(headers.get(header::LINK).is_none(), "the last page");
    let (_, rows) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts?tag=env&name=*-1")).await;
    assert_eq!(names(&rows), ["db-1", "web-1"], "a tag with any value");
    // No filter: every host, as before.
    let (_, rows) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await;
    assert_eq!(names(&rows).len(), 4);
    for (query, says) in [
        ("tag==prod", "KEY=VALUE"),
        ("status=down", "up or silent"),
        ("limit=0", "1 to 100000"),
        ("limit=many", "limit"),
    ] {
        let (status, body) = call(&f.app, get(Some(&f.reader), &format!("/api/v1/hosts?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    let (status, _) = call(&f.app, get(Some(&f.agent), "/api/v1/hosts?name=web-*")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an agent reads nothing");
}

#[tokio::test]
async fn the_same_batch_twice_is_stored_once() {
    let f = fixture("dup");
    let body = json_body(&snapshot_batch("web-3", &[22]));
    for _ in 0..2 {
        let (status, ack) = call(&f.app, post(Some(&f.agent), body.clone())).await;
        assert_eq!((status, ack["acked"].as_u64()), (StatusCode::OK, Some(1)));
    }
    let history = f.store.history("web-3", None, None, None).unwrap();
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn a_gzip_body_is_accepted_and_a_corrupt_one_refused() {
    let f = fixture("gzip");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json_body(&snapshot_batch("web-3", &[22]))).unwrap();
    let compressed = gz.finish().unwrap();
    let mut request = post(Some(&f.agent), compressed.clone());
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let (status, ack) = call(&f.app, request).await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    let mut corrupt = compressed;
    corrupt.truncate(corrupt.len() / 2);
    corrupt.extend_from_slice(b"garbage");
    let mut request = post(Some(&f.agent), corrupt);
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
    let (status, body) = call(&f.app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("gzip"), "{body}");

    let mut request = post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22])));
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "zstd".parse().unwrap());
    let (status, body) = call(&f.app, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Content-Encoding: gzip"),
        "{body}"
    );
}

#[tokio::test]
async fn every_unauthenticated_request_is_refused_with_401() {
    let f = fixture("401");
    let body = json_body(&snapshot_batch("web-3", &[22]));
    let revoked = f.agent.clone();
    f.store.revoke_token("agent:web-3", Timestamp::now()).unwrap();
    for (request, needle) in [
        (post(None, body.clone()), "Authorization: Bearer"),
        (post(Some("pw_0000"), body.clone()), "unknown token"),
        (post(Some(&revoked), body.clone()), "revoked"),
        (get(None, "/api/v1/hosts"), "Authorization: Bearer"),
        (get(Some("nonsense"), "/api/v1/who?port=22"), "unknown token"),
    ] {
        let (status, answer) = call(&f.app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{answer}");
    }
    let mut malformed = get(None, "/api/v1/hosts");
    malformed
        .headers_mut()
        .insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
    assert_eq!(call(&f.app, malformed).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(open_on(&f, "web-3"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_revoked_by_another_process_is_refused_within_the_stated_bound() {
    let f = fixture("revoke-cached");
    let (status, _) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await;
    assert_eq!(status, StatusCode::OK);
    // Revoked through another connection to the file, as `portwatch-collector token revoke` does.
    SqliteStore::open(&f.dir.join("collector.db"))
        .unwrap()
        .revoke_token("ops", Timestamp::now())
        .unwrap();
    let revoked = Instant::now();
    // Asked again and again, as a busy client would: accepted at most TOKEN_TRUST after the
    // revocation (plus this loop's own step), then refused for good.
    loop {
        let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await;
        if status == StatusCode::UNAUTHORIZED {
            assert!(answer["error"].as_str().unwrap().contains("revoked"), "{answer}");
            break;
        }
        assert_eq!(status, StatusCode::OK, "{answer}");
        let late = revoked.elapsed();
        assert!(
            late < TOKEN_TRUST + Duration::from_millis(500),
            "still accepted {late:?} after revocation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        assert_eq!(
            call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The other tokens go on working.
    assert_eq!(
        call(&f.app, get(Some(&f.admin), "/api/v1/hosts")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_may_do_only_what_their_role_allows() {
    let f = fixture("403");
    // A read or admin token cannot write.
    for token in [&f.reader, &f.admin] {
        let (status, answer) = call(&f.app, post(Some(token), json_body(&snapshot_batch("web-3", &[22])))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("cannot send reports"),
            "{answer}"
        );
    }
    // An agent token writes only its own host.
    let (status, answer) = call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("db-1", &[5432]))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"web-3\", not \"db-1\""),
        "{answer}"
    );
    assert_eq!(open_on(&f, "db-1"), 0);
    // An agent token reads nothing.
    for uri in [
        "/api/v1/hosts",
        "/api/v1/who?port=22",
        "/api/v1/hosts/web-3/listeners",
        "/api/v1/hosts/web-3/history",
        "/api/v1/hosts/web-3/peers",
        "/api/v1/hosts/web-3/peers?port=22&since=2026-01-01T00:00:00Z",
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.agent), uri)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("agent tokens cannot read"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn malformed_and_invalid_batches_get_a_400_that_says_why_and_store_nothing() {
    let f = fixture("400");
    call(&f.app, post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22])))).await;
    let before = f.store.history("web-3", None, None, None).unwrap();
    let mut wrong_version = snapshot_batch("web-3", &[22, 443]);
    wrong_version.version = 99;
    let mut zero_seq = snapshot_batch("web-3", &[443]);
    zero_seq.reports[0].seq = 0;
    for (body, needle) in [
        (b"{not json".to_vec(), "not a valid report batch"),
        (b"{}".to_vec(), "missing field"),
        (json_body(&wrong_version), "protocol version 99"),
        (json_body(&zero_seq), "sequence numbers"),
    ] {
        let (status, answer) = call(&f.app, post(Some(&f.agent), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{needle}: {answer}");
    }
    assert_eq!(f.store.history("web-3", None, None, None).unwrap(), before);
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_stores_nothing() {
    let f = fixture("413");
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let mut request = post(Some(&f.agent), huge);
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).into());
    let (status, answer) = call(&f.app, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer["error"].as_str().unwrap().contains("8 MiB"), "{answer}");
    assert_eq!(open_on(&f, "web-3"), 0);
}

#[tokio::test]
async fn bad_query_parameters_say_what_to_write() {
    let f = fixture("query");
    for (uri, needle) in [
        ("/api/v1/who", "`port` is required"),
        ("/api/v1/who?port=22&proto=sctp", "use tcp or udp"),
        ("/api/v1/who?port=99999", "bad query"),
        ("/api/v1/who?port=22&at=yesterday", "RFC 3339"),
        ("/api/v1/hosts/web-3/history?since=03:00", "RFC 3339"),
        ("/api/v1/hosts/web-3/diff", "give `from`"),
        (
            "/api/v1/hosts/web-3/diff?from=2026-01-01T00:00:00Z&vs_host=web-4",
            "give `from`",
        ),
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{uri}: {answer}");
    }
    let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v2/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test]
async fn export_streams_every_interval_as_ndjson_or_csv() {
    let f = fixture("export");
    call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22, 80]))),
    )
    .await;
    let raw = |uri: &str, token: &str| {
        let app = f.app.clone();
        let request = get(Some(token), uri);
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    let (status, ndjson) = raw("/api/v1/export?format=ndjson", &f.reader).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["host"], "web-3");
    let (status, csv) = raw("/api/v1/export?format=csv&since=2026-01-01T00:00:00Z", &f.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.starts_with("host,proto,family,local_addr,local_port"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let (status, none) = raw("/api/v1/export?until=2020-01-01T00:00:00Z", &f.reader).await;
    assert_eq!((status, none.as_str()), (StatusCode::OK, ""));
    let (status, body) = raw("/api/v1/export?format=xml", &f.reader).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("csv or ndjson"), "{body}");
    let (status, _) = raw("/api/v1/export", &f.agent).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_export_of_one_host_or_one_port_holds_only_its_intervals_and_an_unknown_host_is_a_404() {
    let f = fixture("export-one");
    for (host, ports) in [("web-3", &[22, 80][..]), ("db-1", &[22, 5432][..])] {
        let report = snapshot_with(1, ago(5), facts(), ports.iter().map(|&p| sshd(p)).collect());
        f.store.ingest(&batch(host, "s", vec![report]), ago(5)).unwrap();
    }
    let lines = |body: String| -> Vec<(String, u64)> {
        body.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|r| {
                (
                    r["host"].as_str().unwrap().to_owned(),
                    r["local_port"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let raw = |uri: &str| {
        let (app, request) = (f.app.clone(), get(Some(&f.reader), uri));
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    let (status, body) = raw("/api/v1/export?host=db-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(lines(body), [("db-1".to_owned(), 22), ("db-1".to_owned(), 5432)]);
    let (_, body) = raw("/api/v1/export?port=22").await;
    let mut hosts: Vec<String> = lines(body)
        .into_iter()
        .map(|(h, p)| {
            assert_eq!(p, 22);
            h
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["db-1", "web-3"]);
    let (_, body) = raw("/api/v1/export?host=web-3&port=80&format=csv").await;
    assert_eq!(body.lines().count(), 2, "the header and web-3's tcp/80: {body}");
    assert!(body.lines().nth(1).unwrap().starts_with("web-3,tcp,"), "{body}");
    let (status, body) = raw("/api/v1/export?host=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no host"), "{body}");
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Option<serde_json::Value>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(b) => r
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => r.body(Body::empty()).unwrap(),
    }
}

const BASELINE: &str = "name = \"web\"\nhosts = [\"web-*\"]\n\n[[listener]]\nproto = \"tcp\"\nport = 22\n\
                        owner = \"team sre\"\nreason = \"ssh\"\n";

#[tokio::test]
async fn baselines_and_alerts_change_only_with_an_admin_token_and_read_only_with_a_reader() {
    let f = fixture("policy-roles");
    let apply = serde_json::json!({ "source": BASELINE, "comment": "inventory" });
    // Writes: no token 401; agent and read tokens 403.
    let writes = |token: Option<&str>| {
        vec![
            request("POST", "/api/v1/baselines", token, Some(apply.clone())),
            request("DELETE", "/api/v1/baselines/web?comment=x", token, None),
            request(
                "POST",
                "/api/v1/alerts/1/ack",
                token,
                Some(serde_json::json!({ "comment": "mine" })),
            ),
        ]
    };
    for r in writes(None) {
        assert_eq!(call(&f.app, r).await.0, StatusCode::UNAUTHORIZED);
    }
    for token in [&f.agent, &f.reader] {
        for r in writes(Some(token)) {
            let (status, answer) = call(&f.app, r).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
            assert!(answer["error"].as_str().unwrap().contains("admin token"), "{answer}");
        }
    }
    assert!(f.store.baselines().unwrap().is_empty());
    // Reads: an agent token reads nothing here either.
    for uri in [
        "/api/v1/baselines",
        "/api/v1/baseline-log",
        "/api/v1/baseline-proposal?hosts=web-*",
        "/api/v1/drift",
        "/api/v1/alerts",
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.agent), uri)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {answer}");
        assert_eq!(call(&f.app, get(None, uri)).await.0, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // The admin applies; the reader reads it, with who did it.
    let (status, answer) = call(
        &f.app,
        request("POST", "/api/v1/baselines", Some(&f.admin), Some(apply)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["action"], "create");
    let (status, log) = call(&f.app, get(Some(&f.reader), "/api/v1/baseline-log?name=web")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log[0]["actor"], "root");
    assert_eq!(log[0]["comment"], "inventory");
    let (_, list) = call(&f.app, get(Some(&f.reader), "/api/v1/baselines")).await;
    assert_eq!(list[0]["baseline"]["listeners"][0]["owner"], "team sre");
}

#[tokio::test]
async fn bad_baselines_and_acks_get_a_4xx_that_says_why_and_change_nothing() {
    let f = fixture("policy-400");
    let broken = BASELINE.replace("owner = \"team sre\"", "owner = \"\"");
    let huge = format!("{BASELINE}#{}\n", "x".repeat(2 * 1024 * 1024));
    for (body, needle) in [
        (serde_json::json!({ "source": broken }), "line 4"),
        (serde_json::json!({ "source": "name = " }), "TOML parse error"),
        (serde_json::json!({ "source": huge }), "at most"),
        (serde_json::json!({ "src": BASELINE }), "send JSON such as"),
    ] {
        let (status, answer) = call(&f.app, request("POST", "/api/v1/baselines", Some(&f.admin), Some(body))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{needle}: {answer}");
    }
    assert!(f.store.baselines().unwrap().is_empty());
    assert!(f.store.baseline_log(None).unwrap().is_empty());

    let (status, answer) = call(
        &f.app,
        request(
            "POST",
            "/api/v1/alerts/7/ack",
            Some(&f.admin),
            Some(serde_json::json!({ "comment": "x" })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = call(
        &f.app,
        request(
            "POST",
            "/api/v1/alerts/7/ack",
            Some(&f.admin),
            Some(serde_json::json!({ "comment": "  " })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("comment is empty"),
        "{answer}"
    );
    let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v1/alerts?state=closed")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = call(
        &f.app,
        request("DELETE", "/api/v1/baselines/nope", Some(&f.admin), None),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

/// The finding the drift evaluation makes of a listener no baseline entry expects.
fn unexpected_listener(host: &str, port: u16) -> Finding {
    Finding {
        message: format!("{host}: tcp/{port} on 0.0.0.0 is in no baseline"),
        proto: Some(Proto::Tcp),
        local_addr: Some("0.0.0.0".parse().unwrap()),
        local_port: Some(port),
        processes: Some("sshd[812]".into()),
        ..Finding::new(
            Kind::UnexpectedListener,
            host,
            format!("unexpected-listener:tcp:0.0.0.0:{port}"),
        )
    }
}

/// What Prometheus 2.42 sends as `Accept` when it scrapes.
const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                                 q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `/metrics` as a scraper sending `accept` (none if `None`) gets it: its content type and text.
async fn metrics_as(app: &Router, token: &str, accept: Option<&str>) -> (String, String) {
    let mut request = get(Some(token), "/metrics");
    if let Some(accept) = accept {
        request
            .headers_mut()
            .insert(header::ACCEPT, header::HeaderValue::from_str(accept).unwrap());
    }
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (content_type, portwatch_fixtures::without_collector_label(&text))
}

async fn metrics_text(app: &Router, token: &str) -> String {
    let response = app.clone().oneshot(get(Some(token), "/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    portwatch_fixtures::without_collector_label(std::str::from_utf8(&bytes).unwrap())
}

#[tokio::test]
async fn metrics_need_a_read_token_and_count_what_ingest_did() {
    let f = fixture("metrics");
    let mut web = snapshot_batch("web-3", &[22, 443]);
    web.dropped = 7;
    call(&f.app, post(Some(&f.agent), json_body(&web))).await;
    call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("db-1", &[5432]))),
    )
    .await;
    let events = f
        .store
        .sync_alerts(
            &["web-3".to_owned()],
            &[unexpected_listener("web-3", 443)],
            DEFAULT_MAX_OPEN,
            Timestamp::now(),
        )
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let alert_id = events[0].alert().id;
    assert_eq!(call(&f.app, get(None, "/metrics")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&f.app, get(Some(&f.agent), "/metrics")).await.0,
        StatusCode::FORBIDDEN
    );
    let (content_type, text) = metrics_as(&f.app, &f.reader, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "portwatch_ingest_requests_total{outcome=\"stored\"} 1",
        "portwatch_ingest_requests_total{outcome=\"refused\"} 1",
        "portwatch_ingest_reports_total 1",
        "portwatch_hosts{status=\"up\"} 1",
        "portwatch_listeners_open 2",
        "portwatch_agent_reports_dropped 7",
        "portwatch_alerts_active{kind=\"host-silent\",state=\"open\"} 0",
        "portwatch_alerts_active{kind=\"unexpected-listener\",state=\"open\"} 1",
        "portwatch_alerts_active{kind=\"unexpected-listener\",state=\"acknowledged\"} 0",
        "portwatch_baselines 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    // Acknowledged: it moves from one gauge to the other.
    f.store.ack_alert(alert_id, "root", "on it", Timestamp::now()).unwrap();
    let acked = metrics_text(&f.app, &f.reader).await;
    for line in [
        "portwatch_alerts_active{kind=\"unexpected-listener\",state=\"open\"} 0",
        "portwatch_alerts_active{kind=\"unexpected-listener\",state=\"acknowledged\"} 1",
    ] {
        assert!(acked.lines().any(|l| l == line), "{line} missing from:\n{acked}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Prometheus text (0.0.4) to a scraper that asks for it or states no preference: the same values,
    // every counter's HELP and TYPE under its `_total` name, no `# EOF`.
    for accept in [Some("text/plain;version=0.0.4"), None] {
        let (content_type, plain) = metrics_as(&f.app, &f.reader, accept).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        for line in [
            "portwatch_ingest_requests_total{outcome=\"stored\"} 1",
            "# TYPE portwatch_ingest_requests_total counter",
            "# HELP portwatch_ingest_reports_total Reports (snapshots and deltas) in stored batches; heartbeats carry none.",
            "portwatch_hosts{status=\"up\"} 1",
            "portwatch_ingest_duration_seconds_count 1",
            "portwatch_ingest_batches_queued 0",
        ] {
            assert!(plain.lines().any(|l| l == line), "{line} missing from:\n{plain}");
        }
        assert!(!plain.contains("# EOF"), "{plain}");
        let rss = plain
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap_or_else(|| panic!("no resident memory in {plain}"));
        assert!(rss.parse::<u64>().unwrap() > 1 << 20, "{rss}");
    }
    let size = text
        .lines()
        .find_map(|l| l.strip_prefix("portwatch_store_size_bytes "))
        .unwrap();
    assert!(size.parse::<u64>().unwrap() > 0);
    // Public when configured so.
    let public = router(AppState::new(f.store.clone()).metrics_public(true));
    assert_eq!(call(&public, get(None, "/metrics")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn trends_refuse_a_bad_window_and_answer_a_good_one() {
    let f = fixture("trends");
    call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22, 443]))),
    )
    .await;
    for (uri, needle) in [
        ("/api/v1/trends?bucket=minute", "use hour or day"),
        (
            "/api/v1/trends?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
            "must be before",
        ),
        ("/api/v1/trends?since=2020-01-01T00:00:00Z", "larger bucket"),
        ("/api/v1/trends?since=yesterday", "RFC 3339"),
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{uri}: {answer}");
    }
    assert_eq!(
        call(&f.app, get(Some(&f.agent), "/api/v1/trends")).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, t) = call(&f.app, get(Some(&f.reader), "/api/v1/trends?bucket=day")).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["open_listeners"].as_array().unwrap().len(), 8);
    let top: Vec<u64> = t["top_ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(top, vec![22, 443]);
}

#[tokio::test]
async fn a_host_never_heard_from_is_a_404_not_an_all_clear() {
    let f = fixture("unknown-host");
    call(&f.app, post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22])))).await;
    for uri in [
        "/api/v1/drift?host=typo",
        "/api/v1/trends?host=typo",
        "/api/v1/alerts?host=typo",
        "/api/v1/hosts/typo/listeners",
        "/api/v1/hosts/typo/history",
        "/api/v1/hosts/typo/diff?from=2026-01-01T00:00:00Z",
        "/api/v1/hosts/typo/diff?vs_host=web-3",
        "/api/v1/hosts/web-3/diff?vs_host=typo",
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {answer}");
        assert_eq!(
            answer["error"], "no host \"typo\"; `portwatch hosts` lists them",
            "{uri}"
        );
    }
    for uri in [
        "/api/v1/drift?host=web-3",
        "/api/v1/trends?host=web-3",
        "/api/v1/alerts?host=web-3",
        "/api/v1/hosts/web-3/listeners",
        "/api/v1/hosts/web-3/history",
        "/api/v1/hosts/web-3/diff?from=2026-01-01T00:00:00Z",
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
    }
    // Who may not read learns nothing about which hosts exist.
    let (status, _) = call(&f.app, get(Some(&f.agent), "/api/v1/hosts/typo/listeners")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn path_query_and_method_rejections_are_json_that_says_what_to_write() {
    let f = fixture("rejections");
    call(&f.app, post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22])))).await;
    for (req, status, needles) in [
        (
            request(
                "POST",
                "/api/v1/alerts/abc/ack",
                Some(&f.admin),
                Some(serde_json::json!({ "comment": "mine" })),
            ),
            StatusCode::BAD_REQUEST,
            &["bad path", "`abc`", "/api/v1/alerts/12/ack"][..],
        ),
        (
            get(Some(&f.reader), "/api/v1/hosts/web-3/history?port=x"),
            StatusCode::BAD_REQUEST,
            &["bad query", "port", "?port=8080"][..],
        ),
        (
            get(Some(&f.reader), "/api/v1/drift?host=a&host=b"),
            StatusCode::BAD_REQUEST,
            &["bad query", "duplicate field `host`", "?host=web-3"][..],
        ),
        (
            get(Some(&f.reader), "/api/v1/hosts/web-3/listeners?at=x&at=y"),
            StatusCode::BAD_REQUEST,
            &["bad query", "?at="][..],
        ),
        (
            get(Some(&f.reader), "/api/v1/hosts/web-3/diff?from=x&from=y"),
            StatusCode::BAD_REQUEST,
            &["bad query", "?from="][..],
        ),
        (
            request(
                "DELETE",
                "/api/v1/baselines/web?comment=a&comment=b",
                Some(&f.admin),
                None,
            ),
            StatusCode::BAD_REQUEST,
            &["bad query", "?comment=why"][..],
        ),
        (
            request("PUT", "/api/v1/hosts", Some(&f.reader), None),
            StatusCode::METHOD_NOT_ALLOWED,
            &["PUT is not allowed"][..],
        ),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let (got, answer) = call(&f.app, req).await;
        assert_eq!(got, status, "{what}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: not a JSON error: {answer}"));
        for needle in needles {
            assert!(error.contains(needle), "{what}: {needle:?} not in {error:?}");
        }
    }
    // Credentials are checked before the path and query.
    let (status, _) = call(&f.app, get(None, "/api/v1/hosts/web-3/history?port=x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_alert_listing_is_capped_at_ten_thousand() {
    let f = fixture("alert-limit");
    for limit in ["18446744073709551615", "10001", "0"] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), &format!("/api/v1/alerts?limit={limit}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limit}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("1 to 10000"),
            "{limit}: {answer}"
        );
    }
    let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v1/alerts?limit=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("limit"), "{answer}");
    let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v1/alerts?limit=10000")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The listing stops at the limit, newest first.
    let hosts = ["web-3".to_owned()];
    let findings = [unexpected_listener("web-3", 8080), unexpected_listener("web-3", 8081)];
    f.store
        .sync_alerts(&hosts, &findings, DEFAULT_MAX_OPEN, Timestamp::now())
        .unwrap();
    let (status, answer) = call(&f.app, get(Some(&f.reader), "/api/v1/alerts?limit=1")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer.as_array().unwrap().len(), 1, "{answer}");
}

#[tokio::test]
async fn drift_is_filtered_by_kind_capped_and_most_serious_first() {
    let f = fixture("drift-filter");
    call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("web-3", &[22, 443, 5432]))),
    )
    .await;
    let kinds = |v: &serde_json::Value| -> Vec<(String, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["kind"].as_str().unwrap().to_owned(),
                    x["local_port"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (status, all) = call(&f.app, get(Some(&f.reader), "/api/v1/drift")).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        kinds(&all),
        [
            ("risky-port-exposed", 5432),
            ("unbaselined", 22),
            ("unbaselined", 443),
            ("unbaselined", 5432)
        ]
        .map(|(k, p)| (k.to_owned(), p))
    );
    let (_, risky) = call(
        &f.app,
        get(Some(&f.reader), "/api/v1/drift?kind=risky-port-exposed,owner-mismatch"),
    )
    .await;
    assert_eq!(kinds(&risky), vec![("risky-port-exposed".to_owned(), 5432)]);
    let (_, first) = call(&f.app, get(Some(&f.reader), "/api/v1/drift?limit=1")).await;
    assert_eq!(kinds(&first), vec![("risky-port-exposed".to_owned(), 5432)]);
    for (uri, needle) in [
        ("/api/v1/drift?kind=scary", "use one or more of"),
        ("/api/v1/drift?limit=0", "1 to 100000"),
        ("/api/v1/drift?limit=100001", "1 to 100000"),
    ] {
        let (status, answer) = call(&f.app, get(Some(&f.reader), uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(needle), "{uri}: {answer}");
    }
}

#[tokio::test]
async fn a_long_answer_is_streamed_whole_and_in_order() {
    let f = fixture("long");
    // 1,500 hosts with sshd (a streamed fleet-wide answer), one of them with 1,200 ports.
    for h in 0..1_500 {
        let host = format!("host-{:04}", 1_499 - h);
        let ports: Vec<u16> = if h == 0 { (1..=1_200).collect() } else { vec![22] };
        f.store
            .ingest(&snapshot_batch(&host, &ports), Timestamp::now())
            .unwrap();
    }
    let (status, who) = call(&f.app, get(Some(&f.reader), "/api/v1/who?port=22")).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    let rows = who.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 1_500);
    let hosts: Vec<&str> = rows.iter().map(|r| r["host"].as_str().unwrap()).collect();
    let mut sorted = hosts.clone();
    sorted.sort_unstable();
    assert_eq!(hosts, sorted, "fleet-wide rows come in host name order");
    let stored = f.store.who(22, None, Timestamp::now()).unwrap();
    assert_eq!(who, serde_json::to_value(&stored).unwrap());

    let (status, listeners) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts/host-1499/listeners")).await;
    assert_eq!(status, StatusCode::OK, "{listeners}");
    let ports: Vec<u64> = listeners
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|r| r["local_port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, (1..=1_200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn history_is_answered_in_pages_with_a_link_to_the_next() {
    let f = fixture("history-pages");
    let ports: Vec<u16> = (1..=10_001).collect();
    let (status, _) = call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("web-3", &ports))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A read token asking for a host's whole history gets the default page, not all of it.
    let response = f
        .app
        .clone()
        .oneshot(get(Some(&f.reader), "/api/v1/hosts/web-3/history"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let link = response.headers()[header::LINK].to_str().unwrap().to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let page: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(page.len(), 10_000);
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(next.starts_with("/api/v1/hosts/web-3/history?after="), "{next}");
    let response = f.app.clone().oneshot(get(Some(&f.reader), next)).await.unwrap();
    assert!(
        response.headers().get(header::LINK).is_none(),
        "the last page links nowhere"
    );
    let (status, rest) = call(&f.app, get(Some(&f.reader), next)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest.as_array().unwrap().len(), 1);
    // The query's other parameters are kept in the link; limits are bounded.
    let response = f
        .app
        .clone()
        .oneshot(get(Some(&f.reader), "/api/v1/hosts/web-3/history?limit=2&port=7"))
        .await
        .unwrap();
    assert!(response.headers().get(header::LINK).is_none(), "one interval on :7");
    let response = f
        .app
        .clone()
        .oneshot(get(
            Some(&f.reader),
            "/api/v1/hosts/web-3/history?limit=2&since=2020-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
    let link = response.headers()[header::LINK].to_str().unwrap();
    assert!(link.contains("limit=2&since=2020-01-01T00:00:00Z&after="), "{link}");
    for bad in ["limit=0", "limit=100001", "after=yesterday"] {
        let (status, body) = call(
            &f.app,
            get(Some(&f.reader), &format!("/api/v1/hosts/web-3/history?{bad}")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn exports_beyond_the_bound_are_refused_while_slow_clients_hold_theirs() {
    let f = fixture("export-gate");
    let ports: Vec<u16> = (1..=500).collect();
    let (status, _) = call(
        &f.app,
        post(Some(&f.agent), json_body(&snapshot_batch("web-3", &ports))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Two clients start exports and read nothing: their streams stall, holding their turns.
    let mut slow = Vec::new();
    for _ in 0..portwatch_collector::api::MAX_EXPORTS {
        let response = f
            .app
            .clone()
            .oneshot(get(Some(&f.reader), "/api/v1/export"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        slow.push(response);
    }
    let response = f
        .app
        .clone()
        .oneshot(get(Some(&f.reader), "/api/v1/export"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    // Ingest and other reads go on meanwhile.
    let (status, _) = call(&f.app, get(Some(&f.reader), "/api/v1/who?port=22")).await;
    assert_eq!(status, StatusCode::OK);
    // A slow client that reads its export to the end, or goes away, frees its turn.
    let first = slow.remove(0);
    let bytes = axum::body::to_bytes(first.into_body(), usize::MAX).await.unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 500, "the whole export");
    drop(slow);
    let mut freed = None;
    for _ in 0..100 {
        let response = f
            .app
            .clone()
            .oneshot(get(Some(&f.reader), "/api/v1/export"))
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            freed = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        freed.is_some(),
        "the turns of finished or abandoned exports are free again"
    );
}

#[tokio::test]
async fn an_impossible_listener_gets_a_400_naming_its_report_and_field_and_stores_nothing() {
    let f = fixture("impossible");
    let mut wrong = snapshot_batch("web-3", &[22, 631]);
    wrong.reports[0].seq = 7;
    let ReportBody::Snapshot { listeners, .. } = &mut wrong.reports[0].body else {
        unreachable!()
    };
    listeners[1].local_addr = "::1".parse().unwrap();
    let (status, answer) = call(&f.app, post(Some(&f.agent), json_body(&wrong))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.starts_with("report 7: listeners[1]: family ipv4 with address ::1"),
        "{message}"
    );
    assert!(f.store.hosts(Timestamp::now()).unwrap().is_empty(), "nothing stored");
}

#[tokio::test]
async fn over_long_reported_text_is_stored_cut_and_counted_and_exposure_comes_from_the_address() {
    use portwatch_common::wire::{MAX_CMDLINE_BYTES, MAX_FACT_BYTES, MAX_TAGS};
    let f = fixture("cut");
    let mut batch = snapshot_batch("web-3", &[22]);
    let ReportBody::Snapshot { facts, listeners } = &mut batch.reports[0].body else {
        unreachable!()
    };
    facts.os = Some("Debian ".repeat(150_000));
    facts.tags = (0..1000).map(|i| (format!("tag{i:04}"), "x".to_owned())).collect();
    listeners[0].processes[0].cmdline = Some(format!("/usr/sbin/sshd {}", "-o X=y ".repeat(300_000)).into());
    // Said to be loopback-only; bound to every interface.
    listeners[0].exposure = Exposure::Loopback;
    let (status, answer) = call(&f.app, post(Some(&f.agent), json_body(&batch))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let host = f.store.host("web-3", Timestamp::now()).unwrap().unwrap();
    let os = host.os.unwrap();
    assert!(
        os.len() <= MAX_FACT_BYTES && os.starts_with("Debian Debian") && os.ends_with(" bytes]"),
        "{os}"
    );
    assert_eq!(host.tags.len(), MAX_TAGS);
    let stored = &f.store.listeners_at("web-3", Timestamp::now()).unwrap()[0].listener;
    assert_eq!(stored.exposure, Exposure::Wildcard);
    let cmdline = stored.processes[0].cmdline.as_deref().unwrap();
    assert!(
        cmdline.len() <= MAX_CMDLINE_BYTES && cmdline.starts_with("/usr/sbin/sshd -o X=y"),
        "{cmdline}"
    );
    let (_, hosts) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts")).await;
    assert!(hosts.to_string().len() < 8 * 1024, "{} bytes", hosts.to_string().len());

    let text = metrics_text(&f.app, &f.reader).await;
    for line in [
        "portwatch_ingest_strings_cut_total 2",
        &format!("portwatch_ingest_tags_dropped_total {}", 1000 - MAX_TAGS),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    // The agent sends the same again (its answer was lost): stored once, counted again.
    let (status, _) = call(&f.app, post(Some(&f.agent), json_body(&batch))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.store.history("web-3", None, None, None).unwrap().len(), 1);
}

/// Every operation of the API's document: method, path (its parameters
/// filled in) and the statuses it lists.
fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path
            .replace("{host}", "web-3")
            .replace("{name}", "web")
            .replace("{id}", "1")
            .replace("{port}", "22");
        assert!(!uri.contains('{'), "a path parameter this test does not fill: {path}");
        for (method, operation) in item.as_object().unwrap() {
            let statuses = operation["responses"].as_object().unwrap().keys().cloned().collect();
            ops.push((method.to_uppercase(), uri.clone(), statuses));
        }
    }
    ops
}

#[tokio::test]
async fn the_api_document_is_served_without_a_token_and_every_operation_in_it_is_served() {
    let f = fixture("contract");
    let response = f.app.clone().oneshot(get(None, "/api/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = documented_operations(&doc);
    assert!(ops.len() >= 22, "{ops:?}");
    // Without a token, then with an admin's: each answer comes from the
    // operation's handler (not the router's fallbacks), with a status its
    // entry in the document lists.
    for token in [None, Some(f.admin.as_str())] {
        for (method, uri, statuses) in &ops {
            let (status, answer) = call(&f.app, request(method, uri, token, None)).await;
            let said = answer["error"].as_str().unwrap_or("");
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !said.contains("no such endpoint"),
                "{method} {uri} is documented but not served: {status} {answer}"
            );
            assert!(
                statuses.iter().any(|s| s == status.as_str()),
                "{method} {uri} answered {status} ({answer}), which its entry does not list ({statuses:?})"
            );
        }
    }
}

/// A peer summary of web-3's sshd on `port` observed `at`: `connections` from 10.0.0.7.
fn peer_sample(port: u16, at: Timestamp, connections: u64) -> portwatch_common::peers::PeerSample {
    use portwatch_common::peers::{Classes, PeerSample, PeerSummary, TopRemote};
    let top: Vec<TopRemote> = (connections > 0)
        .then(|| TopRemote {
            addr: "10.0.0.7".parse().unwrap(),
            connections,
        })
        .into_iter()
        .collect();
    PeerSample {
        observed_at: at,
        netns: fixtures::listener(port).netns,
        local_addr: fixtures::listener(port).local_addr,
        local_port: port,
        summary: PeerSummary {
            connections,
            distinct_remotes: top.len() as u64,
            top,
            classes: Classes {
                private: connections,
                ..Classes::default()
            },
        },
    }
}

#[tokio::test]
async fn peers_an_agent_sends_read_back_at_a_moment_and_over_a_window_in_pages() {
    let f = fixture("peers");
    let (early, late) = (ago(3000), ago(2000));
    let mut batch = snapshot_batch("web-3", &[22, 80]);
    batch.peers = vec![peer_sample(22, early, 0), peer_sample(80, early, 1)];
    // Version 2 cannot carry them: refused whole, nothing stored.
    batch.version = 2;
    let (status, answer) = call(&f.app, post(Some(&f.agent), json_body(&batch))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("need protocol version 3"),
        "{answer}"
    );
    assert_eq!(open_on(&f, "web-3"), 0);
    batch.version = 3;
    let (status, ack) = call(&f.app, post(Some(&f.agent), json_body(&batch))).await;
    assert_eq!((status, ack["acked"].as_u64()), (StatusCode::OK, Some(1)), "{ack}");
    let heartbeat = Batch {
        version: 3,
        host: "web-3".into(),
        session: "s1".into(),
        dropped: 0,
        alive_at: Some(late),
        peers: vec![peer_sample(22, late, 3)],
        peers_dropped: 2,
        reports: vec![],
    };
    let (status, ack) = call(&f.app, post(Some(&f.agent), json_body(&heartbeat))).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    // Counted: the summaries recorded (the refused batch's are not), and those the agent says it dropped.
    let text = metrics_text(&f.app, &f.reader).await;
    for line in [
        "portwatch_ingest_peer_summaries_total 3",
        "portwatch_agent_peer_summaries_dropped_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }

    let (status, now) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts/web-3/peers")).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    let ports: Vec<(u64, u64)> = now
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["connections"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [(22, 3), (80, 1)], "each listener's latest: {now}");
    assert_eq!(
        now[0]["top"][0],
        serde_json::json!({"addr": "10.0.0.7", "connections": 3})
    );
    assert_eq!(now[0]["classes"]["private"], 3);
    assert_eq!(now[0]["proto"], "tcp");
    let between = format!("/api/v1/hosts/web-3/peers?port=22&at={}", ago(2500));
    let (_, then) = call(&f.app, get(Some(&f.reader), &between)).await;
    assert_eq!(then.as_array().unwrap().len(), 1, "{then}");
    assert_eq!(then[0]["connections"], 0, "before the connections: {then}");
    let before = format!("/api/v1/hosts/web-3/peers?at={}", ago(3500));
    let (_, none) = call(&f.app, get(Some(&f.admin), &before)).await;
    assert_eq!(none, serde_json::json!([]), "before any point");

    // A window, a page at a time.
    let first = format!("/api/v1/hosts/web-3/peers?since={}&limit=2", ago(3600));
    let (status, headers, page) = support::answer(&f.app, get(Some(&f.reader), &first)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let times: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 2);
    assert!(times.iter().all(|t| *t == early.to_string()), "{page}");
    let link = headers[header::LINK].to_str().unwrap().to_owned();
    let next = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    let (_, headers, page) = support::answer(&f.app, get(Some(&f.reader), &next)).await;
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page[0]["connections"], 3);
    assert!(headers.get(header::LINK).is_none(), "the last page");

    for (query, says) in [
        ("at=2026-01-01T00:00:00Z&since=2026-01-01T00:00:00Z", "not both"),
        ("limit=5", "give since or until"),
        ("since=2026-01-01T00:00:00Z&limit=0", "1 to 10000"),
        ("since=2026-01-01T00:00:00Z&after=nonsense", "page cursor"),
        ("at=yesterday", "RFC 3339"),
        ("port=70000", "port"),
    ] {
        let (status, body) = call(
            &f.app,
            get(Some(&f.reader), &format!("/api/v1/hosts/web-3/peers?{query}")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    let (status, _) = call(&f.app, get(Some(&f.reader), "/api/v1/hosts/nope/peers")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
