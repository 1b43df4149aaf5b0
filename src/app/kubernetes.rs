//! Kubernetes mode: snapshots from the cluster applied through the engine.

use super::ConfigStatus;
use super::engine::Engine;
use crate::source::kubernetes::{self, KubeOptions, Snapshot};
use std::sync::Arc;
use tokio::sync::watch;

/// Applies every new snapshot until the watchers stop.
pub async fn run(client: kube::Client, opts: KubeOptions, mut engine: Engine) {
    let (tx, mut rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let board = engine.state.board.clone();
    tokio::spawn(kubernetes::run(client, opts, tx, board));
    while rx.changed().await.is_ok() {
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        engine.apply(&snapshot.model);
        if let Ok(mut s) = engine.state.config_status.write() {
            *s = ConfigStatus {
                loaded: true,
                files: Vec::new(),
                gateways: snapshot.model.gateways.len(),
                backends: snapshot.model.backends.len(),
                routes: snapshot.model.routes.len(),
                last_error: (!snapshot.problems.is_empty()).then(|| {
                    format!(
                        "{} object(s) have problems; see their status",
                        snapshot.problems.len()
                    )
                }),
            };
        }
    }
}
