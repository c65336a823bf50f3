//! The web dashboard: plain ES modules and one vendored chart library
//! (uPlot), embedded in the binary at build time from `collector/dashboard/`
//! and served at `/` on the API's own address and TLS. No build step, no
//! CDN: the page loads nothing from anywhere else, and reads only the public
//! `/api/v1` (signed in through [`super::session`]).
//!
//! Every answer of the collector, the API's included, carries a strict
//! Content-Security-Policy (scripts and styles from the collector's own files
//! only: no inline script or style, no `eval`), `X-Content-Type-Options:
//! nosniff`, and refuses to be framed (`frame-ancestors 'none'`).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, AppState};

/// The policy every answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path under `/ui/` (and `collector/dashboard/`),
/// its type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../../dashboard/", $path)),
        }
    };
}

/// Every file the page may load (a test checks that none in
/// `collector/dashboard/` is left out).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("js/main.js", "text/javascript; charset=utf-8"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/dom.js", "text/javascript; charset=utf-8"),
    asset!("js/time.js", "text/javascript; charset=utf-8"),
    asset!("js/timeline.js", "text/javascript; charset=utf-8"),
    asset!("js/chart.js", "text/javascript; charset=utf-8"),
    asset!("js/views/signin.js", "text/javascript; charset=utf-8"),
    asset!("js/views/fleet.js", "text/javascript; charset=utf-8"),
    asset!("js/views/host.js", "text/javascript; charset=utf-8"),
    asset!("js/views/port.js", "text/javascript; charset=utf-8"),
    asset!("js/views/alerts.js", "text/javascript; charset=utf-8"),
    asset!("js/views/drift.js", "text/javascript; charset=utf-8"),
    asset!("js/views/trends.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uplot/uPlot.esm.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            // Small files: the browser asks again each time, and gets the
            // version of the running collector.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.bytes,
    )
        .into_response()
}

/// `GET /` and `GET /ui/{path}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { find("index.html").map(serve).ok_or_else(missing) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { find(&path).map(serve).ok_or_else(missing) }),
        )
}

fn missing() -> ApiError {
    ApiError::NotFound("no such dashboard file; open / for the dashboard".to_owned())
}

/// Adds the security headers to an answer (a layer over the whole router).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `html` has an attribute such as ` onclick=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
    }

    #[test]
    fn every_file_of_the_dashboard_folder_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut stack = vec![root.clone()];
        let mut on_disk = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                    // The update script and the version note are for people, not the page.
                    if rel != "vendor.sh" && !rel.ends_with("VERSION") {
                        on_disk.push(rel);
                    }
                }
            }
        }
        for rel in &on_disk {
            assert!(find(rel).is_some(), "collector/dashboard/{rel} is not in ASSETS");
        }
        assert_eq!(on_disk.len(), ASSETS.len(), "{on_disk:?}");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            // The SVG namespace is a name, not an address the page loads.
            let text = std::str::from_utf8(asset.bytes)
                .unwrap()
                .replace("'http://www.w3.org/2000/svg'", "");
            assert!(!text.contains("innerHTML"), "{}: innerHTML", asset.path);
            assert!(
                !text.contains("outerHTML") && !text.contains("insertAdjacentHTML"),
                "{}",
                asset.path
            );
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{}: an absolute URL",
                asset.path
            );
            if asset.path.ends_with(".html") {
                assert!(!text.contains("<script>") && !text.contains("<style") && !text.contains(" style="));
                assert!(!has_inline_handler(&text), "{}: an inline event handler", asset.path);
            }
        }
    }
}
