//! Envoy resource names, derived from the objects they come from so a config dump reads back.

/// The CDS cluster of a Backend.
pub fn cluster(backend: &str) -> String {
    format!("backend/{backend}")
}

/// The SDS secret (or ECDS config) carrying a security policy's credential.
pub fn credential(policy: &str) -> String {
    format!("credential/{policy}")
}

/// The LDS listener of a gateway listener.
pub fn listener(gateway: &str, listener: &str) -> String {
    format!("listener/{gateway}/{listener}")
}

/// The RDS route configuration a gateway listener uses.
pub fn route_config(gateway: &str, listener: &str) -> String {
    format!("route/{gateway}/{listener}")
}

/// One Envoy route: a rule's match of a Route object.
pub fn route(route: &str, rule: usize, matched: usize) -> String {
    format!("route/{route}/rule/{rule}/match/{matched}")
}

/// The CDS cluster Envoy fetches a gateway's remote JWKS through.
pub fn jwks_cluster(gateway: &str) -> String {
    format!("jwks/{gateway}")
}
