//! The pool probe use case: probe a stored pool, or a manifest (and secrets) before saving it.

use super::pools::{ManifestInput, check_secrets, parse_secrets, stored_manifest};
use super::{Gateway, ServiceError};
use crate::domain::ids::PoolName;
use crate::scheduler::probe::Probe;
use std::collections::BTreeMap;

/// What to probe instead of the stored pool: a manifest, secrets, or both. What is not given
/// is the stored pool's.
#[derive(Debug, Clone, Default)]
pub struct ProbeInput {
    /// A manifest to try before registering it.
    pub manifest: Option<ManifestInput>,
    /// A secret bundle to try before saving it (the whole bundle, as `PUT` takes it).
    pub secrets: Option<BTreeMap<String, String>>,
}

impl Gateway {
    /// Probes a pool's scheduler without creating a job (see [`crate::scheduler::probe`]).
    /// Nothing is stored and no actor is told.
    ///
    /// # Errors
    /// [`ServiceError::PoolNotFound`] when something must come from a pool that is not stored;
    /// the validation errors `PUT /v1/pools/{name}` gives for an invalid manifest or secrets.
    pub async fn probe_pool(
        &self,
        name: &PoolName,
        input: ProbeInput,
    ) -> Result<Probe, ServiceError> {
        let stored = match (&input.manifest, &input.secrets) {
            (Some(_), Some(_)) => None,
            _ => self.deps.store.get_pool(name).await?,
        };
        let manifest_input = match (input.manifest, &stored) {
            (Some(given), _) => given,
            (None, Some(record)) => stored_manifest(record)?,
            (None, None) => return Err(ServiceError::PoolNotFound(name.to_string())),
        };
        let manifest = self.compile_manifest(&manifest_input)?;
        self.check_egress(name, &manifest).await?;
        let bundle = match (input.secrets, &stored) {
            (Some(given), _) => parse_secrets(given)?,
            (None, Some(record)) => self.open_secrets(record)?,
            (None, None) => crate::domain::secrets::SecretBundle::default(),
        };
        check_secrets(&manifest, &bundle)?;
        let runtime = self.runtime(name, manifest, bundle)?;
        let probe = self.deps.adapter.probe(&runtime).await;
        tracing::info!(
            pool = %name,
            ok = probe.ok(),
            reachable = probe.reachable,
            status = ?probe.http_status,
            "pool probed"
        );
        Ok(probe)
    }
}
