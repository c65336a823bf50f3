//! The workspace's shape: as `cargo tree` sees it, the `portwatch` CLI and
//! the shared model are clients and values, with no SQLite, no HTTP server,
//! no async runtime and no OpenAPI generator in them; and inside each crate,
//! the top-level modules import one another without a cycle.
// Test code: a source file that cannot be read fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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

/// The top-level modules of the crate whose sources are in `src`, each with
/// the other top-level modules its code (tests and comments left out) names
/// as `crate::NAME`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main"].contains(&name.as_str()) {
            continue;
        }
        let files = modules.entry(name).or_default();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(module, files)| {
            let mut imports = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                // A module's unit tests may reach anywhere.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    for (at, _) in line.match_indices("crate::") {
                        let rest = &line[at + "crate::".len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if name != module && names.contains(&name) {
                            imports.insert(name);
                        }
                    }
                }
            }
            (module, imports)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle of `imports`, as the modules along it, if there is one.
fn cycle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_owned());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, imports, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|m| visit(m, imports, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_cycle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for src in [
        "common/src",
        "agent/src",
        "collector/src",
        "collector/model/src",
        "collector/cli/src",
    ] {
        let imports = module_imports(&workspace.join(src));
        assert!(imports.len() > 1, "{src}: no modules found");
        if let Some(found) = cycle(&imports) {
            panic!(
                "{src}: the modules {} import each other in a cycle; move what both need into a module \
                 of its own that neither imports back (imports: {imports:?})",
                found.join(" -> ")
            );
        }
    }
    // The check finds a cycle where there is one.
    let two: BTreeMap<String, BTreeSet<String>> = [
        ("store".to_owned(), BTreeSet::from(["alert".to_owned()])),
        ("alert".to_owned(), BTreeSet::from(["store".to_owned()])),
    ]
    .into();
    assert_eq!(cycle(&two).map(|c| c.len()), Some(3));
}
