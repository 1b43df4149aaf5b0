//! `gen-config`: a file-mode configuration for Tessera with one Gateway and B OpenAI backends,
//! each with its own security policy and key file, chosen by a header.

use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Backends (and their policies) per YAML file, and rules per Route: well under Tessera's
/// 1 MiB per file and 1,024 rules per Route.
const BACKENDS_PER_FILE: usize = 500;
const RULES_PER_ROUTE: usize = 1000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub backends: usize,
    pub node_cluster: String,
    /// DNS SANs listed in the Gateway's `xdsClients` (for runs with mTLS).
    pub xds_client_dns: Vec<String>,
    /// URI SANs (SPIFFE ids) listed in the Gateway's `xdsClients`.
    pub xds_client_spiffe: Vec<String>,
    /// Where every backend's endpoint points (loopback; nothing is sent there).
    pub upstream_port: u16,
}

/// The header that selects a backend.
pub const SELECT_HEADER: &str = "x-backend";

/// Backend `i`'s name.
pub fn backend(i: usize) -> String {
    format!("backend-{i}")
}

/// Backend `i`'s key file, relative to the configuration directory.
pub fn key_file(i: usize) -> PathBuf {
    PathBuf::from("keys").join(format!("{}.key", backend(i)))
}

/// The files of the configuration, relative to its directory, with their contents.
pub fn render(spec: &Spec) -> Vec<(PathBuf, String)> {
    let mut files = vec![(PathBuf::from("gateway.yaml"), gateway(spec))];
    let indices: Vec<usize> = (0..spec.backends).collect();
    for (n, chunk) in indices.chunks(BACKENDS_PER_FILE).enumerate() {
        let mut doc = String::new();
        for &i in chunk {
            let _ = write!(
                doc,
                "---\napiVersion: tessera.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {b}}}\n\
                 spec:\n  provider: OpenAI\n  endpoint: http://127.0.0.1:{port}\n  securityPolicy: {b}-key\n\
                 ---\napiVersion: tessera.dev/v1alpha1\nkind: BackendSecurityPolicy\nmetadata: {{name: {b}-key}}\n\
                 spec:\n  type: APIKey\n  apiKey: {{file: {file}}}\n",
                b = backend(i),
                port = spec.upstream_port,
                file = key_file(i).display(),
            );
        }
        files.push((PathBuf::from(format!("backends-{n:03}.yaml")), doc));
    }
    for (n, chunk) in indices.chunks(RULES_PER_ROUTE).enumerate() {
        let mut doc = format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {{name: load-{n}}}\n\
             spec:\n  gateway: load\n  rules:\n"
        );
        for &i in chunk {
            let _ = write!(
                doc,
                "  - matches: [{{pathPrefix: /v1/, headers: [{{name: {SELECT_HEADER}, value: {b}}}]}}]\n    backends: [{{name: {b}}}]\n",
                b = backend(i),
            );
        }
        files.push((PathBuf::from(format!("routes-{n:03}.yaml")), doc));
    }
    for i in 0..spec.backends {
        files.push((key_file(i), format!("sk-xds-load-{}-initial", backend(i))));
    }
    files
}

fn gateway(spec: &Spec) -> String {
    let mut doc = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: load}}\nspec:\n  \
         nodeCluster: {:?}\n  listeners:\n  - {{name: http, address: 127.0.0.1, port: 10000}}\n",
        spec.node_cluster
    );
    if !spec.xds_client_dns.is_empty() || !spec.xds_client_spiffe.is_empty() {
        doc.push_str("  xdsClients:\n");
        for dns in &spec.xds_client_dns {
            let _ = writeln!(doc, "  - dnsName: {dns:?}");
        }
        for uri in &spec.xds_client_spiffe {
            let _ = writeln!(doc, "  - spiffe: {uri:?}");
        }
    }
    doc
}

/// Writes `spec`'s configuration into `dir`, which must be empty or not exist yet (files left
/// from a larger configuration would still be loaded).
pub fn write(dir: &Path, spec: &Spec) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty; give a new directory", dir.display());
    }
    std::fs::create_dir_all(dir.join("keys"))
        .with_context(|| format!("creating {}", dir.display()))?;
    for (path, content) in render(spec) {
        let path = dir.join(path);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(backends: usize) -> Spec {
        Spec {
            backends,
            node_cluster: "load-gw".to_owned(),
            xds_client_dns: vec!["envoy.load.local".to_owned()],
            xds_client_spiffe: vec!["spiffe://load/envoy".to_owned()],
            upstream_port: 18080,
        }
    }

    #[test]
    fn tessera_loads_the_generated_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        write(&config, &spec(1201)).unwrap();
        let loaded = match tessera::source::load(&config) {
            Ok(loaded) => loaded,
            Err(errors) => panic!(
                "{:#?}",
                errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>()
            ),
        };
        let model = &loaded.model;
        assert_eq!(model.gateways.len(), 1);
        let gateway = model.gateways.values().next().unwrap();
        assert_eq!(gateway.node_cluster, "load-gw");
        assert_eq!(gateway.xds_clients.len(), 2);
        assert_eq!(model.backends.len(), 1201);
        assert_eq!(model.policies.len(), 1201);
        // 1,201 rules need two Routes (at most 1,024 rules each).
        assert_eq!(model.routes.len(), 2);
    }

    #[test]
    fn every_backend_has_its_own_key_file() {
        let files = render(&spec(3));
        let keys: Vec<_> = files
            .iter()
            .filter(|(p, _)| p.starts_with("keys"))
            .collect();
        assert_eq!(keys.len(), 3);
        let values: std::collections::HashSet<_> = keys.iter().map(|(_, v)| v).collect();
        assert_eq!(values.len(), 3);
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.yaml"), "").unwrap();
        assert!(write(dir.path(), &spec(1)).is_err());
    }
}
