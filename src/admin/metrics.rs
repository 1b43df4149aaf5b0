//! `/metrics` in the Prometheus text format. Every label value comes from a bounded set: policy
//! names and gateways' node clusters from the configuration (unknown ones folded into one value),
//! the fixed xDS types, states and failure classes. Never a node id, never a value.

use crate::credentials::CredentialState;
use crate::state::AppState;
use crate::xds::status::credentials::{BUCKETS, SHARES};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `gateway` label of streams whose node cluster names no configured gateway.
pub const UNKNOWN_GATEWAY: &str = "_unknown";

/// Every state `tessera_credential_state` reports, so each credential has all of them.
const STATES: [&str; 6] = [
    "present",
    "failing",
    "pending",
    "unavailable",
    "expired",
    "revoked",
];

/// The xDS types `tessera_xds_nacks_total` always reports (`unknown` only once seen).
const TYPES: [&str; 5] = ["cds", "ecds", "lds", "rds", "sds"];

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Self { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let name = self.name;
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
            return;
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Escapes a label value (names from the configuration may hold any text).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole `/metrics` body at `now`.
pub fn render(state: &AppState, now: SystemTime) -> String {
    let mut out = String::new();
    counters(state, &mut out);
    xds(state, &mut out);
    credentials(state, now, &mut out);
    out
}

fn counters(state: &AppState, out: &mut String) {
    let r = &state.registry;
    let m = &state.metrics;
    let lines: [(&str, &str, &str, u64); 8] = [
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
            "tessera_xds_refused_streams_total",
            "counter",
            "ADS streams refused because their proven identity may not have the claimed gateway.",
            r.refused_total.load(Ordering::Relaxed),
        ),
        (
            "tessera_xds_unreferenced_credential_requests_total",
            "counter",
            "Credential names requested by nodes whose gateway does not reference them (nothing sent).",
            r.unreferenced_credentials_total.load(Ordering::Relaxed),
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
}

fn xds(state: &AppState, out: &mut String) {
    let r = &state.registry;
    let mut nacks: BTreeMap<&str, u64> = TYPES.iter().map(|t| (*t, 0)).collect();
    for e in r.nacks_by_type.iter() {
        nacks.insert(e.key(), *e.value());
    }
    let mut f = Family::new(
        out,
        "tessera_xds_nacks_total",
        "counter",
        "Updates Envoy rejected, by xDS type.",
    );
    for (t, n) in nacks {
        f.sample(&[("type", t)], n);
    }

    // Every configured gateway in both modes, so "no node connected" is a 0, not an absence.
    let served = state.cache.state();
    let mut nodes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for gateway in served.gateways.keys() {
        for mode in ["sotw", "delta"] {
            nodes.insert((gateway, mode), 0);
        }
    }
    let streams: Vec<(String, bool)> = r
        .streams
        .iter()
        .map(|s| (s.node_cluster.clone(), s.delta))
        .collect();
    for (cluster, delta) in &streams {
        let gateway = match served.gateways.get_key_value(cluster) {
            Some((name, _)) => name.as_str(),
            None => UNKNOWN_GATEWAY,
        };
        let mode = if *delta { "delta" } else { "sotw" };
        *nodes.entry((gateway, mode)).or_default() += 1;
    }
    let mut f = Family::new(
        out,
        "tessera_xds_connected_nodes",
        "gauge",
        "Connected ADS streams by gateway (its node cluster) and protocol mode.",
    );
    for ((gateway, mode), n) in nodes {
        f.sample(&[("gateway", gateway), ("mode", mode)], n);
    }
    stale_nodes(state, &served, out);
    propagation(state, out);
}

/// How long a node may leave an update unanswered before `tessera_xds_stale_nodes` counts it
/// (the default of `tessera status --stale-after`).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Nodes with an update unanswered for longer than [`STALE_AFTER`], per gateway; the same rule
/// as `tessera status`.
fn stale_nodes(state: &AppState, served: &crate::xds::State, out: &mut String) {
    let now = SystemTime::now();
    let mut stale: BTreeMap<&str, u64> = served.gateways.keys().map(|g| (g.as_str(), 0)).collect();
    for s in state.registry.streams.iter() {
        if s.stale(now, STALE_AFTER) {
            let gateway = match served.gateways.get_key_value(&s.node_cluster) {
                Some((name, _)) => name.as_str(),
                None => UNKNOWN_GATEWAY,
            };
            *stale.entry(gateway).or_default() += 1;
        }
    }
    let mut f = Family::new(
        out,
        "tessera_xds_stale_nodes",
        "gauge",
        "Connected nodes that left an update unanswered for more than a minute, by gateway.",
    );
    for (gateway, n) in stale {
        f.sample(&[("gateway", gateway)], n);
    }
}

/// `tessera_credential_propagation_seconds{percent}`: from a rotation's push until that share
/// of the nodes it was sent to ACKed it.
fn propagation(state: &AppState, out: &mut String) {
    let histograms = state.registry.credentials.propagation();
    let name = "tessera_credential_propagation_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds from a credential rotation's push until percent% of the nodes that need it ACKed it.\n# TYPE {name} histogram"
    );
    for (share, h) in SHARES.iter().zip(&histograms) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{percent=\"{share}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{percent=\"{share}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{percent=\"{share}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{percent=\"{share}\"}} {}", h.count);
    }
}

fn credentials(state: &AppState, now: SystemTime, out: &mut String) {
    let mut board: Vec<(String, CredentialState, Option<SystemTime>)> = state
        .board
        .0
        .iter()
        .map(|e| {
            let s = e.value();
            let policy = s.name.strip_prefix("credential/").unwrap_or(&s.name);
            (policy.to_owned(), s.state.clone(), s.expires)
        })
        .collect();
    board.sort_by(|a, b| a.0.cmp(&b.0));

    let mut f = Family::new(
        out,
        "tessera_credential_state",
        "gauge",
        "1 for each credential's current state.",
    );
    for (policy, s, _) in &board {
        for state in STATES {
            f.sample(
                &[("credential", policy), ("state", state)],
                u8::from(s.name() == state),
            );
        }
    }
    let expiring: Vec<(&String, f64)> = board
        .iter()
        .filter_map(|(p, _, e)| Some((p, unix_seconds(e.as_ref()?))))
        .collect();
    let mut f = Family::new(
        out,
        "tessera_credential_expiry_timestamp_seconds",
        "gauge",
        "Expiry of the short-lived credential served, in seconds since the epoch.",
    );
    for (policy, at) in &expiring {
        f.sample(&[("credential", policy)], at);
    }
    let now = unix_seconds(&now);
    let mut f = Family::new(
        out,
        "tessera_credential_seconds_to_expiry",
        "gauge",
        "Seconds until the short-lived credential served expires (negative once expired).",
    );
    for (policy, at) in &expiring {
        f.sample(&[("credential", policy)], at - now);
    }

    let m = &state.metrics;
    let mut attempts: Vec<(String, u64)> = m
        .credential_attempts
        .iter()
        .map(|e| (e.key().clone(), *e.value()))
        .collect();
    attempts.sort();
    let mut f = Family::new(
        out,
        "tessera_credential_refresh_attempts_total",
        "counter",
        "Attempts to mint a short-lived credential.",
    );
    for (policy, n) in &attempts {
        f.sample(&[("credential", policy)], n);
    }
    let mut failures: Vec<((String, &str), u64)> = m
        .credential_failures
        .iter()
        .map(|e| (e.key().clone(), *e.value()))
        .collect();
    failures.sort();
    let mut f = Family::new(
        out,
        "tessera_credential_refresh_failures_total",
        "counter",
        "Failed attempts to mint a short-lived credential, by failure class.",
    );
    for ((policy, reason), n) in &failures {
        f.sample(&[("credential", policy), ("reason", reason)], n);
    }
}

fn unix_seconds(t: &SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
