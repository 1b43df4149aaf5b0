//! Where definitions come from: a directory of YAML documents, reloaded when it changes.

pub mod kubernetes;
pub mod load;
pub mod watch;

pub use load::{ConfigError, ConfigErrors, Loaded, Restrictions, load, load_partial};
