//! A run: connect N simulated Envoys at a steady rate, wait for their initial configuration,
//! rotate a key file K times and measure how each rotation reaches every stream.

use crate::envoy::{Envoy, Event, Rotation, Shared};
use crate::grpc::Target;
use crate::report::{GeneratorReport, InitialReport, Report, RotationReport, ServerReport};
use crate::server::{Usage, usage};
use crate::stats;
use crate::{delta, sotw};
use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// SotW or Delta ADS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Sotw,
    Delta,
}

impl Mode {
    /// The mode's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// Everything a run needs, resolved.
pub struct Plan {
    pub target: Target,
    pub mode: Mode,
    pub streams: u32,
    pub rate: f64,
    /// Every simulated Envoy's node but its id.
    pub node: Node,
    pub server_pid: u32,
    /// How rotations are made; `None`: no rotations.
    pub rotate: Option<Rotate>,
    pub rotations: u32,
    pub rotation_pause: Duration,
    pub rotation_timeout: Duration,
    pub initial_timeout: Duration,
}

/// How a rotation is made.
#[derive(Debug, Clone)]
pub enum Rotate {
    /// Replace this key file atomically.
    File(PathBuf),
    /// Run this shell command with the new value in `XDS_LOAD_VALUE` (e.g. to update a
    /// Kubernetes Secret); the clock starts when it starts.
    Command(String),
}

/// Per stream: still connecting, holding its initial configuration, or ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Pending,
    Ready,
    Failed,
}

/// Where every stream is, with counts kept as it moves.
struct Tally {
    states: Vec<StreamState>,
    counts: [usize; 3],
    failures: Vec<String>,
}

impl Tally {
    fn new(streams: usize) -> Self {
        Self {
            states: vec![StreamState::Pending; streams],
            counts: [streams, 0, 0],
            failures: Vec::new(),
        }
    }

    fn set(&mut self, stream: u32, to: StreamState) {
        if let Some(state) = self.states.get_mut(stream as usize) {
            self.counts[*state as usize] -= 1;
            self.counts[to as usize] += 1;
            *state = to;
        }
    }

    fn fail(&mut self, stream: u32, error: String) {
        self.set(stream, StreamState::Failed);
        // Thousands of streams tend to fail for one reason: keep a few distinct ones.
        if self.failures.len() < 5 && !self.failures.contains(&error) {
            self.failures.push(error);
        }
    }

    fn count(&self, state: StreamState) -> usize {
        self.counts[state as usize]
    }
}

/// Runs `plan` and reports what it measured.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let idle = usage(plan.server_pid)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(events_tx));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::new(plan.streams as usize);

    // Connect at the planned rate while collecting what the streams report.
    let began = Instant::now();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let mut next_connect = tokio::time::Instant::now();
    let mut connected = 0u32;
    let mut initial_elapsed = Vec::with_capacity(plan.streams as usize);
    let mut initial_bytes = Vec::with_capacity(plan.streams as usize);
    let mut last_ready = None;
    let deadline = tokio::time::Instant::now() + plan.initial_timeout;
    while tally.count(StreamState::Pending) > 0 || connected < plan.streams {
        tokio::select! {
            _ = tokio::time::sleep_until(next_connect), if connected < plan.streams => {
                let mut node = plan.node.clone();
                node.id = format!("xds-load-{connected}");
                tasks.spawn(stream(connected, plan.mode, plan.target.clone(), node, shared.clone()));
                connected += 1;
                next_connect += period;
            }
            event = events.recv() => match event {
                Some(Event::Initial { stream, elapsed, at, bytes }) => {
                    tally.set(stream, StreamState::Ready);
                    initial_elapsed.push(elapsed);
                    initial_bytes.push(bytes);
                    last_ready = Some(at);
                }
                Some(Event::Failed { stream, error }) => tally.fail(stream, error),
                None => {}
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let connected_usage = usage(plan.server_pid)?;
    let initial = InitialReport {
        completed: initial_elapsed.len(),
        failed: tally.count(StreamState::Failed),
        pending: tally.count(StreamState::Pending),
        all_complete_ms: (tally.count(StreamState::Ready) == plan.streams as usize)
            .then(|| last_ready.map(|at: Instant| ms(at.saturating_duration_since(began))))
            .flatten(),
        per_stream: stats::spread(&mut initial_elapsed),
        bytes_per_stream: stats::mean(&initial_bytes),
    };

    let mut rotations = Vec::new();
    let mut all_latencies = Vec::new();
    let mut all_bytes = Vec::new();
    if let Some(how) = &plan.rotate {
        for index in 1..=plan.rotations {
            tokio::time::sleep(plan.rotation_pause).await;
            let expected = tally.count(StreamState::Ready);
            let value = rotation_value(index);
            match how {
                Rotate::File(file) => rotate_file(file, &shared, index, value)?,
                Rotate::Command(command) => {
                    rotate_command(command.clone(), &shared, index, value).await?
                }
            }
            let deadline = tokio::time::Instant::now() + plan.rotation_timeout;
            while shared.reached_count() < tally.count(StreamState::Ready) {
                tokio::select! {
                    () = shared.reached_by(tally.count(StreamState::Ready)) => {}
                    event = events.recv() => {
                        if let Some(Event::Failed { stream, error }) = event {
                            tally.fail(stream, error);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let reached = shared.take_reached();
            let mut latencies: Vec<Duration> = reached.iter().map(|r| r.latency).collect();
            let bytes: Vec<u64> = reached.iter().map(|r| r.bytes).collect();
            all_latencies.extend_from_slice(&latencies);
            all_bytes.extend_from_slice(&bytes);
            rotations.push(RotationReport {
                index,
                streams_expected: expected,
                streams_reached: latencies.len(),
                timed_out: expected.saturating_sub(latencies.len()),
                fan_out: stats::spread(&mut latencies),
                bytes_per_stream: stats::mean(&bytes),
            });
        }
    }
    let after_rotations = usage(plan.server_pid)?;
    let generator = usage(std::process::id())?;
    tasks.abort_all();

    Ok(Report {
        mode: plan.mode.name(),
        streams: plan.streams,
        connect_rate: plan.rate,
        node_cluster: plan.node.cluster.clone(),
        node_bytes: plan.node.encoded_len(),
        server: server_report(plan.server_pid, idle, connected_usage, after_rotations),
        generator: GeneratorReport {
            rss_bytes: generator.rss_bytes,
            cpu_seconds: generator.cpu_seconds,
        },
        initial,
        rotation_overall: (!rotations.is_empty()).then(|| RotationReport {
            index: 0,
            streams_expected: rotations.iter().map(|r| r.streams_expected).sum(),
            streams_reached: all_latencies.len(),
            timed_out: rotations.iter().map(|r| r.timed_out).sum(),
            fan_out: stats::spread(&mut all_latencies),
            bytes_per_stream: stats::mean(&all_bytes),
        }),
        rotations,
        streams_failed: tally.count(StreamState::Failed),
        failures: tally.failures,
    })
}

fn server_report(pid: u32, idle: Usage, connected: Usage, after: Usage) -> ServerReport {
    ServerReport {
        pid,
        rss_idle_bytes: idle.rss_bytes,
        rss_connected_bytes: connected.rss_bytes,
        rss_after_rotations_bytes: after.rss_bytes,
        cpu_initial_seconds: connected.cpu_seconds - idle.cpu_seconds,
        cpu_rotations_seconds: after.cpu_seconds - connected.cpu_seconds,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A value no earlier run or rotation wrote.
fn rotation_value(index: u32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("sk-xds-load-{}-{nanos}-{index}", std::process::id())
}

/// Replaces `file` atomically with `value`, after telling the streams what to look for. Blocking
/// on purpose: the write is tiny and the rename is timed from here, not from a thread hop.
fn rotate_file(file: &Path, shared: &Shared, index: u32, value: String) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .context("the rotated file has no file name")?
        .to_string_lossy();
    let tmp = file.with_file_name(format!(".{name}.xds-load.tmp"));
    std::fs::write(&tmp, value.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    shared.set_rotation(Rotation {
        index,
        value,
        written_at: Instant::now(),
    });
    std::fs::rename(&tmp, file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))
}

/// Runs `command` with `value` in `XDS_LOAD_VALUE`, on a blocking thread so the streams keep
/// being served while it runs.
async fn rotate_command(
    command: String,
    shared: &Shared,
    index: u32,
    value: String,
) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("sh");
    child.arg("-c").arg(&command).env("XDS_LOAD_VALUE", &value);
    shared.set_rotation(Rotation {
        index,
        value,
        written_at: Instant::now(),
    });
    let status = tokio::task::spawn_blocking(move || child.status())
        .await?
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

/// One simulated Envoy on its own connection.
async fn stream(index: u32, mode: Mode, target: Target, node: Node, shared: Arc<Shared>) {
    let started = Instant::now();
    let envoy = Envoy::new(index, shared.clone(), started);
    let result = match mode {
        Mode::Sotw => sotw::run(&target, node, envoy).await,
        Mode::Delta => delta::run(&target, node, envoy).await,
    };
    if let Err(error) = result {
        shared.report(Event::Failed {
            stream: index,
            error: format!("{error:#}"),
        });
    }
}
