//! The admin HTTP API: health, readiness, status and Prometheus metrics. Never secret values.
//!
//! `/healthz`, `/readyz` and `/metrics` are open (probes and scrapers). `/status` names every
//! connected node, its cluster and identity: a map for an attacker, so it is served only to a
//! bearer of the `--admin-token-file` token, or, without one, only on a loopback admin address.

pub mod grpc;
mod metrics;

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Who may read `/status`.
#[derive(Debug, Clone)]
pub enum StatusAccess {
    /// Anyone who reaches the admin address (it is loopback).
    Open,
    /// Requests with `Authorization: Bearer <token>`, the token read from this file at each
    /// request (so it can be rotated).
    Token(PathBuf),
    /// Nobody: the admin address is not loopback and no token file was given.
    Closed,
}

impl StatusAccess {
    /// The access for an admin API on `address` with an optional token file.
    pub fn for_address(address: std::net::SocketAddr, token_file: Option<PathBuf>) -> Self {
        match token_file {
            Some(file) => Self::Token(file),
            None if address.ip().is_loopback() => Self::Open,
            None => Self::Closed,
        }
    }
}

#[derive(Clone)]
struct Admin {
    state: Arc<AppState>,
    access: Arc<StatusAccess>,
}

/// Routes of the admin API.
pub fn router(state: Arc<AppState>, access: StatusAccess) -> Router {
    let admin = Admin {
        state,
        access: Arc::new(access),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

/// Why `/status` is refused, or `None` when the request may read it.
fn refuse_status(access: &StatusAccess, headers: &HeaderMap) -> Option<Response> {
    let token = match access {
        StatusAccess::Open => return None,
        StatusAccess::Closed => {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "/status is served only on a loopback admin address or with --admin-token-file\n",
                )
                    .into_response(),
            );
        }
        StatusAccess::Token(file) => file,
    };
    let expected = match std::fs::read_to_string(token) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            tracing::warn!(file = %token.display(), "admin token file is missing or empty: /status refused");
            return Some(
                (StatusCode::SERVICE_UNAVAILABLE, "admin token unavailable\n").into_response(),
            );
        }
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let equal = aws_lc_rs::constant_time::verify_slices_are_equal(
        presented.as_bytes(),
        expected.as_bytes(),
    )
    .is_ok();
    if equal {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/status needs Authorization: Bearer <admin token>\n",
            )
                .into_response(),
        )
    }
}

/// 200 while a valid configuration is served (saying so when part of it is a last good
/// version rather than the input as it reads now); 503 before any valid configuration.
async fn readyz(State(Admin { state, .. }): State<Admin>) -> impl IntoResponse {
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

async fn status(State(Admin { state, access }): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_status(&access, &headers) {
        return refused;
    }
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
        "xds": xds_security(&state),
    }))
    .into_response()
}

/// How xDS clients are authenticated, and who was refused.
fn xds_security(state: &AppState) -> serde_json::Value {
    let authenticated = state.xds_client_auth.load(Ordering::Relaxed);
    let served = state.cache.state();
    let mut serving_nobody: Vec<&String> = served
        .gateways
        .iter()
        .filter(|(_, g)| g.xds_clients.is_empty())
        .map(|(cluster, _)| cluster)
        .collect();
    serving_nobody.sort();
    let (mode, warning) = if authenticated {
        let warning = (!serving_nobody.is_empty()).then_some(
            "gateways without xdsClients serve nobody while xDS clients are authenticated (see gatewaysServingNobody)",
        );
        ("authenticated", warning)
    } else {
        (
            "unauthenticated",
            Some(
                "xDS clients are not authenticated: any local process can read credentials by claiming a node cluster",
            ),
        )
    };
    serde_json::json!({
        "clientAuthentication": mode,
        "warning": warning,
        "gatewaysServingNobody": if authenticated { serving_nobody } else { Vec::new() },
        "refused": state.registry.refusals(),
    })
}

async fn metrics(State(Admin { state, .. }): State<Admin>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state, std::time::SystemTime::now()),
    )
}

#[cfg(test)]
mod tests;
