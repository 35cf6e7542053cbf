//! The objects the benchmark and the reliability tests create: service accounts, access
//! tokens (from service accounts or from dashboard-made tokens in a Secret), the Secrets they
//! read, and unrelated Secrets.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use serde_json::json;

use crate::crd::{GebetaAccessToken, GebetaServiceAccount, common::Condition};

/// Label on every object the benchmark creates (value: the run id).
pub const BENCH_LABEL: &str = "gebeta.app/bench";
/// Keys of the dashboard-made tokens in an input Secret.
pub const CLIENT_TOKEN_KEY: &str = "client-token";
pub const SERVER_TOKEN_KEY: &str = "server-token";

fn labels(run: &str) -> serde_json::Value {
    json!({ BENCH_LABEL: run })
}

/// A `GebetaServiceAccount` (WEB, TILE + DIRECTION, deletion policy Delete).
pub fn service_account(name: &str, run: &str, description: &str) -> GebetaServiceAccount {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaServiceAccount",
        "metadata": {"name": name, "labels": labels(run)},
        "spec": {
            "platform": "WEB",
            "description": description,
            "scopes": ["TILE", "DIRECTION"],
        },
    }))
    .expect("a valid GebetaServiceAccount")
}

/// A `GebetaAccessToken` made from two `GebetaServiceAccount`s, written to `secret_name`.
pub fn access_token_from_accounts(
    name: &str,
    run: &str,
    client_account: &str,
    server_account: &str,
    secret_name: &str,
) -> GebetaAccessToken {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaAccessToken",
        "metadata": {"name": name, "labels": labels(run)},
        "spec": {
            "clientToken": {"serviceAccountRef": {"name": client_account}},
            "serverToken": {"serviceAccountRef": {"name": server_account}},
            "secretName": secret_name,
        },
    }))
    .expect("a valid GebetaAccessToken")
}

/// A `GebetaAccessToken` made from dashboard tokens in Secret `inputs`
/// ([`CLIENT_TOKEN_KEY`], [`SERVER_TOKEN_KEY`]), written to `secret_name`.
pub fn access_token_from_secret(
    name: &str,
    run: &str,
    inputs: &str,
    secret_name: &str,
) -> GebetaAccessToken {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaAccessToken",
        "metadata": {"name": name, "labels": labels(run)},
        "spec": {
            "clientToken": {"secretKeyRef": {"name": inputs, "key": CLIENT_TOKEN_KEY}},
            "serverToken": {"secretKeyRef": {"name": inputs, "key": SERVER_TOKEN_KEY}},
            "secretName": secret_name,
        },
    }))
    .expect("a valid GebetaAccessToken")
}

/// A Secret with string `data`.
pub fn secret(name: &str, run: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(BENCH_LABEL.into(), run.into())])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The input Secret of a dashboard-token `GebetaAccessToken`.
pub fn dashboard_tokens(name: &str, run: &str, client: &str, server: &str) -> Secret {
    secret(
        name,
        run,
        &[
            (CLIENT_TOKEN_KEY, client.as_bytes()),
            (SERVER_TOKEN_KEY, server.as_bytes()),
        ],
    )
}

/// A Secret nothing refers to, with `kib` KiB of pseudo-random (incompressible) data.
pub fn unrelated_secret(name: &str, run: &str, kib: usize, seed: u64) -> Secret {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(kib * 1024);
    while data.len() < kib * 1024 {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    data.truncate(kib * 1024);
    secret(name, run, &[("blob", &data)])
}

/// The `Ready` condition, if set.
pub fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// `Ready` is `True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    ready_condition(conditions).is_some_and(|c| c.status == "True")
}

/// The conditions of a `GebetaServiceAccount`.
pub fn account_conditions(gsa: &GebetaServiceAccount) -> &[Condition] {
    gsa.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

/// The conditions of a `GebetaAccessToken`.
pub fn token_conditions(gat: &GebetaAccessToken) -> &[Condition] {
    gat.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_make_valid_objects() {
        let gsa = service_account("a", "run", "desc");
        assert_eq!(gsa.spec.scopes.len(), 2);
        let gat = access_token_from_accounts("t", "run", "a", "b", "t-token");
        assert_eq!(
            gat.spec
                .client_token
                .service_account_ref
                .as_ref()
                .unwrap()
                .name,
            "a"
        );
        let gat = access_token_from_secret("t", "run", "in", "t-token");
        assert_eq!(
            gat.spec.server_token.secret_key_ref.as_ref().unwrap().key,
            SERVER_TOKEN_KEY
        );
        let blob = unrelated_secret("u", "run", 3, 7);
        let data = &blob.data.unwrap()["blob"].0;
        assert_eq!(data.len(), 3 * 1024);
        assert_ne!(data[..8], data[8..16]);
    }
}
