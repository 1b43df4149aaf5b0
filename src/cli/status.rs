//! `tessera status` and `tessera refresh`: the admin gRPC API as tables (like `istioctl
//! proxy-status`) or JSON, with exit codes scripts can test.

use crate::admin::grpc::pb::{self, admin_client::AdminClient};
use serde_json::{Value, json};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Exit status: everything is in sync.
pub const OK: u8 = 0;
/// Exit status: a node is stale past the threshold or NACKed, a credential failed or revoked,
/// or (refresh) not every node ACKed in time.
pub const UNHEALTHY: u8 = 1;
/// Exit status: a usage or connection error.
pub const USAGE: u8 = 2;

/// Why a command could not get an answer; never carries a secret (answers hold none).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot connect to the admin gRPC API at {address}: {error}")]
    Connect { address: String, error: String },
    #[error("the admin API answered {:?}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
}

/// Where the admin gRPC API is, and how to prove who is asking (mTLS).
#[derive(Debug, Clone)]
pub struct Connection {
    /// `host:port`, or a URL.
    pub address: String,
    pub tls: Option<ClientTls>,
}

/// Client TLS: the CA that Tessera's certificate chains to, and this client's certificate.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// How output is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|error| CliError::File {
        path: path.clone(),
        error,
    })
}

/// How long an answer may take, beyond any wait the request asks for (a refresh mints within
/// 20 s or fails).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the admin API at `conn` whose calls fail after `timeout`.
pub async fn connect(
    conn: &Connection,
    timeout: Duration,
) -> Result<AdminClient<Channel>, CliError> {
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let url = if conn.address.contains("://") {
        conn.address.clone()
    } else {
        format!("{scheme}://{}", conn.address)
    };
    let failed = |error: String| CliError::Connect {
        address: conn.address.clone(),
        error,
    };
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| failed(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    if let Some(tls) = &conn.tls {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| failed(e.to_string()))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        // tonic's transport error hides the cause one level down.
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        failed(cause.unwrap_or_else(|| e.to_string()))
    })?;
    Ok(AdminClient::new(channel))
}

/// The column order of `tessera status`.
const TYPES: [&str; 5] = ["cds", "lds", "rds", "sds", "ecds"];

/// Whether a node is unhealthy: a type NACKed, or stale for longer than `stale_after`.
pub fn node_unhealthy(node: &pb::Node, stale_after: Duration) -> bool {
    node.types.iter().any(|t| match t.status() {
        pb::SyncStatus::Nacked => true,
        pb::SyncStatus::Stale => Duration::from_millis(t.stale_for_ms) > stale_after,
        _ => false,
    })
}

/// The exit status for `nodes`.
pub fn nodes_exit(nodes: &[pb::Node], stale_after: Duration) -> u8 {
    if nodes.iter().any(|n| node_unhealthy(n, stale_after)) {
        UNHEALTHY
    } else {
        OK
    }
}

fn status_word(t: &pb::TypeStatus) -> String {
    match t.status() {
        pb::SyncStatus::Synced => "SYNCED".to_owned(),
        pb::SyncStatus::Stale => format!("STALE ({})", age(t.stale_for_ms)),
        pb::SyncStatus::Nacked => "NACKED".to_owned(),
        pb::SyncStatus::NotSent | pb::SyncStatus::Unspecified => "NOT SENT".to_owned(),
    }
}

fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..120_000 => format!("{}s", ms / 1_000),
        _ => format!("{}m", ms / 60_000),
    }
}

fn mode(node: &pb::Node) -> &'static str {
    match node.mode() {
        pb::Mode::Delta => "DELTA",
        pb::Mode::Sotw => "SOTW",
        pb::Mode::Unspecified => "?",
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `tessera status` as a table; NACK messages follow it, one line each.
pub fn nodes_table(nodes: &[pb::Node]) -> String {
    let mut rows = vec![
        [
            "NODE",
            "GATEWAY",
            "MODE",
            "CDS",
            "LDS",
            "RDS",
            "SDS",
            "ECDS",
            "CREDENTIALS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let mut nacks = Vec::new();
    for node in nodes {
        let mut row = vec![node.id.clone(), node.gateway.clone(), mode(node).to_owned()];
        for short in TYPES {
            let cell = node.types.iter().find(|t| t.r#type == short);
            row.push(cell.map_or_else(|| "-".to_owned(), status_word));
            if let Some(t) = cell.filter(|t| t.status() == pb::SyncStatus::Nacked) {
                nacks.push(format!(
                    "{} {}: NACKED {}: {}",
                    node.id,
                    short.to_uppercase(),
                    t.nacked,
                    t.last_nack
                ));
            }
        }
        let current = node.credentials.iter().filter(|c| c.current).count();
        row.push(format!("{current}/{} current", node.credentials.len()));
        rows.push(row);
    }
    let mut out = table(&rows);
    for line in nacks {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// `tessera status --output json`.
pub fn nodes_json(nodes: &[pb::Node], stale_after: Duration) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let types: serde_json::Map<String, Value> = n
                .types
                .iter()
                .map(|t| {
                    let status = t.status().as_str_name();
                    let v = json!({
                        "status": status,
                        "sent": t.sent,
                        "acked": t.acked,
                        "nacked": t.nacked,
                        "lastNack": t.last_nack,
                        "staleForMs": t.stale_for_ms,
                    });
                    (t.r#type.clone(), v)
                })
                .collect();
            let credentials: Vec<Value> = n
                .credentials
                .iter()
                .map(|c| json!({"name": c.name, "version": c.version, "current": c.current}))
                .collect();
            json!({
                "node": n.id,
                "gateway": n.gateway,
                "identity": n.identity,
                "mode": mode(n),
                "healthy": !node_unhealthy(n, stale_after),
                "types": types,
                "credentials": credentials,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

fn credential_state(c: &pb::Credential) -> &'static str {
    match c.state() {
        pb::CredentialState::Valid => "VALID",
        pb::CredentialState::Refreshing => "REFRESHING",
        pb::CredentialState::Failed => "FAILED",
        pb::CredentialState::Revoked => "REVOKED",
        pb::CredentialState::Unspecified => "?",
    }
}

/// The exit status for `credentials`: unhealthy when one is failed or revoked.
pub fn credentials_exit(credentials: &[pb::Credential]) -> u8 {
    let bad = credentials.iter().any(|c| {
        matches!(
            c.state(),
            pb::CredentialState::Failed | pb::CredentialState::Revoked
        )
    });
    if bad { UNHEALTHY } else { OK }
}

fn unix_text(secs: u64) -> String {
    if secs == 0 {
        return "-".to_owned();
    }
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// `tessera status credentials` as a table.
pub fn credentials_table(credentials: &[pb::Credential]) -> String {
    let mut rows = vec![
        [
            "POLICY", "KIND", "STATE", "EXPIRES", "PUSHED", "VERSION", "NODES", "ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for c in credentials {
        rows.push(vec![
            c.policy.clone(),
            c.kind.clone(),
            if c.detail.is_empty() {
                credential_state(c).to_owned()
            } else {
                format!("{} ({})", credential_state(c), c.detail)
            },
            unix_text(c.expires_unix),
            unix_text(c.last_refresh_unix),
            if c.version.is_empty() {
                "-".to_owned()
            } else {
                c.version.clone()
            },
            format!("{}/{}", c.nodes_current, c.nodes_total),
            if c.last_error.is_empty() {
                "-".to_owned()
            } else {
                c.last_error.clone()
            },
        ]);
    }
    table(&rows)
}

/// One credential as JSON.
pub fn credential_json(c: &pb::Credential) -> Value {
    json!({
        "policy": c.policy,
        "name": c.name,
        "kind": c.kind,
        "state": credential_state(c),
        "detail": c.detail,
        "expiresUnix": c.expires_unix,
        "lastRefreshUnix": c.last_refresh_unix,
        "lastError": c.last_error,
        "version": c.version,
        "nodesCurrent": c.nodes_current,
        "nodesTotal": c.nodes_total,
    })
}

/// `tessera status credentials --output json`.
pub fn credentials_json(credentials: &[pb::Credential]) -> Value {
    json!({ "credentials": credentials.iter().map(credential_json).collect::<Vec<_>>() })
}

/// Runs `tessera status`; returns what to print and the exit status.
pub async fn status(
    conn: &Connection,
    credentials: bool,
    output: Output,
    stale_after: Duration,
) -> Result<(String, u8), CliError> {
    let mut client = connect(conn, ANSWER_TIMEOUT).await?;
    if credentials {
        let list = client
            .list_credentials(pb::ListCredentialsRequest {})
            .await?
            .into_inner()
            .credentials;
        let text = match output {
            Output::Table => credentials_table(&list),
            Output::Json => pretty(&credentials_json(&list)),
        };
        return Ok((text, credentials_exit(&list)));
    }
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let text = match output {
        Output::Table => nodes_table(&nodes),
        Output::Json => pretty(&nodes_json(&nodes, stale_after)),
    };
    Ok((text, nodes_exit(&nodes, stale_after)))
}

/// Runs `tessera refresh`; returns what to print and the exit status (unhealthy when
/// `wait_acks` was given and not every node ACKed the new version in time).
pub async fn refresh(
    conn: &Connection,
    policy: &str,
    wait_acks: Option<Duration>,
    output: Output,
) -> Result<(String, u8), CliError> {
    let mut client = connect(conn, ANSWER_TIMEOUT + wait_acks.unwrap_or_default()).await?;
    let answer = client
        .refresh_credential(pb::RefreshCredentialRequest {
            policy: policy.to_owned(),
            wait_acks_ms: wait_acks.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
        .await?
        .into_inner();
    let credential = answer.credential.unwrap_or_default();
    let all_acked = credential.nodes_current >= credential.nodes_total;
    let code = if wait_acks.is_some() && !all_acked {
        UNHEALTHY
    } else {
        OK
    };
    let text = match output {
        Output::Json => pretty(&json!({
            "changed": answer.changed,
            "credential": credential_json(&credential),
        })),
        Output::Table => format!(
            "{policy}: {} version {} ({}), ACKed by {}/{} nodes\n",
            credential_state(&credential),
            if credential.version.is_empty() {
                "-"
            } else {
                &credential.version
            },
            if answer.changed {
                "new value pushed"
            } else {
                "value unchanged"
            },
            credential.nodes_current,
            credential.nodes_total,
        ),
    };
    Ok((text, code))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests;
