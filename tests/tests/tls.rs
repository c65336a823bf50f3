//! End to end over HTTPS: a collector serving the certificate of a private
//! CA (made here with the `openssl` command), an agent and the `portwatch`
//! CLI that trust that CA; clients that do not trust it, or speak plain
//! HTTP to it, are refused with a message that says what to check.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portwatch_tests::*;

/// Runs `openssl ARGS` (split at spaces) in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl is installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate it signed for 127.0.0.1 and localhost, in
/// `dir/NAME/`: (ca.pem, collector.crt, collector.key).
fn private_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = &dir.join(name);
    std::fs::create_dir_all(dir).unwrap();
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        dir,
        &format!("req -x509 {key} -days 2 -subj /CN=portwatch-test-CA -keyout ca.key -out ca.pem"),
    );
    openssl(
        dir,
        &format!("req {key} -subj /CN=collector -keyout collector.key -out collector.csr"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in collector.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf \
         -out collector.crt",
    );
    (dir.join("ca.pem"), dir.join("collector.crt"), dir.join("collector.key"))
}

/// A collector config on loopback serving HTTPS with `cert` and `key`.
fn write_config(config: &Path, db: &Path, cert: &Path, key: &Path) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndb = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
        db.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    std::fs::write(config, text).unwrap();
}

fn portwatch(args: &[&str]) -> std::process::Output {
    Command::new(binary("portwatch")).args(args).output().unwrap()
}

#[test]
fn agent_and_cli_trusting_the_private_ca_work_over_https_and_others_are_told_why_not() {
    let dir = TempDir::new("tls").unwrap();
    let (ca, cert, key) = private_ca(&dir.path, "first");
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    write_config(&config, &db, &cert, &key);
    let agent_token = create_token(&db, &["--host", "tls-host"]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    assert!(collector.url.starts_with("https://127.0.0.1:"), "{}", collector.url);

    let ca_str = ca.to_str().unwrap();
    let spool = dir.path.join("spool");
    let _agent = Agent::start_with(
        &collector.url,
        &agent_token,
        "tls-host",
        "200ms",
        &spool,
        &["--ca-file", ca_str],
    )
    .unwrap();
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = l.port(0).to_string();
    let holders = eventually(Duration::from_secs(20), || {
        let v = portwatch_json(
            &collector.url,
            &read_token,
            &["--ca-file", ca_str, "who", "--port", &port],
        )
        .ok()?;
        let rows = v.as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the agent ships over HTTPS and the CLI reads over HTTPS");
    assert_eq!(holders[0]["host"], "tls-host");
    assert_eq!(holders[0]["processes"][0]["pid"], l.pids()[0]);

    // A renewed certificate, from another CA, is served after SIGHUP without a restart.
    let (ca2, cert2, key2) = private_ca(&dir.path, "renewed");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    collector.signal(rustix::process::Signal::HUP).unwrap();
    let ca2_str = ca2.to_str().unwrap();
    eventually(Duration::from_secs(20), || {
        portwatch_json(&collector.url, &read_token, &["--ca-file", ca2_str, "hosts"]).ok()
    })
    .expect("the renewed certificate is served after SIGHUP");
    // The old CA no longer verifies it: the old certificate is no longer served.
    let old = portwatch_json(&collector.url, &read_token, &["--ca-file", ca_str, "hosts"])
        .expect_err("the old certificate is no longer served")
        .to_string();
    assert!(
        old.contains("cannot reach the collector") && old.contains("the TLS handshake failed"),
        "{old}"
    );

    // A client without the CA does not trust the certificate, and says what to do.
    let out = portwatch(&["--collector", &collector.url, "--token", &read_token, "hosts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS") && stderr.contains("--ca-file"), "{stderr}");

    // Plain HTTP to the HTTPS port gets no answer it can read, and is told so.
    let plain = collector.url.replacen("https://", "http://", 1);
    let out = portwatch(&["--collector", &plain, "--token", &read_token, "hosts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the collector") && stderr.contains("https:// collector addressed as http://"),
        "{stderr}"
    );

    // A CA file that is not a certificate is refused before any request.
    let out = portwatch(&[
        "--collector",
        &collector.url,
        "--token",
        &read_token,
        "--ca-file",
        key.to_str().unwrap(),
        "hosts",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds no certificate"), "{stderr}");
}

#[test]
fn a_key_that_is_not_the_certificates_stops_serve_with_both_names() {
    let dir = TempDir::new("tls-bad").unwrap();
    let (ca, cert, _key) = private_ca(&dir.path, "first");
    let config = dir.path.join("collector.toml");
    // A certificate where the key should be: no usable key.
    write_config(&config, &dir.path.join("c.db"), &cert, &ca);
    let out = Command::new(binary("portwatch-collector"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("collector.crt") && stderr.contains("ca.pem") && stderr.contains("[tls]"),
        "{stderr}"
    );
}

#[test]
fn local_agent_refuses_a_tls_config_and_says_how_to_run_instead() {
    let dir = TempDir::new("tls-local").unwrap();
    let (_ca, cert, key) = private_ca(&dir.path, "first");
    let config = dir.path.join("collector.toml");
    write_config(&config, &dir.path.join("c.db"), &cert, &key);
    let out = Command::new(binary("portwatch-collector"))
        .args(["serve", "--local-agent", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--local-agent") && stderr.contains("ca_file"),
        "{stderr}"
    );
}

/// What `openssl s_client` offering h2 and http/1.1 to `port`, trusting
/// `ca`, prints: (the protocol ALPN chose, whether the chain verified).
fn alpn_and_verified(port: u16, ca: &Path) -> (String, bool) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-alpn",
            "h2,http/1.1",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (tests/run.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let alpn = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ALPN protocol: "))
        .unwrap_or("none")
        .to_owned();
    (alpn, text.contains("Verify return code: 0 (ok)"))
}

#[test]
fn tls_offers_only_http1_in_alpn_also_after_a_certificate_reload() {
    let dir = TempDir::new("tls-alpn").unwrap();
    let (ca, cert, key) = private_ca(&dir.path, "first");
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    write_config(&config, &db, &cert, &key);
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    // The server speaks HTTP/1.1 only: a client offered h2 would send what it cannot read.
    assert_eq!(alpn_and_verified(collector.port(), &ca), ("http/1.1".to_owned(), true));
    let (ca2, cert2, key2) = private_ca(&dir.path, "renewed");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    collector.signal(rustix::process::Signal::HUP).unwrap();
    let renewed = eventually(Duration::from_secs(20), || {
        let (alpn, verified) = alpn_and_verified(collector.port(), &ca2);
        verified.then_some(alpn)
    })
    .expect("the renewed certificate is served after SIGHUP");
    assert_eq!(renewed, "http/1.1");
}
