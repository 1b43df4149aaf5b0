//! What a run measured: one JSON object, or a table for people.

use crate::stats::Spread;
use serde::Serialize;
use std::fmt::Write as _;

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub streams: u32,
    pub connect_rate: f64,
    pub node_cluster: String,
    /// Encoded size of the node each stream sends on its first request.
    pub node_bytes: usize,
    pub server: ServerReport,
    /// This process at the end: it shares the machine with the server.
    pub generator: GeneratorReport,
    pub initial: InitialReport,
    pub rotations: Vec<RotationReport>,
    /// Every rotation together (`index` 0).
    pub rotation_overall: Option<RotationReport>,
    /// Streams that ended during the run (initial configuration or rotations).
    pub streams_failed: usize,
    /// A few distinct reasons streams ended.
    pub failures: Vec<String>,
}

/// The server process, from `/proc`.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    pub rss_idle_bytes: u64,
    pub rss_connected_bytes: u64,
    pub rss_after_rotations_bytes: u64,
    /// CPU from just before the first connection until every stream held its configuration.
    pub cpu_initial_seconds: f64,
    pub cpu_rotations_seconds: f64,
}

/// The load generator itself.
#[derive(Debug, Serialize)]
pub struct GeneratorReport {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Streams getting their initial configuration.
#[derive(Debug, Serialize)]
pub struct InitialReport {
    pub completed: usize,
    pub failed: usize,
    pub pending: usize,
    /// From the first connection to the last stream holding everything; `None` unless all did.
    pub all_complete_ms: Option<f64>,
    /// Per stream, from its connection to holding everything.
    pub per_stream: Option<Spread>,
    pub bytes_per_stream: f64,
}

/// One rotation (or all of them, `index` 0).
#[derive(Debug, Serialize)]
pub struct RotationReport {
    pub index: u32,
    pub streams_expected: usize,
    pub streams_reached: usize,
    pub timed_out: usize,
    pub fan_out: Option<Spread>,
    /// Encoded response bytes a stream received from the write until it held the new value.
    pub bytes_per_stream: f64,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("{:>8.1} {:>8.1} {:>8.1}", s.p50_ms, s.p99_ms, s.max_ms),
        None => format!("{:>8} {:>8} {:>8}", "-", "-", "-"),
    }
}

impl Report {
    /// Why the run is incomplete: streams that failed or never finished, or missed rotations.
    pub fn problem(&self) -> Option<String> {
        let i = &self.initial;
        let missed: usize = self.rotations.iter().map(|r| r.timed_out).sum();
        (self.streams_failed + i.pending + missed > 0).then(|| {
            format!(
                "incomplete run: {} streams failed, {} never held their configuration, {missed} rotation deliveries timed out",
                self.streams_failed, i.pending
            )
        })
    }

    /// The report as a table.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let s = &self.server;
        let i = &self.initial;
        let _ = writeln!(
            out,
            "{} streams, {} ADS, node cluster {:?} ({} bytes a node), connecting at {}/s; server pid {}",
            self.streams, self.mode, self.node_cluster, self.node_bytes, self.connect_rate, s.pid
        );
        let _ = writeln!(
            out,
            "server RSS: idle {}, after connect {}, after rotations {}",
            mib(s.rss_idle_bytes),
            mib(s.rss_connected_bytes),
            mib(s.rss_after_rotations_bytes)
        );
        let _ = writeln!(
            out,
            "server CPU: {:.2} s serving the initial configuration, {:.2} s over the rotations",
            s.cpu_initial_seconds, s.cpu_rotations_seconds
        );
        let _ = writeln!(
            out,
            "load generator: RSS {}, CPU {:.2} s",
            mib(self.generator.rss_bytes),
            self.generator.cpu_seconds
        );
        let all = i
            .all_complete_ms
            .map_or("not all streams".to_owned(), |v| format!("{v:.0} ms"));
        let _ = writeln!(
            out,
            "initial: {} complete, {} failed, {} pending; all held everything after {all}; {:.0} bytes per stream",
            i.completed, i.failed, i.pending, i.bytes_per_stream
        );
        let _ = writeln!(
            out,
            "initial per stream (ms)  p50      p99      max\n                      {}",
            spread(i.per_stream)
        );
        if !self.rotations.is_empty() {
            let _ = writeln!(
                out,
                "rotation  reached/expected  timed out  fan-out p50      p99      max (ms)  bytes/stream"
            );
            for r in self.rotations.iter().chain(&self.rotation_overall) {
                let label = if r.index == 0 {
                    "all".to_owned()
                } else {
                    r.index.to_string()
                };
                let _ = writeln!(
                    out,
                    "{label:>8}  {:>7}/{:<8}  {:>9}  {}  {:>12.0}",
                    r.streams_reached,
                    r.streams_expected,
                    r.timed_out,
                    spread(r.fan_out),
                    r.bytes_per_stream
                );
            }
        }
        for f in &self.failures {
            let _ = writeln!(out, "stream failure: {f}");
        }
        out
    }
}
