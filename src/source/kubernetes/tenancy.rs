//! What each namespace's objects may point Tessera at: files per namespace, endpoints by origin.
//!
//! Every namespace is a tenant: one `--allow-file-dir` pool for all of them would let a policy
//! in namespace A read files meant for B (or Tessera's own token) and send them to a Backend
//! of its choosing. Tessera's own credentials must therefore live outside every tenant's
//! directory.

use crate::model::AllowedEndpoints;
use crate::source::Restrictions;
use std::path::PathBuf;

/// One `--allow-file-dir` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedDir {
    /// `NS=DIR`: DIR, for namespace NS only.
    Namespace { namespace: String, dir: PathBuf },
    /// `DIR`: each namespace gets its own subdirectory, `DIR/<namespace>`.
    PerNamespace(PathBuf),
}

/// Why an `--allow-file-dir` entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--allow-file-dir {0:?}: the directory must be an absolute path without \"..\", the namespace a DNS label"
)]
pub struct BadAllowedDir(String);

impl std::str::FromStr for AllowedDir {
    type Err = BadAllowedDir;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAllowedDir(s.to_owned());
        let (namespace, dir) = match s.split_once('=') {
            Some((ns, dir)) => (Some(ns), dir),
            None => (None, s),
        };
        let dir = PathBuf::from(dir);
        let escapes = dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !dir.is_absolute() || escapes {
            return Err(bad());
        }
        match namespace {
            None => Ok(AllowedDir::PerNamespace(dir)),
            Some(ns) if is_dns_label(ns) => Ok(AllowedDir::Namespace {
                namespace: ns.to_owned(),
                dir,
            }),
            Some(_) => Err(bad()),
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The operator's limits for every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// `--allow-file-dir` entries.
    pub file_dirs: Vec<AllowedDir>,
    /// Origins endpoint overrides (and discovered token endpoints) may be at.
    pub endpoints: AllowedEndpoints,
    /// `--allow-cross-namespace-xds-clients`: a Gateway's `xdsClients` may name
    /// ServiceAccounts of other namespaces.
    pub cross_namespace_xds_clients: bool,
}

impl Tenancy {
    /// What the objects of `namespace` may use.
    pub fn restrictions(&self, namespace: &str) -> Restrictions {
        let dirs = self.file_dirs.iter().filter_map(|d| match d {
            AllowedDir::Namespace { namespace: ns, dir } => (ns == namespace).then(|| dir.clone()),
            AllowedDir::PerNamespace(dir) => Some(dir.join(namespace)),
        });
        Restrictions {
            file_dirs: Some(dirs.collect()),
            endpoints: Some(self.endpoints.clone()),
            cross_namespace_xds_clients: self.cross_namespace_xds_clients,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_namespace_gets_only_its_own_directories() {
        let tenancy = Tenancy {
            file_dirs: ["/keys", "team-a=/shared/a"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            endpoints: AllowedEndpoints::default(),
            cross_namespace_xds_clients: false,
        };
        let dirs = |ns: &str| tenancy.restrictions(ns).file_dirs.unwrap();
        assert_eq!(
            dirs("team-a"),
            [PathBuf::from("/keys/team-a"), PathBuf::from("/shared/a")]
        );
        assert_eq!(dirs("team-b"), [PathBuf::from("/keys/team-b")]);
    }

    #[test]
    fn entries_are_checked() {
        for bad in ["keys", "/keys/../etc", "Team=/keys", "=/keys", "a=relative"] {
            assert!(bad.parse::<AllowedDir>().is_err(), "{bad}");
        }
    }
}
