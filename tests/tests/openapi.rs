//! The collector's API contract, checked by a validator of its own: a real
//! collector serves its OpenAPI document at `/api/v1/openapi.json` without a
//! token, and `openapi-spec-validator` (PyPI's reference validator of
//! OpenAPI 2.0, 3.0 and 3.1: the document against the 3.1 schema, plus its
//! references and parameters) accepts it, and refuses a broken copy of it.
//!
//! Needs `openapi-spec-validator` on PATH or in `target/openapi-validator/`
//! (tests/run.sh installs it there, with pip in a virtualenv: Debian 12 has no
//! package of it); no root.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;
use portwatch_tests::*;
use serde_json::Value;

/// Where tests/run.sh installs the validator when it is not on PATH.
fn venv_validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openapi-validator/bin/openapi-spec-validator")
}

/// The validator, or an error saying how to install it.
fn validator() -> anyhow::Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let path = Path::new(dir).join("openapi-spec-validator");
        if path.is_file() {
            return Ok(path);
        }
    }
    let venv = venv_validator();
    if venv.is_file() {
        return Ok(venv);
    }
    bail!(
        "openapi-spec-validator is missing: install it (tests/run.sh does: python3 -m venv target/openapi-validator \
         && target/openapi-validator/bin/pip install 'openapi-spec-validator>=0.7,<1'; needs python3-venv)"
    )
}

/// Runs the validator on `file`: whether it accepts it, and what it said.
fn validate(validator: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(validator)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn a_real_collectors_api_document_passes_openapi_spec_validator() {
    let validator = validator().unwrap();
    let dir = TempDir::new("openapi").unwrap();
    let collector = Collector::start(&dir.path.join("collector.db"), 0).unwrap();

    // Served to anyone: no Authorization header.
    let mut response = ureq::get(format!("{}/api/v1/openapi.json", collector.url))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.body_mut().read_to_string().unwrap();
    let file = dir.path.join("openapi.json");
    std::fs::write(&file, &text).unwrap();

    let (valid, said) = validate(&validator, &file);
    assert!(
        valid && said.contains("OK"),
        "openapi-spec-validator refused the document: {said}"
    );

    // What it says, concretely.
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let who = &doc["paths"]["/api/v1/who"]["get"];
    let port = who["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "port")
        .unwrap_or_else(|| panic!("who has no port parameter: {who}"));
    assert_eq!(port["in"], "query");
    assert_eq!(port["required"], true);
    assert_eq!(port["schema"]["type"], "integer");
    assert_eq!(who["responses"]["410"]["$ref"], "#/components/responses/Gone");
    let gone = &doc["components"]["responses"]["Gone"];
    assert_eq!(
        gone["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(doc["components"]["schemas"]["ErrorBody"]["required"][0], "error");
    let busy = &doc["components"]["responses"]["Busy"];
    assert!(busy["headers"]["Retry-After"].is_object(), "{busy}");
    let history = &doc["paths"]["/api/v1/hosts/{host}/history"]["get"]["responses"]["200"]["headers"];
    for header in ["Link", "Portwatch-History-Kept-Since"] {
        assert!(
            history[header].is_object(),
            "history's answer lacks {header}: {history}"
        );
    }
    let ingest = &doc["paths"]["/api/v1/ingest"]["post"];
    assert_eq!(
        ingest["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Batch"
    );
    assert_eq!(ingest["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        doc["paths"]["/api/v1/openapi.json"]["get"]["security"],
        serde_json::json!([{}]),
        "the document needs no credentials"
    );
    assert_eq!(doc["components"]["securitySchemes"]["csrf"]["in"], "header");

    // The validator does check: a copy with a reference to nothing is refused.
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/who"]["get"]["responses"]["410"]["$ref"] = "#/components/responses/Nothing".into();
    let broken_file = dir.path.join("broken.json");
    std::fs::write(&broken_file, broken.to_string()).unwrap();
    let (valid, said) = validate(&validator, &broken_file);
    assert!(!valid, "openapi-spec-validator accepted a dangling reference: {said}");
}
