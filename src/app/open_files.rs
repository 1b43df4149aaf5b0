//! The open-file limit: every ADS stream is a socket, so a fleet needs more than the usual
//! soft limit of 1,024.

use tracing::{info, warn};

/// Raises the soft limit of open files as far as the hard limit allows (what an unprivileged
/// process may do), and logs what it is.
pub fn raise() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(
            open_files = limit,
            "open-file limit (each ADS connection holds one)"
        ),
        Err(error) => warn!(%error, "cannot raise the open-file limit"),
    }
}
