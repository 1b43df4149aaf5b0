//! The admin HTTP API: health, readiness, status and Prometheus metrics. Never secret values.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Routes of the admin API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 200 while a valid configuration is served (saying so when part of it is a last good
/// version rather than the input as it reads now); 503 before any valid configuration.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let config = state
        .config_status
        .read()
        .map(|s| s.clone())
        .unwrap_or_default();
    if !state.ready.load(Ordering::Relaxed) {
        let why = config
            .last_error
            .map(|e| format!(":\n{e}"))
            .unwrap_or_default();
        let body = format!("no valid configuration yet{why}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body);
    }
    match config.fallback {
        Some(fallback) => (StatusCode::OK, format!("{fallback}\n")),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}

async fn status(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let config = state
        .config_status
        .read()
        .map(|s| s.clone())
        .unwrap_or_default();
    let mut credentials: Vec<_> = state.board.0.iter().map(|e| e.value().clone()).collect();
    credentials.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(serde_json::json!({
        "config": config,
        "credentials": credentials,
        "streams": state.registry.snapshot(),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    let r = &state.registry;
    let m = &state.metrics;
    let lines: [(&str, &str, &str, u64); 7] = [
        (
            "tessera_xds_streams",
            "gauge",
            "Connected ADS streams.",
            r.streams.len() as u64,
        ),
        (
            "tessera_xds_responses_total",
            "counter",
            "xDS responses sent.",
            r.responses_total.load(Ordering::Relaxed),
        ),
        (
            "tessera_xds_nacks_total",
            "counter",
            "Updates Envoy rejected.",
            r.nacks_total.load(Ordering::Relaxed),
        ),
        (
            "tessera_config_reloads_total",
            "counter",
            "Configurations applied.",
            m.reloads_ok.load(Ordering::Relaxed),
        ),
        (
            "tessera_config_rejected_total",
            "counter",
            "Configurations rejected as invalid.",
            m.reloads_rejected.load(Ordering::Relaxed),
        ),
        (
            "tessera_credential_updates_total",
            "counter",
            "Credential values pushed with new content (first values, rotations, mints, revocations, expiries).",
            m.credential_updates.load(Ordering::Relaxed),
        ),
        (
            "tessera_ready",
            "gauge",
            "1 once a valid configuration is served.",
            u64::from(state.ready.load(Ordering::Relaxed)),
        ),
    ];
    for (name, kind, help, value) in lines {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
