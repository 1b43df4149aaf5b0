//! placeholder
use crate::model::Model;
use std::path::{Path, PathBuf};
#[derive(Debug)]
pub struct Loaded { pub model: Model, pub files: Vec<PathBuf> }
#[derive(Debug, thiserror::Error)]
#[error("errors")]
pub struct ConfigErrors(pub Vec<String>);
pub fn load(_p: &Path) -> Result<Loaded, ConfigErrors> { todo!() }
