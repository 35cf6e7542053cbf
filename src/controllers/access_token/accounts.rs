//! What access tokens read of the `GebetaServiceAccount`s they name: whether one is Ready and
//! which Secret holds its token, kept flat (see [`super::flat_cache`]). A kube-runtime store
//! kept a whole (trimmed) object per account for this, ~1.2 KiB with its key's four strings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};

use super::flat_cache::{FlatCache, Kept, Key};
use crate::{controllers::conditions, crd::GebetaServiceAccount};

/// What is kept of one account.
pub struct AccountView {
    resource_version: Option<String>,
    ready: bool,
    /// Its token Secret when not named the default way, `<name>-token`.
    token_secret: Option<Box<str>>,
}

/// An account as an access token's input sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub ready: bool,
    pub token_secret: String,
}

/// The accounts of every watched namespace, by namespace and name.
pub type Accounts = FlatCache<AccountView>;

fn default_token_secret(account: &str) -> String {
    format!("{account}-token")
}

impl Kept for AccountView {
    type Object = GebetaServiceAccount;
    /// The index maps an account to its tokens by namespace and name only.
    type Touched = PartialObjectMeta<GebetaServiceAccount>;

    fn keep(gsa: GebetaServiceAccount) -> AccountView {
        let status = gsa.status.unwrap_or_default();
        let name = gsa.metadata.name.unwrap_or_default();
        let token_secret = status
            .token_secret_name
            .or(gsa.spec.token_secret_name)
            .filter(|s| *s != default_token_secret(&name))
            .map(String::into_boxed_str);
        AccountView {
            resource_version: gsa.metadata.resource_version,
            ready: conditions::is_true(&status.conditions, conditions::READY),
            token_secret,
        }
    }

    fn version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    fn touched_by(gsa: &GebetaServiceAccount) -> Self::Touched {
        ObjectMeta {
            name: gsa.metadata.name.clone(),
            namespace: gsa.metadata.namespace.clone(),
            ..ObjectMeta::default()
        }
        .into_response_partial()
    }

    fn touched(&self, (namespace, name): &Key) -> Self::Touched {
        ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        }
        .into_response_partial()
    }
}

impl Accounts {
    /// Account `namespace/name`, if it exists.
    pub fn source(&self, namespace: &str, name: &str) -> Option<Source> {
        self.read(namespace, name, |(_, name), view| Source {
            ready: view.ready,
            token_secret: view
                .token_secret
                .as_deref()
                .map_or_else(|| default_token_secret(name), str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use kube::{ResourceExt, runtime::watcher};

    use super::*;
    use crate::crd::{Condition, GebetaServiceAccountStatus};

    fn gsa(name: &str, version: &str, ready: bool, secret: Option<&str>) -> GebetaServiceAccount {
        let mut gsa: GebetaServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "gebeta.app/v1alpha1",
            "kind": "GebetaServiceAccount",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"platform": "WEB", "scopes": ["TILE"]},
        }))
        .expect("a GebetaServiceAccount");
        gsa.status = Some(GebetaServiceAccountStatus {
            token_secret_name: secret.map(String::from),
            conditions: vec![Condition {
                type_: conditions::READY.into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Condition::default()
            }],
            ..GebetaServiceAccountStatus::default()
        });
        gsa
    }

    #[tokio::test]
    async fn keeps_readiness_and_the_token_secret_and_wakes_by_name() {
        let accounts = Arc::new(Accounts::default());
        let readiness = crate::controllers::Readiness::default();
        let event = |e| Ok::<_, watcher::Error>(e);
        let events = futures::stream::iter([
            event(watcher::Event::Init),
            event(watcher::Event::InitApply(gsa(
                "a",
                "1",
                true,
                Some("a-token"),
            ))),
            event(watcher::Event::InitApply(gsa(
                "b",
                "1",
                false,
                Some("custom"),
            ))),
            event(watcher::Event::InitDone),
            event(watcher::Event::Apply(gsa("b", "2", true, Some("custom")))),
        ]);
        let touched: Vec<String> = accounts
            .clone()
            .reflect(None, events, vec![readiness.register()])
            .map(|t| t.unwrap().name_any())
            .collect()
            .await;
        assert_eq!(touched, ["a", "b", "b"]);
        assert!(readiness.is_ready());
        assert_eq!(
            accounts.source("ns", "a"),
            Some(Source {
                ready: true,
                token_secret: "a-token".into()
            })
        );
        assert_eq!(
            accounts.source("ns", "b"),
            Some(Source {
                ready: true,
                token_secret: "custom".into()
            })
        );
        assert_eq!(accounts.source("ns", "c"), None);
        assert_eq!(accounts.source("other", "a"), None);
        // A relist while b was deleted and a changed: both wake their tokens, after the
        // cache shows it.
        let events = futures::stream::iter([
            event(watcher::Event::Init),
            event(watcher::Event::InitApply(gsa("a", "3", false, None))),
            event(watcher::Event::InitDone),
        ]);
        let mut stream = std::pin::pin!(accounts.clone().reflect(None, events, vec![]));
        let mut touched = Vec::new();
        while let Some(t) = stream.next().await {
            assert!(
                accounts.source("ns", "b").is_none(),
                "woken before the cache shows it"
            );
            touched.push(t.unwrap().name_any());
        }
        assert_eq!(touched, ["b", "a"]);
        assert_eq!(
            accounts.source("ns", "a"),
            Some(Source {
                ready: false,
                token_secret: "a-token".into()
            })
        );
        assert_eq!(accounts.len(), 1);
    }
}
