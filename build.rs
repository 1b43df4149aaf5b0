//! Tells the integration tests whether Envoy is installed: without it, tests that need Envoy
//! are compiled with `#[ignore]` (cfg `envoy_missing`) so libtest reports them as ignored, not
//! as passed. Never in CI, where a missing Envoy must fail those tests. Same lookup as
//! `harness::envoy_binary`: $TESSERA_ENVOY, else the path `testenv/setup` recorded.

use std::path::{Path, PathBuf};

const RECORDED: &str = "testenv/.venv/envoy-path";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TESSERA_ENVOY");
    println!("cargo::rerun-if-env-changed=CI");
    // Cargo reruns a build script (and so recompiles the crate) on every build while a watched
    // path is missing: watch the nearest path that exists, which changes when setup creates
    // the recorded file below it.
    let watched = Path::new(RECORDED)
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .unwrap_or(Path::new(RECORDED));
    println!("cargo::rerun-if-changed={}", watched.display());
    println!("cargo::rustc-check-cfg=cfg(envoy_missing)");
    if !in_ci() && !envoy_installed() {
        println!("cargo::rustc-cfg=envoy_missing");
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

fn envoy_installed() -> bool {
    let path = match std::env::var_os("TESSERA_ENVOY").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match std::fs::read_to_string(RECORDED) {
            Ok(recorded) => PathBuf::from(recorded.trim()),
            Err(_) => return false,
        },
    };
    path.exists()
}
