//! The API's contract: an OpenAPI 3.1 document of `/api/v1`, served at
//! `GET /api/v1/openapi.json` to anyone (it says what the API is, nothing of
//! what it holds).
//!
//! It is generated from the code, so that it cannot drift from it: each
//! route's method and path are written once, in its handler's
//! `#[utoipa::path]`, from which [`super::api_routes`] both registers the
//! route and documents it; the bodies' schemas are derived from the types
//! the handlers take and answer (`portwatch-common` and `portwatch-model`
//! derive them behind their `openapi` feature); the error answers are the
//! responses below, one per status of [`ApiError`](super::ApiError)'s mapping.
//! Tests check that every documented operation is served, that the README's
//! API tables list exactly the documented operations, and (end to end) that
//! an independent validator accepts the document.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::{BusyBody, ErrorBody};
use super::session::{COOKIE_NAME, CSRF_HEADER, SECURE_COOKIE_NAME};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The security scheme of `Authorization: Bearer <token>`.
pub const BEARER: &str = "bearer";
/// The security scheme of the dashboard's session cookie.
pub const SESSION: &str = "session";
/// The security scheme of the session's CSRF token, which a change made with the cookie carries.
pub const CSRF: &str = "csrf";

/// The document's fixed part: what no handler says (the API as a whole, the
/// security schemes, the error responses). The paths are added by
/// [`super::api_routes`] from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "portwatch collector API",
        description = "The history of every host's listening ports and their owners, as portwatch agents \
report them, and what changed: JSON over HTTP/1.1 under `/api/v1`.\n\n\
Credentials are `Authorization: Bearer <token>` (the scheme in any case), or the dashboard's session cookie \
(`POST /api/v1/session`), with its CSRF token in `X-CSRF-Token` and the collector's own `Origin` for a change. \
A token has one role: `agent` writes its own host's reports and reads nothing; `read` reads; `admin` reads and \
changes baselines, alerts and hosts. Each operation says which roles it takes.\n\n\
Times are RFC 3339 (`2026-11-25T03:00:00Z`). A host named in the path or in `host=` that the collector has never \
heard from is a 404, not an empty answer. A moment (`at`, `from`, `to`) before the kept history \
(`[retention] history`) is a 410 saying from when it is kept. Every error body is JSON `{\"error\": \"...\"}` \
saying what is wrong and what to do; a 503 adds `retry_after_seconds`, as its `Retry-After` header says.\n\n\
Outside `/api/v1`: `GET /metrics` (Prometheus text or OpenMetrics) and the dashboard (`/`, `/ui/...`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorBody, BusyBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            RequestTimeout,
            Conflict,
            Gone,
            PayloadTooLarge,
            UnsupportedMediaType,
            Internal,
            Busy
        )
    ),
    tags(
        (name = "ingest", description = "Agents' reports"),
        (name = "hosts", description = "Hosts, what listened on them, when, and what changed"),
        (name = "ports", description = "One port across the fleet"),
        (name = "baselines", description = "What should listen where"),
        (name = "alerts", description = "Findings against the baselines, and the alerts that follow them"),
        (name = "session", description = "The dashboard's sign-in (only where `[dashboard] enabled`, the default)"),
        (name = "contract", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The security schemes: a bearer token, or the dashboard's session cookie
/// (and, for a change, its CSRF token).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `portwatch-collector token create` (`pw_...`), as \
                         `Authorization: Bearer <token>`; the role (agent, read, admin) is the token's.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE_NAME,
                &format!(
                    "The dashboard's session cookie, set by `POST /api/v1/session` (named `{SECURE_COOKIE_NAME}` \
                     over HTTPS): the role of the token it signed in with. Used only when the request has no \
                     `Authorization` header."
                ),
            ))),
        );
        components.add_security_scheme(
            CSRF,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                CSRF_HEADER,
                "The session's CSRF token (`csrf_token` of the session): a request authenticated by the session \
                 cookie that changes something (any method but GET and HEAD) carries it, and an `Origin` of the \
                 collector itself; else 403.",
            ))),
        );
    }
}

/// The request cannot be understood: a bad path, query or body, with what to write instead.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// No credentials, or unknown, revoked or expired ones (or an ended dashboard session).
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// Valid credentials whose role may not do this (or a change made with a dashboard session
/// without its CSRF token or from another origin).
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// Nothing there: no such host, baseline or alert.
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// The request body stopped arriving for `[http] body_timeout`: send it again whole.
#[derive(ToResponse)]
pub struct RequestTimeout(pub ErrorBody);

/// The thing is not in a state that allows this (an alert acknowledged or resolved already).
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// The moment asked about is before the kept history (`[retention] history`): what listened then is no
/// longer known; the message says from when history is kept.
#[derive(ToResponse)]
pub struct Gone(pub ErrorBody);

/// The body is over the size limit: 8 MiB as sent, and for ingest the batch limit once decompressed
/// (`[ingest] max_batch_bytes`, 32 MiB at most; every acknowledgement states the limits).
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// A body in a `Content-Encoding` the collector does not read: send it as is, or gzip it.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(pub ErrorBody);

/// The collector's fault: the body says only that; its log has the details.
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// At a limit for now (the history store busy or unreachable, heavy reads or exports at their bound,
/// ingest's bytes in flight, a host's batch already in flight, the dashboard's sessions): the same request
/// may succeed after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before sending the same request again (at least 1)")))]
pub struct Busy(pub BusyBody);

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let rendered = serde_json::to_value(document()).map(|mut doc| {
        readable_descriptions(&mut doc);
        doc
    });
    rendered
        .and_then(|doc| serde_json::to_string_pretty(&doc))
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the API document: {e}\"}}"))
});

/// The API's OpenAPI document, as generated from the handlers and types.
pub fn document() -> utoipa::openapi::OpenApi {
    super::api_routes(true).into_openapi()
}

/// Rewrites every `description` and `summary` in `doc` (as rendered) for a reader of the
/// API rather than of the code (see [`readable`]).
fn readable_descriptions(doc: &mut serde_json::Value) {
    match doc {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                match value {
                    serde_json::Value::String(text) if key == "description" || key == "summary" => {
                        *text = readable(text)
                    }
                    other => readable_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(readable_descriptions),
        _ => {}
    }
}

/// A description taken from a doc comment, without the code's links: an
/// intra-doc link (`` [`Report`] ``, `` [`seq`](Report::seq) ``, `[the
/// rules](crate::history)`) becomes its text; a web link stays, and so does
/// anything in a code span (`` `[retention] history` ``).
fn readable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['`', '[']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('`') {
            // A code span, kept as it is.
            let end = rest[1..].find('`').map_or(rest.len(), |e| e + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let Some(close) = rest.find(']') else {
            break;
        };
        let (inner, after) = (&rest[1..close], &rest[close + 1..]);
        let target = after
            .strip_prefix('(')
            .and_then(|t| t.find(')').map(|end| (&t[..end], &t[end + 1..])));
        match target {
            Some((target, tail)) if !target.starts_with("http") => {
                out.push_str(inner);
                rest = tail;
            }
            None if inner.starts_with('`') && inner.ends_with('`') && inner.len() > 1 => {
                out.push_str(inner);
                rest = after;
            }
            _ => {
                out.push('[');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "contract",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of `/api/v1`, as generated from the collector's \
code: every endpoint, parameter, body, response and error", content_type = "application/json", body = Object),
    )
)]
pub async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn descriptions_read_without_the_codes_links() {
        assert_eq!(
            readable("The [`Report`]s of a [`Batch`]."),
            "The `Report`s of a `Batch`."
        );
        assert_eq!(
            readable("Its [`seq`](Report::seq), see [the rules](crate::history)."),
            "Its `seq`, see the rules."
        );
        assert_eq!(
            readable("See [the README](https://example.org/r)."),
            "See [the README](https://example.org/r)."
        );
        assert_eq!(
            readable("Set by `[retention] history` [sic"),
            "Set by `[retention] history` [sic"
        );
        assert_eq!(readable("a [plain] word, `unclosed"), "a [plain] word, `unclosed");
    }

    #[test]
    fn the_served_document_has_no_intra_doc_link_left() {
        let doc = DOCUMENT.as_str();
        assert!(doc.contains("\"openapi\": \"3.1"), "{}", &doc[..doc.len().min(200)]);
        for link in ["[`", "`](", "](crate::", "](super::"] {
            let at = doc.find(link);
            assert!(
                at.is_none(),
                "{link} left in the document: {}",
                at.map_or("", |a| &doc[a.saturating_sub(120)..(a + 60).min(doc.len())])
            );
        }
    }

    /// Every operation of the document, as `METHOD /path`.
    fn operations(doc: &serde_json::Value) -> BTreeSet<String> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        ops
    }

    fn json() -> serde_json::Value {
        serde_json::from_str(&DOCUMENT).expect("the document is JSON")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_responses_and_security_schemes() {
        let doc = json();
        assert_eq!(doc["openapi"], "3.1.0");
        let responses = &doc["components"]["responses"];
        for name in ["Unauthorized", "Forbidden", "Gone", "PayloadTooLarge", "Busy"] {
            assert!(responses[name].is_object(), "no response {name}");
        }
        assert_eq!(
            responses["Gone"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(responses["Busy"]["headers"]["Retry-After"].is_object());
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes[BEARER]["scheme"], "bearer");
        assert_eq!(schemes[SESSION]["in"], "cookie");
        assert_eq!(schemes[CSRF]["name"], CSRF_HEADER);
    }

    #[test]
    fn every_operation_names_only_security_schemes_the_document_defines() {
        let doc = json();
        let defined: BTreeSet<&str> = doc["components"]["securitySchemes"]
            .as_object()
            .expect("schemes")
            .keys()
            .map(String::as_str)
            .collect();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let security = op["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path}: no security"));
                for requirement in security {
                    for scheme in requirement.as_object().expect("a requirement").keys() {
                        assert!(defined.contains(scheme.as_str()), "{method} {path}: {scheme}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_readme_api_tables_list_exactly_the_documented_operations() {
        let readme = include_str!("../../../README.md");
        let listed: BTreeSet<String> = readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .filter_map(|cell| cell.split_once(' '))
            .filter(|(method, path)| path.starts_with("/api/v1/") && method.chars().all(|c| c.is_ascii_uppercase()))
            .map(|(method, path)| format!("{method} {}", path.split('?').next().unwrap_or(path)))
            .collect();
        let documented = operations(&json());
        assert_eq!(
            listed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "in the README, not in the document"
        );
        assert_eq!(
            documented.difference(&listed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "in the document, not in the README"
        );
    }

    #[test]
    fn api_routes_are_registered_only_with_their_documentation() {
        // `routes!` registers a route from its handler's `#[utoipa::path]`; a
        // plain `.route("/api/v1/...")` would serve an undocumented endpoint.
        for (file, source) in [
            ("api/mod.rs", include_str!("mod.rs")),
            ("api/dashboard.rs", include_str!("dashboard.rs")),
        ] {
            assert!(
                !source.contains(".route(\"/api/v1"),
                "{file} registers an /api/v1 route without routes!"
            );
        }
    }
}
