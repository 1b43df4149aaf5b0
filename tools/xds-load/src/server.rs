//! The server under load: spawned here or attached to by pid, and what `/proc` says about it.

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Resident memory and CPU time of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads `pid`'s resident set (`/proc/PID/status` VmRSS) and CPU time (`/proc/PID/stat` utime + stime).
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Ok(Usage {
        rss_bytes: vm_rss(&status).context("no VmRSS in /proc/PID/status")?,
        cpu_seconds: cpu_ticks(&stat).context("unexpected /proc/PID/stat")? as f64 / ticks,
    })
}

/// VmRSS of a `/proc/PID/status` text, in bytes.
pub fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` text, in clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A free loopback port, as the kernel picks it.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A Tessera this tool started; killed when dropped.
pub struct Spawned {
    child: Child,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `bin serve --config CONFIG` on free loopback ports with `extra` arguments, logging to `log`.
    pub fn start(
        bin: &Path,
        config: &Path,
        extra: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let xds = free_port()?;
        let admin = free_port()?;
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--xds-address")
            .arg(xds.to_string())
            .arg("--admin-address")
            .arg(admin.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            xds,
            admin,
            log,
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200 (a valid configuration is served).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the server exited ({status}) before it was ready; see {}",
                    self.log.display()
                );
            }
            if readyz(self.admin).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the server was not ready within {timeout:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the admin API at `admin` answers `/readyz` with 200.
fn readyz(admin: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\ttessera\nVmPeak:\t  9000 kB\nVmRSS:\t   13312 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(13312 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (tes) sera) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_usage() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
    }
}
