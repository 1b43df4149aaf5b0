//! Decides, when the tests are built, whether Envoy is installed: `#[needs_envoy]` marks tests
//! `#[ignore]` under cfg `envoy_missing`. Never in CI, where a missing Envoy must fail those
//! tests. Same lookup as `harness::envoy_binary`: $TESSERA_ENVOY, else the path
//! `testenv/setup` recorded.
//!
//! This lives here, not in the main package, because a build script's inputs rebuild every
//! target of its package when they change: here they rebuild only this crate and the tests.

use std::path::{Path, PathBuf};

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let recorded = repo.join("testenv/.venv/envoy-path");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TESSERA_ENVOY");
    println!("cargo::rerun-if-env-changed=CI");
    // Cargo reruns a build script on every build while a watched path is missing: watch the
    // nearest existing ancestor, which changes when testenv/setup creates the file.
    let watched = recorded
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(&recorded);
    println!("cargo::rerun-if-changed={}", watched.display());
    println!("cargo::rustc-check-cfg=cfg(envoy_missing)");
    if !in_ci() && !envoy_installed(&recorded) {
        println!("cargo::rustc-cfg=envoy_missing");
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

fn envoy_installed(recorded: &Path) -> bool {
    let path = match std::env::var_os("TESSERA_ENVOY").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match std::fs::read_to_string(recorded) {
            Ok(content) => PathBuf::from(content.trim()),
            Err(_) => return false,
        },
    };
    path.exists()
}
