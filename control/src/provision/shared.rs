//! `shared`: a database and keyspace per session on servers named in `[shared]`.

use super::{ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps};
use crate::config::SharedConfig;
use async_trait::async_trait;
use stacklab_types::stack::{CacheEngine, DatabaseEngine};
use std::path::PathBuf;

#[derive(Debug)]
pub struct Shared {
    cfg: SharedConfig,
    files: PathBuf,
}

impl Shared {
    pub fn new(cfg: SharedConfig, files: PathBuf) -> Self {
        Self { cfg, files }
    }
}

#[async_trait]
impl Provisioner for Shared {
    fn name(&self) -> &'static str {
        "shared"
    }
    fn available(&self) -> Result<(), String> {
        let _ = (&self.cfg, &self.files);
        Err("not written yet".into())
    }
    fn database(&self, _: DatabaseEngine) -> Result<(), String> {
        Err("not written yet".into())
    }
    fn cache(&self, _: CacheEngine) -> Result<(), String> {
        Err("not written yet".into())
    }
    async fn provision(
        &self,
        _: &ProvisionRequest<'_>,
        _: &Steps,
    ) -> Result<Provisioned, ProvisionError> {
        Err(ProvisionError::new(Some("provisioner"), "not written yet"))
    }
    async fn teardown(&self, _: &str, _: &Steps) -> Result<(), ProvisionError> {
        Ok(())
    }
    async fn leftovers(&self) -> Result<Vec<String>, ProvisionError> {
        Ok(vec![])
    }
}
