//! Small utilities: ports, paths, polling, time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A port below the ephemeral range (32768+), so no outgoing connection can hold it.
pub fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts in its own block, so parallel test binaries rarely probe the
    // same ports.
    let _ = NEXT.compare_exchange(
        0,
        20000 + (std::process::id() % 80) as u16 * 150,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32768, "ran out of test ports");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// The repository root (this crate lives in `tests/harness`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The Python that `testenv/setup` installed the peers' dependencies into.
pub fn python() -> PathBuf {
    let venv = repo().join("testenv/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Polls `f` until it returns Some, or panics with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `content` to `path` the way careful tools rotate files: temp file, then rename.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-rotate");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Seconds since the epoch, as the Python peers record time.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
