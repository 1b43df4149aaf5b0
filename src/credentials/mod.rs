//! Credentials: where each security policy's secret material comes from and how it stays fresh.
//!
//! Every credential, named by its security policy, has one task that publishes *values*
//! through [`Publish`]: material with its expiry, "still served but failing", or why nothing
//! is served. Nothing here knows what Envoy receives; `app` turns each [`Publication`] into a
//! resource, a status and a metric.
//!
//! * `static_key` reads long-lived material (files, Secret documents, AWS credentials files)
//!   and tells a deleted or empty key (revoked at once) from a transient read error.
//! * `reader` runs one task per credential file: re-reads it when told, retries transient
//!   errors with backoff while the last good value keeps serving.
//! * `minters` starts one `supervisor` per short-lived credential; the supervisor owns the
//!   expiry timer and restarts the `rotator` task, which mints (`aws`, `azure`, with `oidc`
//!   tokens) and schedules refreshes.
//! * `client_keys` reads a gateway's client keys (client id -> key), published like any
//!   long-lived credential under the gateway's [`Gateway::client_keys_credential`] name.
//! * `status` holds the typed states the admin API and Kubernetes status show.

pub mod aws;
pub mod azure;
pub mod client_keys;
pub mod minters;
pub mod oidc;
pub mod reader;
pub mod rotator;
pub mod static_key;
pub mod status;
pub mod supervisor;

pub use minters::{Minters, Plan};
pub use reader::StaticKeys;
pub use status::{Closed, CredentialState, CredentialStatus, Revocation, StatusBoard};

#[cfg(doc)]
use crate::model::Gateway;
use crate::model::{AwsKeys, SecretString};
use std::sync::Arc;
use std::time::SystemTime;

/// Credential material; every secret part redacts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// A long-lived API key.
    ApiKey(SecretString),
    /// A short-lived bearer token (Entra ID).
    Bearer(SecretString),
    /// AWS keys (long-lived or STS).
    Aws(AwsKeys),
    /// A gateway's client keys, by client id.
    ClientKeys(client_keys::ClientKeys),
}

/// What a credential task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Serve `material` from now on.
    Serve {
        material: Material,
        expires: Option<SystemTime>,
    },
    /// Keep serving the last material: obtaining a new one failed and is retried.
    Failing {
        error: String,
        expires: Option<SystemTime>,
    },
    /// Serve nothing: the credential's backends fail closed.
    Closed(Closed),
}

impl Publication {
    /// The state this publication puts the credential in, and its expiry.
    pub fn state(&self) -> (CredentialState, Option<SystemTime>) {
        match self {
            Self::Serve { expires, .. } => (CredentialState::Present, *expires),
            Self::Failing { error, expires } => (CredentialState::Failing(error.clone()), *expires),
            Self::Closed(c) => (CredentialState::Closed(c.clone()), None),
        }
    }
}

/// Identifies the one task allowed to publish for a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// Where credential tasks publish; the app connects it to the cache, metrics and status.
pub trait Publish: Send + Sync + 'static {
    /// Makes the caller the only task that speaks for policy `name`'s credential:
    /// publications made with any earlier ticket for it are ignored from now on (a replaced
    /// task may still be finishing on another thread).
    fn register(&self, name: &str) -> Ticket;
    /// Ends `ticket`'s right to publish, if it is still the current one for `name` (a task
    /// stopped for good; a successor of another kind may already have registered).
    fn retire(&self, name: &str, ticket: Ticket);
    /// Publishes a change of policy `name`'s credential, unless `ticket` was superseded.
    fn publish(&self, name: &str, ticket: Ticket, publication: Publication);
    /// Counts one attempt to obtain policy `name`'s credential; `failure` is the fixed class
    /// of why it failed. Only counted: the publication that follows carries the state.
    fn attempted(&self, _name: &str, _ticket: Ticket, _failure: Option<&'static str>) {}
}

/// One task's handle for publishing its credential.
#[derive(Clone)]
pub struct Outlet {
    name: Arc<str>,
    ticket: Ticket,
    sink: Arc<dyn Publish>,
}

impl Outlet {
    /// Registers a new task for policy `name`'s credential with `sink`.
    pub fn register(sink: &Arc<dyn Publish>, name: &str) -> Self {
        Self {
            name: name.into(),
            ticket: sink.register(name),
            sink: sink.clone(),
        }
    }

    /// The policy whose credential this is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends this task's right to publish (see [`Publish::retire`]).
    pub fn retire(&self) {
        self.sink.retire(&self.name, self.ticket);
    }

    /// Publishes a change.
    pub fn publish(&self, publication: Publication) {
        self.sink.publish(&self.name, self.ticket, publication);
    }

    /// Counts an attempt to obtain the credential (see [`Publish::attempted`]).
    pub fn attempted(&self, failure: Option<&'static str>) {
        self.sink.attempted(&self.name, self.ticket, failure);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A sink that records what is published, with the (paused) tokio time of each.
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[derive(Default)]
    pub struct Recorder {
        tickets: Mutex<HashMap<String, u64>>,
        pub log: Mutex<Vec<(Instant, String, Publication)>>,
        /// Every attempt counted: the failure class, `None` for a success.
        pub attempts: Mutex<Vec<Option<&'static str>>>,
    }

    impl Recorder {
        pub fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }

        pub fn sink(self: &Arc<Self>) -> Arc<dyn Publish> {
            self.clone()
        }

        /// Every publication so far, with its time.
        pub fn take(&self) -> Vec<(Instant, Publication)> {
            std::mem::take(&mut *self.log.lock().unwrap())
                .into_iter()
                .map(|(t, _, p)| (t, p))
                .collect()
        }
    }

    impl Publish for Recorder {
        fn register(&self, name: &str) -> Ticket {
            let mut t = self.tickets.lock().unwrap();
            let n = t.entry(name.to_owned()).or_default();
            *n += 1;
            Ticket(*n)
        }

        fn retire(&self, name: &str, ticket: Ticket) {
            let mut t = self.tickets.lock().unwrap();
            if t.get(name) == Some(&ticket.0) {
                t.insert(name.to_owned(), 0);
            }
        }

        fn publish(&self, name: &str, ticket: Ticket, publication: Publication) {
            if self.tickets.lock().unwrap().get(name) != Some(&ticket.0) {
                return;
            }
            self.log
                .lock()
                .unwrap()
                .push((Instant::now(), name.to_owned(), publication));
        }

        fn attempted(&self, name: &str, ticket: Ticket, failure: Option<&'static str>) {
            if self.tickets.lock().unwrap().get(name) == Some(&ticket.0) {
                self.attempts.lock().unwrap().push(failure);
            }
        }
    }
}
