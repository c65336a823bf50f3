//! Builds the kernel program (`bpf/portwatch.bpf.c`) with clang when it is
//! there, and sets `cfg(portwatch_bpf)` so the agent embeds it. Without clang
//! (or libbpf's headers) the agent is built without it, says so once as a
//! build warning, and polls at run time.
//!
//! `PORTWATCH_CLANG` names another clang; `PORTWATCH_NO_BPF=1` builds
//! without the program even where clang is installed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(portwatch_bpf)");
    println!("cargo:rerun-if-changed=bpf/portwatch.bpf.c");
    println!("cargo:rerun-if-changed=bpf/kernel.h");
    println!("cargo:rerun-if-env-changed=PORTWATCH_CLANG");
    println!("cargo:rerun-if-env-changed=PORTWATCH_NO_BPF");
    // Built again once clang or libbpf's headers are installed (or updated):
    // CI lints before the test command installs them. A path that does not
    // exist makes cargo run this script on every build, which costs nothing
    // here but one failed spawn.
    println!("cargo:rerun-if-changed=/usr/bin/clang");
    println!("cargo:rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
    match build() {
        Ok(()) => println!("cargo:rustc-cfg=portwatch_bpf"),
        Err(why) => println!(
            "cargo:warning=kernel events compiled out ({why}); this agent will poll. \
             Install clang and libbpf-dev to build them in."
        ),
    }
}

fn build() -> Result<(), String> {
    if std::env::var_os("PORTWATCH_NO_BPF").is_some_and(|v| v == "1") {
        return Err("PORTWATCH_NO_BPF=1".into());
    }
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default().as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => return Err(format!("no syscall register layout for {other}")),
    };
    let clang = std::env::var("PORTWATCH_CLANG").unwrap_or_else(|_| "clang".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("portwatch.bpf.o");
    let output = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .args(["-c", "bpf/portwatch.bpf.c", "-o"])
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| l.contains("error")).unwrap_or("no message");
        return Err(format!("{clang} failed: {}", first.trim()));
    }
    Ok(())
}
