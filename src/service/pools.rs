//! Pool use cases: register or replace a manifest, rotate secrets, read, delete, and load at start.

use super::{Gateway, ServiceError, canonical_json, problem};
use crate::actors::supervisor::{CancelRunOf, RegisterPool, RemovePool, UpsertPool};
use crate::crypto::{binding, sha256_hex};
use crate::domain::ids::{JobId, PoolName, SecretKey};
use crate::domain::pool::PoolRecord;
use crate::domain::run::now_millis;
use crate::domain::secrets::SecretBundle;
use crate::manifest::{Manifest, Warning};
use crate::scheduler::PoolRuntime;
use crate::store::{PoolStats as StoredStats, RunFilter};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Largest manifest accepted (bytes of its text, or of its JSON when sent as an object).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// A manifest as a client sent it: a JSON document, or YAML/JSON text.
#[derive(Debug, Clone)]
pub enum ManifestInput {
    /// A JSON object.
    Document(serde_json::Value),
    /// YAML or JSON text.
    Text(String),
}

/// A registered pool with its counts, for the pool view.
#[derive(Debug, Clone)]
pub struct PoolSummary {
    /// The stored pool.
    pub record: PoolRecord,
    /// Counts by state.
    pub stats: StoredStats,
    /// Call health (circuit breaker).
    pub health: crate::scheduler::PoolHealth,
}

impl Gateway {
    /// The egress policy's verdict on the URLs a manifest names (resolved now), before
    /// anything is stored or sent: every refusal as a 422 problem under `manifest`.
    pub(super) async fn check_egress(
        &self,
        name: &PoolName,
        manifest: &Manifest,
    ) -> Result<(), ServiceError> {
        let refused = self
            .deps
            .adapter
            .egress()
            .check_manifest(name.as_str(), manifest)
            .await;
        if refused.is_empty() {
            return Ok(());
        }
        Err(ServiceError::Validation(
            refused
                .into_iter()
                .map(|(path, message)| problem(&prefixed("manifest", &path), message))
                .collect(),
        ))
    }

    /// Parses and validates a manifest with the configured defaults.
    ///
    /// # Errors
    /// [`ServiceError::Validation`] listing every problem.
    pub fn compile_manifest(&self, input: &ManifestInput) -> Result<Manifest, ServiceError> {
        let size = match input {
            ManifestInput::Document(doc) => doc.to_string().len(),
            ManifestInput::Text(text) => text.len(),
        };
        if size > MAX_MANIFEST_BYTES {
            return Err(ServiceError::Validation(vec![problem(
                "manifest",
                format!("the manifest is {size} bytes; the limit is {MAX_MANIFEST_BYTES}"),
            )]));
        }
        let compiled = match input {
            ManifestInput::Document(doc) => Manifest::from_value(doc, &self.defaults),
            ManifestInput::Text(text) => Manifest::parse(text, &self.defaults),
        };
        compiled.map_err(|e| {
            ServiceError::Validation(
                e.problems
                    .into_iter()
                    .map(|p| problem(&prefixed("manifest", &p.path), p.message))
                    .collect(),
            )
        })
    }

    /// Registers a pool, or replaces its manifest (and its secrets when given).
    /// Returns the stored record and whether it was created.
    ///
    /// # Errors
    /// Validation problems, missing secrets, or an internal failure.
    pub async fn register_pool(
        &self,
        name: PoolName,
        input: ManifestInput,
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<(PoolRecord, bool), ServiceError> {
        let manifest = self.compile_manifest(&input)?;
        // The egress policy, before anything is stored or sent.
        self.check_egress(&name, &manifest).await?;
        let existing = self.deps.store.get_pool(&name).await?;
        let bundle = match (secrets, &existing) {
            (Some(given), _) => parse_secrets(given)?,
            (None, Some(stored)) => self.open_secrets(stored)?,
            (None, None) => SecretBundle::default(),
        };
        check_secrets(&manifest, &bundle)?;
        // Everything that can refuse the pool (its TLS settings among them) is checked before
        // anything is stored: a pool that is stored can be loaded.
        let source = manifest.source().clone();
        let format = manifest.format.as_str().to_owned();
        let warnings =
            serde_json::to_string(&manifest.warnings).unwrap_or_else(|_| "[]".to_owned());
        let mut runtime = self.runtime(&name, manifest, bundle.clone())?;
        let now = now_millis();
        let record = PoolRecord {
            name: name.clone(),
            revision: 1,
            digest: sha256_hex(canonical_json(&source).as_bytes()),
            format,
            manifest: source.to_string(),
            secrets_sealed: self.deps.sealer.seal(
                &bundle.to_json_bytes(),
                &binding::pool_secrets(name.as_str()),
            )?,
            secret_keys: bundle.keys().map(str::to_owned).collect(),
            warnings,
            created_at: now,
            updated_at: now,
        };
        let stored = self.deps.store.put_pool(record).await?;
        runtime.revision = stored.revision;
        self.activate(runtime).await?;
        tracing::info!(pool = %name, revision = stored.revision, "pool registered");
        Ok((stored, existing.is_none()))
    }

    /// Replaces a pool's whole secret bundle.
    ///
    /// # Errors
    /// Unknown pool, missing secrets, or an internal failure.
    pub async fn set_secrets(
        &self,
        name: &PoolName,
        secrets: BTreeMap<String, String>,
    ) -> Result<PoolRecord, ServiceError> {
        let stored = self.pool(name).await?;
        let manifest = self.compile_manifest(&stored_manifest(&stored)?)?;
        let bundle = parse_secrets(secrets)?;
        check_secrets(&manifest, &bundle)?;
        let sealed = self.deps.sealer.seal(
            &bundle.to_json_bytes(),
            &binding::pool_secrets(name.as_str()),
        )?;
        let keys = bundle.keys().map(str::to_owned).collect();
        let mut runtime = self.runtime(name, manifest, bundle)?;
        let updated = self
            .deps
            .store
            .put_pool_secrets(name, sealed, keys, now_millis())
            .await?
            .ok_or_else(|| ServiceError::PoolNotFound(name.to_string()))?;
        runtime.revision = updated.revision;
        self.activate(runtime).await?;
        Ok(updated)
    }

    /// Builds a pool's runtime (its HTTP client with the manifest's TLS settings). The revision
    /// is set once the pool is stored.
    pub(super) fn runtime(
        &self,
        name: &PoolName,
        manifest: Manifest,
        bundle: SecretBundle,
    ) -> Result<PoolRuntime, ServiceError> {
        PoolRuntime::new(
            name.clone(),
            0,
            Arc::new(manifest),
            bundle,
            self.deps.adapter.egress(),
        )
        .map_err(|e| {
            ServiceError::Validation(vec![problem("manifest.tls.caCertPem", e.to_string())])
        })
    }

    /// Hands a pool's runtime to its actor (started or swapped in); a new actor takes over the
    /// pool's unfinished runs from the store. OAuth2 tokens of credentials the pool no longer
    /// has are dropped.
    async fn activate(&self, runtime: PoolRuntime) -> Result<(), ServiceError> {
        self.deps.adapter.prune_tokens(&runtime);
        self.supervisor
            .send(RegisterPool(runtime))
            .await
            .map_err(|_| ServiceError::Unavailable)
    }

    /// A stored pool.
    ///
    /// # Errors
    /// [`ServiceError::PoolNotFound`].
    pub async fn pool(&self, name: &PoolName) -> Result<PoolRecord, ServiceError> {
        self.deps
            .store
            .get_pool(name)
            .await?
            .ok_or_else(|| ServiceError::PoolNotFound(name.to_string()))
    }

    /// A stored pool with its counts.
    ///
    /// # Errors
    /// [`ServiceError::PoolNotFound`] or an internal failure.
    pub async fn pool_summary(&self, record: PoolRecord) -> Result<PoolSummary, ServiceError> {
        let stats = self.deps.store.pool_stats(&record.name).await?;
        let health = self.deps.adapter.health(&record.name);
        Ok(PoolSummary {
            record,
            stats,
            health,
        })
    }

    /// Every stored pool with its counts.
    ///
    /// # Errors
    /// An internal failure.
    pub async fn list_pools(&self) -> Result<Vec<PoolSummary>, ServiceError> {
        let mut out = Vec::new();
        for record in self.deps.store.list_pools().await? {
            out.push(self.pool_summary(record).await?);
        }
        Ok(out)
    }

    /// Deletes a pool. With unfinished runs: refused, unless `force`, which cancels them first
    /// (their releases still go out through the retiring pool actor).
    ///
    /// # Errors
    /// Unknown pool, a pool with unfinished runs, or an internal failure.
    pub async fn delete_pool(&self, name: &PoolName, force: bool) -> Result<(), ServiceError> {
        self.pool(name).await?;
        let unfinished = self.unfinished_runs(name).await?;
        if !unfinished.is_empty() {
            if !force {
                return Err(ServiceError::PoolBusy(name.to_string()));
            }
            for job_id in unfinished {
                let (reply, answer) = oneshot::channel();
                self.supervisor
                    .send(CancelRunOf {
                        pool: name.clone(),
                        job_id,
                        reply,
                    })
                    .await
                    .map_err(|_| ServiceError::Unavailable)?;
                // A run that finished meanwhile needs no cancel.
                let _ = answer.await;
            }
        }
        self.deps.store.delete_pool(name).await?;
        self.supervisor
            .send(RemovePool(name.clone()))
            .await
            .map_err(|_| ServiceError::Unavailable)?;
        self.deps.adapter.forget_pool(name);
        tracing::info!(pool = %name, force, "pool deleted");
        Ok(())
    }

    async fn unfinished_runs(&self, name: &PoolName) -> Result<Vec<JobId>, ServiceError> {
        let mut ids = Vec::new();
        for state in crate::domain::state::RunState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
        {
            let mut after = None;
            loop {
                let page = self
                    .deps
                    .store
                    .list_runs(RunFilter {
                        pool: Some(name.clone()),
                        state: Some(state),
                        limit: 1000,
                        after,
                    })
                    .await?;
                ids.extend(page.runs.into_iter().map(|run| run.job_id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(ids)
    }

    /// Loads every stored pool into the actors. Pools that no longer compile (for example
    /// after an upgrade) are logged and skipped; their runs wait.
    ///
    /// # Errors
    /// An internal failure reading the store.
    pub async fn load_pools(&self) -> Result<usize, ServiceError> {
        let mut loaded = 0;
        for record in self.deps.store.list_pools().await? {
            match self.runtime_of(&record) {
                Ok(runtime) => {
                    self.supervisor
                        .send(UpsertPool(runtime))
                        .await
                        .map_err(|_| ServiceError::Unavailable)?;
                    loaded += 1;
                }
                Err(e) => {
                    tracing::error!(pool = %record.name, error = %e, "cannot load a stored pool")
                }
            }
        }
        Ok(loaded)
    }

    pub(super) fn runtime_of(&self, record: &PoolRecord) -> Result<PoolRuntime, ServiceError> {
        let manifest = self.compile_manifest(&stored_manifest(record)?)?;
        let bundle = self.open_secrets(record)?;
        PoolRuntime::new(
            record.name.clone(),
            record.revision,
            Arc::new(manifest),
            bundle,
            self.deps.adapter.egress(),
        )
        .map_err(|e| ServiceError::Internal(e.into()))
    }

    pub(super) fn open_secrets(&self, record: &PoolRecord) -> Result<SecretBundle, ServiceError> {
        let clear = self.deps.sealer.open(
            &record.secrets_sealed,
            &binding::pool_secrets(record.name.as_str()),
        )?;
        SecretBundle::from_json_bytes(&clear).ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!("a stored secret bundle is not readable"))
        })
    }
}

/// The warnings stored with a pool.
pub fn stored_warnings(record: &PoolRecord) -> Vec<Warning> {
    serde_json::from_str(&record.warnings).unwrap_or_default()
}

pub(super) fn stored_manifest(record: &PoolRecord) -> Result<ManifestInput, ServiceError> {
    serde_json::from_str(&record.manifest)
        .map(ManifestInput::Document)
        .map_err(|_| ServiceError::Internal(anyhow::anyhow!("a stored manifest is not JSON")))
}

pub(super) fn prefixed(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{path}")
    }
}

pub(super) fn parse_secrets(given: BTreeMap<String, String>) -> Result<SecretBundle, ServiceError> {
    let mut problems = Vec::new();
    for (key, value) in &given {
        if let Err(e) = SecretKey::parse(key) {
            problems.push(problem(&format!("secrets.{key}"), e.to_string()));
        } else if value.is_empty() {
            problems.push(problem(
                &format!("secrets.{key}"),
                "a secret value must not be empty",
            ));
        }
    }
    if problems.is_empty() {
        Ok(SecretBundle::from_map(given))
    } else {
        Err(ServiceError::Validation(problems))
    }
}

pub(super) fn check_secrets(
    manifest: &Manifest,
    bundle: &SecretBundle,
) -> Result<(), ServiceError> {
    let missing: Vec<String> = manifest
        .secret_keys()
        .iter()
        .filter(|key| !bundle.contains(key))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::MissingSecrets(missing))
    }
}
