//! The workspace's shape, as `cargo tree` sees it: the `portwatch` CLI and
//! the shared model are clients and values, with no SQLite, no HTTP server,
//! no async runtime and no OpenAPI generator in them.

use std::path::Path;
use std::process::Command;

/// The crates `package` depends on (normal dependencies, every depth), by name.
fn dependencies(package: &str) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .current_dir(&workspace)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_cli_and_the_model_depend_on_no_sqlite_no_server_and_no_async_runtime() {
    for package in ["portwatch-cli", "portwatch-model"] {
        let deps = dependencies(package);
        assert!(deps.iter().any(|d| d == "portwatch-common"), "{package}: {deps:?}");
        // utoipa (the collector's OpenAPI document) only behind the model's and common's `openapi` feature.
        for forbidden in ["rusqlite", "axum", "hyper", "tokio", "utoipa", "portwatch-collector"] {
            assert!(
                !deps.iter().any(|d| d == forbidden),
                "{package} depends on {forbidden}: {deps:?}"
            );
        }
    }
}
