//! Child processes that die with the test, and peers that announce their ports in a file.

use crate::util::{DEADLINE, eventually};
use std::path::Path;
use std::process::{Child, Command};

/// A child process, killed and reaped when dropped.
pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command, name: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc { child }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a test peer that announces its port(s) in `port_file`; returns the process and the
/// file's content, parsed by `parse`, once it is there.
pub(crate) async fn spawn_peer<T>(
    cmd: &mut Command,
    name: &str,
    port_file: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> (Proc, T) {
    let _ = std::fs::remove_file(port_file);
    let proc = Proc::spawn(cmd, name);
    let value = eventually(&format!("{name} port file"), DEADLINE, || {
        let content = std::fs::read_to_string(port_file).ok();
        let parsed = content.as_deref().and_then(&parse);
        async move { parsed }
    })
    .await;
    (proc, value)
}

/// A port file holding one port number.
pub(crate) fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse().ok()
}
