//! Write-ceiling probes: how many writes per second this API server takes from the bench's
//! client, measured in the same run as the figures they are compared with.
//!
//! Two probes. [`secret_patches`] applies Secrets, the write the ratio is defined
//! against. [`token_writes`] makes the two writes a new token costs when its refresh token
//! did not rotate, in the operator's order: the token Secret, then the status of an object of
//! the GebetaAccessToken schema. A custom resource's status write costs this API server about
//! twice a Secret write (JSON storage, structural schema, CEL), so "ceiling ÷ writes per
//! token" from Secret patches alone is more than any operator could reach; the second probe
//! is the rate a perfect operator would get.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::Secret,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, Resource,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::run::{BenchError, for_each_bounded, wait_for};
use crate::crd::GebetaAccessToken;

/// How long a write-ceiling probe patches. Probes of 600 patches (1.5–2 s) read 314 and 413
/// patches/s minutes apart in one run, and in a 10,000-token burst the operator's write rate
/// alternated between two levels every ~5 s: a probe spans such swings.
const PROBE: Duration = Duration::from_secs(10);

/// The group of the probe's copy of the GebetaAccessToken CRD: same schema, not watched by
/// the operator.
const PROBE_GROUP: &str = "probe.gebeta.app";

/// The API server's write ceiling, probed in the same run.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct CeilingReport {
    /// Secret patches (server-side apply) per second from the bench's client at
    /// `--concurrency`, before the operator starts.
    pub secret_patches_per_second: f64,
    /// Patches the probe made (600 in reports made before probes ran for a fixed time).
    pub patches: u64,
    /// The same probe right before the refresh phase, with the operator running idle and
    /// every watch open, as during the refresh burst (absent from earlier reports). The
    /// ratio is taken against this one: the first probe, on an API server just started,
    /// varied between 138 and 663 patches/s from run to run on this machine.
    #[serde(default)]
    pub before_refresh: Option<f64>,
    /// Right after `before_refresh`: tokens per second whose own writes (a Secret apply,
    /// then a GebetaAccessToken status apply) the API server takes, [`token_writes`]
    /// (absent from earlier reports).
    #[serde(default)]
    pub token_writes_per_second: Option<f64>,
}

impl CeilingReport {
    /// The Secret probe the ratio is taken against.
    pub fn for_ratio(&self) -> f64 {
        self.before_refresh
            .unwrap_or(self.secret_patches_per_second)
    }
}

/// `tokens_per_second` against [`CeilingReport::token_writes_per_second`], scaled by
/// `writes_per_token` ÷ 2 (a probe step makes two writes; a rotated refresh token adds a
/// third), to two decimals.
pub fn against_token_writes(
    tokens_per_second: f64,
    writes_per_token: f64,
    ceiling: &CeilingReport,
) -> Option<f64> {
    let tokens = ceiling.token_writes_per_second.filter(|c| *c > 0.0)?;
    Some((tokens_per_second * writes_per_token / 2.0 / tokens * 100.0).round() / 100.0)
}

/// Runs `step` (numbered from `first`) for [`PROBE`] at `concurrency` in flight; returns the
/// steps done and their rate per second.
async fn probe_rate<F, Fut>(
    first: usize,
    concurrency: usize,
    step: F,
) -> Result<(u64, f64), BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let started = Instant::now();
    let mut done = 0u64;
    let mut steps = stream::iter(first..)
        .take_while(|_| std::future::ready(started.elapsed() < PROBE))
        .map(step)
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = steps.next().await {
        result?;
        done += 1;
    }
    Ok((done, done as f64 / started.elapsed().as_secs_f64()))
}

/// The probe's Secrets, each applied with a new value by patch `i` (`i % count`), so that
/// (nearly always) no other request in flight writes the same Secret, as the operator writes
/// each token's own Secret. (Earlier probes wrote 20 Secrets at 64–128 in flight: the
/// requests to one Secret conflicted and were retried in the API server, which understated
/// the ceiling.)
struct ProbeSecrets {
    api: Api<Secret>,
    count: usize,
}

impl ProbeSecrets {
    fn new(client: &Client, namespace: &str, concurrency: usize) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            count: 2 * concurrency.max(1),
        }
    }

    fn name(&self, i: usize) -> String {
        format!("write-probe-{}", i % self.count)
    }

    async fn apply(&self, i: usize) -> Result<(), BenchError> {
        let name = self.name(i);
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"token": format!("probe-value-{i}")},
        });
        self.api
            .patch(&name, &apply_params(), &Patch::Apply(secret))
            .await?;
        Ok(())
    }

    /// Creates each Secret first, so the measured requests are all updates.
    async fn create_all(&self, concurrency: usize) -> Result<(), BenchError> {
        for_each_bounded((0..self.count).collect(), concurrency, |i| self.apply(i)).await
    }

    /// Best effort: a probe Secret left behind changes nothing the bench measures.
    async fn delete_all(&self, concurrency: usize) {
        let _ = for_each_bounded((0..self.count).collect(), concurrency, |i| async move {
            self.api
                .delete(&self.name(i), &DeleteParams::default())
                .await?;
            Ok(())
        })
        .await;
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply("gebeta-bench").force()
}

/// Secret applies per second, [`ProbeSecrets`] in `namespace` at `concurrency` in flight.
pub async fn secret_patches(
    client: &Client,
    namespace: &str,
    concurrency: usize,
) -> Result<CeilingReport, BenchError> {
    let secrets = ProbeSecrets::new(client, namespace, concurrency);
    secrets.create_all(concurrency).await?;
    let (patches, rate) = probe_rate(secrets.count, concurrency, |i| secrets.apply(i)).await?;
    secrets.delete_all(concurrency).await;
    Ok(CeilingReport {
        secret_patches_per_second: round1(rate),
        patches,
        ..Default::default()
    })
}

/// Tokens per second whose own writes the API server takes: per step a Secret apply, then a
/// status apply (the fields the operator writes after a refresh, with new times) on an
/// object of the probe's copy of the GebetaAccessToken CRD, with `spec` (a token of the run,
/// so that the same CEL rules run). The copy is under [`PROBE_GROUP`] so the operator does
/// not watch its objects; it is deleted afterwards, with them.
pub async fn token_writes(
    client: &Client,
    namespace: &str,
    concurrency: usize,
    spec: Value,
) -> Result<f64, BenchError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = probe_crd();
    let crd_name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(&crd_name, &apply_params(), &Patch::Apply(&crd))
        .await?;
    let mut resource = ApiResource::erase::<GebetaAccessToken>(&());
    resource.group = PROBE_GROUP.into();
    resource.api_version = format!("{PROBE_GROUP}/{}", resource.version);
    let tokens: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    // Served once discovery has it: the first create may see a 404 for a moment.
    wait_for(
        "the probe's CRD to be served",
        Duration::from_secs(60),
        || async { tokens.list(&Default::default()).await.ok() },
    )
    .await?;

    let secrets = ProbeSecrets::new(client, namespace, concurrency);
    secrets.create_all(concurrency).await?;
    let (tokens, secrets) = (&tokens, &secrets);
    let object = |i: usize| {
        let mut spec = spec.clone();
        spec["secretName"] = secrets.name(i).into();
        json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {"name": secrets.name(i)},
            "spec": spec,
        })
    };
    for_each_bounded((0..secrets.count).collect(), concurrency, |i| {
        let obj = object(i);
        async move {
            let name = secrets.name(i);
            tokens
                .patch(&name, &apply_params(), &Patch::Apply(obj))
                .await?;
            Ok(())
        }
    })
    .await?;
    let step = |i: usize| {
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": probe_status(i),
        });
        async move {
            secrets.apply(i).await?;
            tokens
                .patch_status(&secrets.name(i), &apply_params(), &Patch::Apply(patch))
                .await?;
            Ok(())
        }
    };
    let (_, rate) = probe_rate(secrets.count, concurrency, step).await?;
    secrets.delete_all(concurrency).await;
    // Best effort, as for the Secrets: deleting the CRD deletes its objects.
    let _ = crds.delete(&crd_name, &DeleteParams::default()).await;
    Ok(round1(rate))
}

/// The GebetaAccessToken CRD under [`PROBE_GROUP`].
fn probe_crd() -> CustomResourceDefinition {
    let mut crd = GebetaAccessToken::crd();
    crd.spec.group = PROBE_GROUP.into();
    crd.metadata.name = Some(format!("{}.{PROBE_GROUP}", GebetaAccessToken::plural(&())));
    crd
}

/// What the operator's status write after refresh `i` holds: new times each step.
fn probe_status(i: usize) -> Value {
    let at = |offset: i64| {
        jiff::Timestamp::from_second(1_800_000_000 + i as i64 + offset)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    json!({
        "expiresAt": at(900),
        "issuedAt": at(0),
        "lastRefreshTime": at(0),
        "nextRefreshTime": at(600),
        "sourceAccountIds": ["probe-client-account", "probe-server-account"],
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "TokenIssued",
            "message": "the Secret holds a valid token",
            "lastTransitionTime": at(0),
            "observedGeneration": 1,
        }],
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_crd_is_the_token_schema_under_another_group() {
        let (original, probe) = (GebetaAccessToken::crd(), probe_crd());
        assert_eq!(
            probe.metadata.name.as_deref(),
            Some("gebetaaccesstokens.probe.gebeta.app")
        );
        assert_eq!(probe.spec.group, PROBE_GROUP);
        assert_ne!(original.spec.group, probe.spec.group);
        assert_eq!(original.spec.versions, probe.spec.versions);
        assert_eq!(original.spec.names, probe.spec.names);
    }

    #[test]
    fn a_rate_is_measured_against_the_tokens_whose_writes_the_server_takes() {
        let ceiling = |c| CeilingReport {
            token_writes_per_second: c,
            ..Default::default()
        };
        assert_eq!(
            against_token_writes(150.0, 2.0, &ceiling(Some(300.0))),
            Some(0.5)
        );
        // A third write (a rotated refresh token) costs more than the probe's step.
        assert_eq!(
            against_token_writes(150.0, 3.0, &ceiling(Some(300.0))),
            Some(0.75)
        );
        assert_eq!(against_token_writes(150.0, 2.0, &ceiling(None)), None);
        assert_eq!(against_token_writes(150.0, 2.0, &ceiling(Some(0.0))), None);
    }

    #[test]
    fn each_probe_status_is_a_new_write() {
        assert_ne!(probe_status(1), probe_status(2));
        assert_eq!(probe_status(1)["conditions"][0]["type"], "Ready");
    }
}
